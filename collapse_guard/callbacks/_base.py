"""What the collapse_guard callbacks share: the datamodule check and the measurement-before-decision order."""
from __future__ import annotations

from collapse_guard._compat import Trainer


class CollapseMetricsProducer:
    """Marks a callback that logs ``collapse/`` metrics; decision callbacks are ordered after every one of them."""


def require_mixed_datamodule(trainer: Trainer, who: str):
    """Return the Trainer's ``MixedDataModule``.

    Raises:
        TypeError: if the fit was not given a :class:`~collapse_guard.MixedDataModule`.
    """
    from collapse_guard.data.datamodule import MixedDataModule

    dm = trainer.datamodule
    if not isinstance(dm, MixedDataModule):
        raise TypeError(
            f"{who} needs `trainer.fit(model, datamodule=MixedDataModule(real=..., synthetic=...))`; "
            f"the fit's datamodule is {type(dm).__name__ if dm is not None else 'None'}."
        )
    return dm


def run_after_producers(trainer: Trainer, callback: object) -> None:
    """Move ``callback`` behind every :class:`CollapseMetricsProducer` in ``trainer.callbacks``.

    Lightning calls callbacks in list order; a decision must read the metrics of the same check, whatever order
    the user listed the callbacks in.
    """
    callbacks = trainer.callbacks
    producers = [i for i, cb in enumerate(callbacks) if isinstance(cb, CollapseMetricsProducer)]
    me = next(i for i, cb in enumerate(callbacks) if cb is callback)
    if producers and me < max(producers):
        # a new list, not an in-place move: Lightning is iterating `trainer.callbacks` to call `setup` right now,
        # and moving an entry of that list would skip the `setup` of the callback after the guard
        callbacks = [cb for cb in callbacks if cb is not callback]
        last = max(i for i, cb in enumerate(callbacks) if isinstance(cb, CollapseMetricsProducer))
        callbacks.insert(last + 1, callback)
        trainer.callbacks = callbacks
