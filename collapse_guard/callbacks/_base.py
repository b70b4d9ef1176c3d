"""What the collapse_guard callbacks share: the datamodule check, the measurement-before-decision order, and
failing on every rank at once."""
from __future__ import annotations

from typing import Any, Optional

from collapse_guard._collective import run_collectively  # noqa: F401 (the callbacks' import of it)
from collapse_guard._compat import LightningModule, Trainer


class CollapseMetricsProducer:
    """A callback that logs ``collapse/`` metrics; decision callbacks run after every one of them.

    A producer declares the key prefixes it logs (:attr:`produces`) and logs through :meth:`log_metric`, which
    records the epoch of every key, so a decision callback judges only values measured at this epoch (a check
    that runs every few epochs leaves stale values in ``trainer.callback_metrics``). Every subclass that declares
    :attr:`produces` is registered (:func:`producer_of`), so a decision callback can name the callback that logs a
    key without importing it.
    """

    #: prefixes of the metric keys this producer logs
    produces: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "produces" in cls.__dict__ and cls.produces:
            _PRODUCERS[cls.__name__] = tuple(cls.produces)

    def log_metric(self, trainer: Trainer, pl_module: LightningModule, key: str, value: Any, **kwargs: Any) -> None:
        """``pl_module.log(key, value, **kwargs)``, remembering that ``key`` was measured at this epoch."""
        pl_module.log(key, value, **kwargs)
        self.__dict__.setdefault("_logged_epoch", {})[key] = trainer.current_epoch

    def logs(self, key: str) -> bool:
        """Whether this producer logs ``key``."""
        return key.startswith(self.produces)

    def ran_at(self, epoch: int) -> bool:
        """Whether this producer logged anything at ``epoch``."""
        return bool(self.keys_logged_at(epoch))

    def keys_logged_at(self, epoch: int, prefix: str = "") -> list[str]:
        """The keys (starting with ``prefix``) this producer last logged at ``epoch``, in first-logged order."""
        logged = self.__dict__.get("_logged_epoch", {})
        return [k for k, e in logged.items() if e == epoch and k.startswith(prefix)]

    def logged_epoch(self, key: str) -> Optional[int]:
        """The epoch ``key`` was last logged at by this producer (``None``: not yet)."""
        return self.__dict__.get("_logged_epoch", {}).get(key)

    def metric_keys(self, trainer: Trainer) -> Optional[set[str]]:
        """Every key this producer will log in this fit, known at set-up (after the datamodule's ``setup``).

        ``None`` (the default) when the producer cannot tell before its first check; a decision callback then
        checks its monitored keys at that check instead. Returning the set lets ``CollapseGuard`` reject a
        misnamed rule before training starts.
        """
        return None

    def default_rules(self, trainer: Trainer) -> Optional[list]:
        """The rules a ``CollapseGuard`` without ``rules`` judges this producer's metrics by (``None``: it has none;
        ``HeldOutRealCheck``: those of its task)."""
        return None

    def attribution_rules(self, trainer: Trainer) -> Optional[list]:
        """The family rules over synthetic sources (action ``None``) that a ``CollapseGuard`` without ``rules``
        adds to the task's, to name a harmful source (``SourceAudit``, ``SourceCheck``); ``None``: none."""
        return None


#: the progress-bar names of the keys shown there: short, so a progress bar does not cut them (``collapse/real_fr…``)
PROGRESS_BAR_NAMES = {
    "collapse/real_fraction": "real_frac",
    "collapse/heldout_real/acc": "heldout_acc",
    "collapse/heldout_real/perplexity": "heldout_ppl",
    "collapse/heldout_real/mse": "heldout_mse",
    "collapse/heldout_real/loss": "heldout_loss",
}


def show_in_progress_bar(pl_module: LightningModule, key: str, value: Any) -> None:
    """Show ``key``'s value in the progress bar under its short name (:data:`PROGRESS_BAR_NAMES`), not in the loggers
    (they get the full key)."""
    pl_module.log(PROGRESS_BAR_NAMES.get(key, key), value, prog_bar=True, logger=False)


def producers_default_rules(trainer: Trainer) -> Optional[list]:
    """The default rules of the first :class:`CollapseMetricsProducer` among ``trainer.callbacks`` that has any."""
    for cb in trainer.callbacks:
        rules = cb.default_rules(trainer) if isinstance(cb, CollapseMetricsProducer) else None
        if rules is not None:
            return rules
    return None


def producers_attribution_rules(trainer: Trainer) -> list:
    """The attribution rules of every :class:`CollapseMetricsProducer` among ``trainer.callbacks``, in their order."""
    return [rule for cb in trainer.callbacks if isinstance(cb, CollapseMetricsProducer)
            for rule in (cb.attribution_rules(trainer) or [])]


class CollapseMetricsReader:
    """A callback that decides on logged metrics (``CollapseGuard``): it tells which keys it reads
    (:attr:`monitors`), so a producer can check at set-up what those keys need (:func:`monitored_keys`)."""

    @property
    def monitors(self) -> tuple[str, ...]:
        """The metric keys this callback reads."""
        return ()


def monitored_keys(trainer: Trainer) -> set[str]:
    """Every key that a :class:`CollapseMetricsReader` among ``trainer.callbacks`` reads."""
    return {key for cb in trainer.callbacks if isinstance(cb, CollapseMetricsReader) for key in cb.monitors}


#: class name -> key prefixes, of every :class:`CollapseMetricsProducer` subclass that declares them
_PRODUCERS: dict[str, tuple[str, ...]] = {}


def producer_of(key: str) -> Optional[str]:
    """The name of the :class:`CollapseMetricsProducer` class that logs ``key`` (``None``: none declares it).

    Example::

        producer_of("collapse/heldout_real/acc")   # 'HeldOutRealCheck'
    """
    return next((name for name, prefixes in _PRODUCERS.items() if key.startswith(prefixes)), None)


def require_mixed_datamodule(trainer: Trainer, who: str):
    """Return the Trainer's ``MixedDataModule``.

    Raises:
        TypeError: if the fit was not given a :class:`~collapse_guard.MixedDataModule`.
    """
    from collapse_guard.data.datamodule import MixedDataModuleMixin  # either namespace's MixedDataModule

    dm = trainer.datamodule
    if not isinstance(dm, MixedDataModuleMixin):
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


