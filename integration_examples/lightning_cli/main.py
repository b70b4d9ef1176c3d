"""collapse_guard from a LightningCLI config: nothing in the user's code changes.

    cd integration_examples/lightning_cli
    python main.py fit --config config.yaml
    python main.py fit --config config.yaml --trainer.max_epochs=3          # any value can be overridden
    python main.py fit --config config.yaml --print_config                 # the full, resolved configuration

The config wraps the user's DataModule (``models.DigitsDataModule``) in ``collapse_guard.MixedDataModule`` with two
synthetic sources, and adds collapse_guard's callbacks to the Trainer, rules included.
"""
from __future__ import annotations

import os
import sys

from pytorch_lightning.cli import LightningCLI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `models` by class path, from any directory


def cli_main(args=None, run: bool = True) -> LightningCLI:
    """Run the CLI (``args``: a list of arguments instead of ``sys.argv``, as in tests)."""
    return LightningCLI(args=args, run=run, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    cli_main()
