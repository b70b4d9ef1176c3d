"""``SourceAudit``: each synthetic source against the real training data, before the first training step."""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch import Tensor

from collapse_guard._compat import Callback, LightningModule, Trainer, rank_zero_warn
from collapse_guard._numbers import check_count, check_real
from collapse_guard.callbacks._base import CollapseMetricsProducer, require_mixed_datamodule, run_collectively
from collapse_guard.callbacks._model_io import default_batch_fn
from collapse_guard.callbacks.rules import Rule
from collapse_guard.data.audit import audit_metrics, audit_sources

#: a source covering less than this share of the best source's coverage is named by the default attribution;
#: chosen on the development part of the multi-source benchmark (benchmarks/RESULTS.md, section 9)
COVERAGE_VS_BEST = 0.9


class SourceAudit(Callback, CollapseMetricsProducer):
    """Audit every synthetic source of the fit's ``MixedDataModule`` at set-up, warn about what it finds, and log it.

    Per map-style synthetic source, against the real training data (:func:`~collapse_guard.data.audit.audit_sources`):
    the classes it lacks and the total variation of its class marginal (a classifier's integer targets), k-NN
    precision / recall / density / coverage in input space (Kynkäänniemi et al. 2019; Naeem et al. 2020) beside
    the real-vs-real baseline, and its exact copies of held-out real samples. The audit is kept in
    :attr:`report`, added to the datamodule's provenance (``provenance()["audit"]``, so the run report has it), and
    logged once, at the end of the first training epoch, under ``collapse/audit/<name>/<source>`` and
    ``collapse/audit/<name>/real``: a ``CollapseGuard`` rule can read it at its first check, e.g.
    ``Rule("collapse/audit/missing_classes/*", mode="min", threshold=0.5, action="stop")`` (a family rule: each
    source judged, the event naming it).

    Args:
        batch_fn: ``batch -> (inputs, target)`` of a collated batch; default: ``(x, y)`` tuples and dicts with
            usual key names (as ``HeldOutRealCheck``).
        max_samples: samples read per source and of the real data, an integer ``>= 12``.
        k: the neighbour rank of the k-NN measures, an integer ``>= 1``.
        missing_share: a class at less than this fraction of its real share counts as missing, in ``[0, 1]``.
        seed: the seed of the samples read (no global random state moves).

    Raises:
        ValueError: for numbers out of range or of the wrong kind.
        TypeError: at set-up, without a ``MixedDataModule``.

    Example::

        trainer = pl.Trainer(callbacks=[SourceAudit(), HeldOutRealCheck(), CollapseGuard()])
        trainer.fit(model, datamodule=MixedDataModule(real_dm, {"gen10": ds10, "gen20": ds20}))
        audit = trainer.callbacks[0].report["sources"]   # {"gen10": {"missing_classes": [], ...}, ...}
    """

    produces = ("collapse/audit/",)

    def __init__(self, batch_fn: Optional[Callable[[Any], tuple[Any, Tensor]]] = None, max_samples: int = 1000,
                 k: int = 5, missing_share: float = 0.1, seed: int = 0) -> None:
        self.batch_fn = batch_fn or default_batch_fn
        self.max_samples = check_count(max_samples, "max_samples", minimum=12, optional=False)
        self.k = check_count(k, "k", minimum=1, optional=False)
        if not 0.0 <= check_real(missing_share, "missing_share") <= 1.0:
            raise ValueError(f"`missing_share` must be in [0, 1], got {missing_share!r}.")
        self.missing_share = missing_share
        self.seed = check_count(seed, "seed", minimum=0, optional=False)
        #: the audit (:func:`~collapse_guard.data.audit.audit_sources`'s result), after set-up
        self.report: Optional[dict] = None
        self._logged = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = require_mixed_datamodule(trainer, "SourceAudit")
        self.report = run_collectively(trainer, "SourceAudit", lambda: audit_sources(
            dm, self.batch_fn, self.max_samples, self.k, self.missing_share, self.seed))
        dm.audit = self.report
        self._logged = False
        for name, entry in self.report["sources"].items():
            if entry["missing_classes"]:
                rank_zero_warn(
                    f"SourceAudit: synthetic source {name!r} lacks classes {entry['missing_classes']} of the real "
                    f"training data (each below {self.missing_share:.0%} of its real share, in {entry['samples']} "
                    "samples read). A model trained on it loses those classes as the source's share grows: fix or "
                    "drop the source, or keep its share small."
                )

    def attribution_rules(self, trainer: Trainer) -> Optional[list[Rule]]:
        """With two or more synthetic sources audited: a source lacking a class of the real data
        (``collapse/audit/missing_classes/*`` above 0.5) or covering less than 0.9 of the best source's coverage
        (``collapse/audit/coverage_vs_best/*``), judged once, at the first check; ``CollapseGuard()`` adds them to
        its default rules (action ``"quarantine"`` when the guard's action is ``"inject"``); each only when the
        audit measured it for some source."""
        if self.report is None or len(self.report["sources"]) < 2:
            return None
        measured = {key for entry in self.report["sources"].values() for key, v in entry.items() if v is not None}
        # by the audit entry each rule reads (its key's name in ``collapse/audit/<name>/<source>``)
        rules = {"missing_classes": Rule("collapse/audit/missing_classes/*", mode="min", threshold=0.5,
                                         name="missing classes"),
                 "coverage_vs_best": Rule("collapse/audit/coverage_vs_best/*", mode="max", threshold=COVERAGE_VS_BEST,
                                          name="coverage vs the best source")}
        # a rule only over what the audit could measure (no class target: no missing classes; inputs that are not
        # comparable vectors, or no source covering anything: no coverage ratio)
        return [rule for entry, rule in rules.items() if entry in measured] or None

    def metric_keys(self, trainer: Trainer) -> Optional[set[str]]:
        if self.report is None:
            return None
        keys = set(audit_metrics(self.report))
        return keys | {key.rsplit("/", 1)[0] + "/*" for key in keys}  # families, for a rule judging every source

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._logged or self.report is None or trainer.sanity_checking:
            return
        for key, value in audit_metrics(self.report).items():
            self.log_metric(trainer, pl_module, key, value, sync_dist=False)
        self._logged = True


__all__ = ["SourceAudit"]
