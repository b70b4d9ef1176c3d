"""The quiet ``Trainer`` options the package's own fits (demo, generation loops) and its tests and benchmarks share."""
from __future__ import annotations

from typing import Any


def quiet_trainer_kwargs(**overrides: Any) -> dict:
    """``Trainer`` keyword arguments for a fit that only trains: no logger, checkpoints, progress bar, model summary or
    validation; ``overrides`` (e.g. ``max_epochs``, ``accelerator``, ``callbacks``) added or replacing.

    Example::

        trainer = pl.Trainer(**quiet_trainer_kwargs(max_epochs=3, accelerator="cpu", devices=1))
    """
    return {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        **overrides,
    }
