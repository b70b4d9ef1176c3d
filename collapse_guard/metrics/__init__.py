"""Collapse indicators: torchmetrics ``Metric`` classes, with pure functions in :mod:`.functional`.

* feature space, generated vs held-out real: :class:`PrecisionRecallDensityCoverage`, :class:`FrechetDistance`,
  :class:`MaximumMeanDiscrepancy`, :class:`VarianceRatio`, :class:`TailMassRatio`;
* diversity of one set of features: :class:`VendiScore`, :class:`EffectiveRank`;
* text: :class:`DistinctN`, :class:`TypeTokenRatio`, :class:`UnigramEntropy`, :class:`VocabularyCoverage`;
* held-out indicators of a model: :class:`ClassificationIndicators` (classifiers), :class:`LanguageModelIndicators`
  (causal and masked language models), :class:`RegressionIndicators` (regressors), :class:`LossIndicators` (any
  model's per-sample loss).
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
from collapse_guard.metrics.language_model import LanguageModelIndicators
from collapse_guard.metrics.loss import LossIndicators
from collapse_guard.metrics.regression import RegressionIndicators
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
    "LanguageModelIndicators",
    "LossIndicators",
    "RegressionIndicators",
]

try:  # owned elsewhere; may not exist yet
    from collapse_guard.metrics.classification import ClassificationIndicators  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    __all__.append("ClassificationIndicators")
