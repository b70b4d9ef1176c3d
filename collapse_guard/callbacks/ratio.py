"""``RatioMonitor``: log the real fraction actually trained on."""
from __future__ import annotations

from typing import Optional

import torch

from collapse_guard._compat import Callback, LightningModule, Trainer, rank_zero_warn
from collapse_guard.callbacks._base import CollapseMetricsProducer, require_mixed_datamodule, show_in_progress_bar
from collapse_guard._numbers import check_fraction


class RatioMonitor(CollapseMetricsProducer, Callback):
    r"""Logs the real fraction the model actually trained on: this epoch, cumulative, and per source.

    Counts come from the :class:`~collapse_guard.MixedDataModule`: the epoch's are what every rank received,
    summed over ranks with ``strategy.reduce``; the cumulative ones are the datamodule's running totals of all
    ranks (checkpointed, so a resumed fit continues them). Logged at the end of every training epoch, the same
    values on every rank:

    * ``collapse/real_fraction``: real share of this epoch's training samples, in ``[0, 1]`` (progress bar);
    * ``collapse/real_fraction_cumulative``: real share of all training samples so far;
    * ``collapse/real_fraction_target``: the target of this epoch (the schedule, raised by injections);
    * ``collapse/share/<source>``: each source's share of this epoch's samples (``real``, ``reserve``, and
      every synthetic source by name).

    The real fraction alone does not mean collapse: accumulating synthetic data next to all the real data drives
    it towards 0 without collapse (Gerstgrasser et al. 2024). Guard on held-out real indicators; this is context.

    Args:
        min_real_fraction: warn when an epoch's real fraction falls below this, in ``[0, 1]`` (``None``: never).
        per_source: also log each source's share.
        prog_bar: show ``collapse/real_fraction`` in the progress bar, as ``real_frac``.

    Raises:
        ValueError: if ``min_real_fraction`` is outside ``[0, 1]``.
        TypeError: at set-up, when the Trainer's datamodule is not a ``MixedDataModule``.

    Example::

        trainer = pl.Trainer(callbacks=[RatioMonitor(min_real_fraction=0.1)])
    """

    produces = ("collapse/real_fraction", "collapse/share/")

    def __init__(self, min_real_fraction: Optional[float] = None, per_source: bool = True, prog_bar: bool = True):
        if min_real_fraction is not None:
            check_fraction(min_real_fraction, "min_real_fraction")
        self.min_real_fraction = min_real_fraction
        self.per_source = per_source
        self.prog_bar = prog_bar
        self.history: list[dict] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            require_mixed_datamodule(trainer, type(self).__name__)

    def metric_keys(self, trainer: Trainer) -> Optional[set[str]]:
        keys = {"collapse/real_fraction", "collapse/real_fraction_cumulative", "collapse/real_fraction_target"}
        if self.per_source:
            keys |= {f"collapse/share/{name}" for name in getattr(trainer.datamodule, "source_names", [])}
        return keys

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = trainer.datamodule
        names, real = dm.source_names, dm.real_source_names
        local = dm.samples_by_source("rank_epoch")
        local = torch.tensor([local[n] for n in names], dtype=torch.long, device=pl_module.device)  # reduced in place
        epoch = trainer.strategy.reduce(local, reduce_op="sum").cpu().double()
        fit = dm.samples_by_source()
        total = torch.tensor([fit[n] for n in names], dtype=torch.double)
        if epoch.sum() == 0:
            return
        planned = dm.samples_by_source("epoch")
        planned = [planned[n] for n in names]
        if epoch.long().tolist() != planned:
            rank_zero_warn(
                f"epoch {trainer.current_epoch}: the ranks received {epoch.long().tolist()} samples per source but "
                f"the plan of the batches they stepped through holds {planned}: ranks skipped "
                "different numbers of batches, so the cumulative real fraction is approximate."
            )
        is_real = torch.tensor([n in real for n in names])
        record = {
            "epoch": trainer.current_epoch,
            "real_fraction": float(epoch[is_real].sum() / epoch.sum()),
            "real_fraction_cumulative": float(total[is_real].sum() / total.sum()),
            "real_fraction_target": dm.current_real_fraction(trainer.current_epoch),
            "samples": dict(zip(names, epoch.long().tolist())),
        }
        self.history.append(record)
        for key in ("real_fraction", "real_fraction_cumulative", "real_fraction_target"):
            self.log_metric(trainer, pl_module, f"collapse/{key}", record[key])
        if self.prog_bar:
            show_in_progress_bar(pl_module, "collapse/real_fraction", record["real_fraction"])
        if self.per_source:
            for name, n in zip(names, epoch.tolist()):
                self.log_metric(trainer, pl_module, f"collapse/share/{name}", n / float(epoch.sum()))
        if self.min_real_fraction is not None and record["real_fraction"] < self.min_real_fraction:
            rank_zero_warn(
                f"epoch {trainer.current_epoch}: real fraction {record['real_fraction']:.3f} is below "
                f"min_real_fraction={self.min_real_fraction}. Judge collapse by held-out real indicators "
                "(HeldOutRealCheck); this is a warning, not a decision."
            )

    def summary(self) -> dict:
        """The real-fraction record of this fit, for reports: ``{"sources": [...], "history": [...]}``.

        ``history`` has one row per training epoch: ``epoch``, ``real_fraction``, ``real_fraction_cumulative``,
        ``real_fraction_target`` (each in ``[0, 1]``), ``samples`` per source (all ranks) and ``shares`` per source
        (``samples / all samples of the epoch``; ``None`` for an epoch with none). ``sources`` lists every source
        name in the order first seen.

        Example::

            trainer.fit(model, datamodule=dm)
            ratio.summary()["history"][-1]["shares"]["gen1"]   # gen1's share of the last epoch's samples
        """
        history, sources = [], []
        for row in self.history:
            samples = dict(row.get("samples", {}))
            total = sum(samples.values())
            sources += [s for s in samples if s not in sources]
            history.append({**row, "shares": {s: (n / total if total else None) for s, n in samples.items()}})
        return {"sources": sources, "history": history}

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = list(state_dict.get("history", []))
