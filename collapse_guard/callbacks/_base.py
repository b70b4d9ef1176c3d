"""What the collapse_guard callbacks share: the datamodule check and the measurement-before-decision order."""
from __future__ import annotations

from typing import Any, Optional

from collapse_guard._compat import LightningModule, Trainer


class CollapseMetricsProducer:
    """A callback that logs ``collapse/`` metrics; decision callbacks run after every one of them.

    A producer declares the key prefixes it logs (:attr:`produces`) and logs through :meth:`log_metric`, which
    records the epoch of every key, so a decision callback judges only values measured at this epoch (a check
    that runs every few epochs leaves stale values in ``trainer.callback_metrics``).
    """

    #: prefixes of the metric keys this producer logs
    produces: tuple[str, ...] = ()

    def log_metric(self, trainer: Trainer, pl_module: LightningModule, key: str, value: Any, **kwargs: Any) -> None:
        """``pl_module.log(key, value, **kwargs)``, remembering that ``key`` was measured at this epoch."""
        pl_module.log(key, value, **kwargs)
        self.__dict__.setdefault("_logged_epoch", {})[key] = trainer.current_epoch

    def logs(self, key: str) -> bool:
        """Whether this producer logs ``key``."""
        return key.startswith(self.produces)

    def ran_at(self, epoch: int) -> bool:
        """Whether this producer logged anything at ``epoch``."""
        return epoch in self.__dict__.get("_logged_epoch", {}).values()

    def logged_epoch(self, key: str) -> Optional[int]:
        """The epoch ``key`` was last logged at by this producer (``None``: not yet)."""
        return self.__dict__.get("_logged_epoch", {}).get(key)


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
