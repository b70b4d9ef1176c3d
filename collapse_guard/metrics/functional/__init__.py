"""Collapse indicators as pure functions on tensors (torchmetrics' functional style).

Sample-based indicators compare a synthetic set (``synthetic``, shape ``(M, D)``: a synthetic source's or a
generative model's samples, the papers' "fake") with held-out real features (``real``, shape ``(N, D)``);
diversity and text indicators read one set. Scalars are returned as 0-dim float64 tensors (dicts of them for
:func:`prdc`); see each function for its range and the paper it comes from.
"""
from collapse_guard.metrics.functional import baseline, distance, knn
from collapse_guard.metrics.functional.baseline import RealBaseline, real_baseline
from collapse_guard.metrics.functional.classification import (
    binomial_standard_error,
    confusion_counts,
    effective_number_of_classes,
    marginal_kl_divergence,
    marginal_total_variation,
    per_class_recall,
    predictive_entropy,
    worst_class_recall,
    worst_class_recall_standard_error,
)
from collapse_guard.metrics.functional.distance import (
    frechet_distance,
    frechet_distance_from_statistics,
    gaussian_statistics,
    maximum_mean_discrepancy,
    median_heuristic_bandwidth,
    real_quantile_range,
    tail_mass,
    tail_mass_ratio,
    total_variance,
    variance_ratio,
)
from collapse_guard.metrics.functional.diversity import (
    effective_rank,
    effective_rank_from_singular_values,
    vendi_score,
    vendi_score_from_eigenvalues,
)
from collapse_guard.metrics.functional.language_model import perplexity, sequence_token_statistics
from collapse_guard.metrics.functional.paired import paired_counts, paired_difference
from collapse_guard.metrics.functional.per_sample import mean_standard_error, ratio_standard_error
from collapse_guard.metrics.functional.regression import prediction_variance_ratio, r2_score, residual_tail_mass
from collapse_guard.metrics.functional.knn import coverage, density, knn_precision, knn_radii, knn_recall, prdc
from collapse_guard.metrics.functional.text import (
    distinct_n,
    type_token_ratio,
    unigram_entropy,
    vocabulary_coverage,
)

__all__ = [
    # classification
    "binomial_standard_error",
    "confusion_counts",
    "effective_number_of_classes",
    "marginal_kl_divergence",
    "marginal_total_variation",
    "per_class_recall",
    "predictive_entropy",
    "worst_class_recall",
    "worst_class_recall_standard_error",
    *knn.__all__,  # k-NN manifold
    *distance.__all__,  # distances
    # diversity
    "vendi_score",
    "vendi_score_from_eigenvalues",
    "effective_rank",
    "effective_rank_from_singular_values",
    # text
    "distinct_n",
    "type_token_ratio",
    "unigram_entropy",
    "vocabulary_coverage",
    *baseline.__all__,
    # language models, regression, any per-sample loss
    "perplexity",
    "sequence_token_statistics",
    "prediction_variance_ratio",
    "r2_score",
    "residual_tail_mass",
    "mean_standard_error",
    "ratio_standard_error",
    # the same held-out samples at two checks
    "paired_counts",
    "paired_difference",
]
