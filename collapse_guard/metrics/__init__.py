"""Collapse indicators: torchmetrics ``Metric`` classes, with pure functions in :mod:`.functional`.

* feature space, generated vs held-out real: :class:`PrecisionRecallDensityCoverage`, :class:`FrechetDistance`,
  :class:`MaximumMeanDiscrepancy`, :class:`VarianceRatio`, :class:`TailMassRatio`;
* diversity of one set of features: :class:`VendiScore`, :class:`EffectiveRank`;
* text: :class:`DistinctN`, :class:`TypeTokenRatio`, :class:`UnigramEntropy`, :class:`VocabularyCoverage`;
* classifiers: :class:`ClassificationIndicators` (when available).
"""
from collapse_guard.metrics import functional
from collapse_guard.metrics.diversity import EffectiveRank, VendiScore
from collapse_guard.metrics.feature import (
    FrechetDistance,
    MaximumMeanDiscrepancy,
    PrecisionRecallDensityCoverage,
    TailMassRatio,
    VarianceRatio,
)
from collapse_guard.metrics.text import DistinctN, TypeTokenRatio, UnigramEntropy, VocabularyCoverage

__all__ = [
    "functional",
    "PrecisionRecallDensityCoverage",
    "FrechetDistance",
    "MaximumMeanDiscrepancy",
    "VarianceRatio",
    "TailMassRatio",
    "VendiScore",
    "EffectiveRank",
    "DistinctN",
    "TypeTokenRatio",
    "UnigramEntropy",
    "VocabularyCoverage",
]

try:  # owned elsewhere; may not exist yet
    from collapse_guard.metrics.classification import ClassificationIndicators  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    __all__.append("ClassificationIndicators")
