"""torchmetrics ``Metric`` classes over the feature-space indicators (synthetic vs held-out real features).

Every class takes features with ``update(features, real)``: ``features`` of shape ``(B, D)`` and ``real=True``
for held-out real samples, ``False`` for synthetic ones (a synthetic source's or a generative model's samples;
torchmetrics' ``FrechetInceptionDistance`` calls them "fake").
Sample-based metrics keep the features in list states (``dist_reduce_fx="cat"``); Fréchet distance and the
variance ratio keep only sufficient statistics (``dist_reduce_fx="sum"``), so their memory is ``O(D^2)``.
``compute()`` calls the matching function of :mod:`collapse_guard.metrics.functional`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from collapse_guard.metrics._base import FeatureSumsMetric, check_batch
from collapse_guard.metrics._deprecation import deprecated_alias
from collapse_guard.metrics.functional.distance import (
    frechet_distance_from_statistics,
    maximum_mean_discrepancy,
    tail_mass_ratio,
)
from collapse_guard.metrics.functional.knn import prdc

__all__ = [
    "PrecisionRecallDensityCoverage",
    "FrechetDistance",
    "MaximumMeanDiscrepancy",
    "VarianceRatio",
    "TailMassRatio",
]


class _RealSyntheticSamples(Metric):
    """Base: keeps real and synthetic features in ``cat`` list states."""

    is_differentiable = False
    full_state_update = False
    _allow_1d = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("synthetic_features", default=[], dist_reduce_fx="cat")

    fake_features = deprecated_alias("synthetic_features", "fake_features")

    def update(self, features: Tensor, real: bool) -> None:
        """Add a batch of features, shape ``(B, D)``, to the real (``real=True``) or synthetic set."""
        features = check_batch(features, None, self._allow_1d)
        (self.real_features if real else self.synthetic_features).append(features)

    def _samples(self) -> tuple[Tensor, Tensor]:
        if (isinstance(self.real_features, list) and not self.real_features) or (
            isinstance(self.synthetic_features, list) and not self.synthetic_features
        ):
            raise ValueError(f"{type(self).__name__} needs both real and synthetic features before compute().")
        return dim_zero_cat(self.real_features), dim_zero_cat(self.synthetic_features)


class PrecisionRecallDensityCoverage(_RealSyntheticSamples):
    """k-NN precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

    ``compute()`` returns ``{"precision", "recall", "density", "coverage"}`` as 0-dim float64 tensors, see
    :func:`~collapse_guard.metrics.functional.prdc`. Memory: the stored features plus ``O(chunk_size * N)``.

    Args:
        k: neighbour rank of the k-NN balls (MAD used 5).
        chunk_size: rows per distance block (``None``: automatic, about 2**23 entries).
        kwargs: torchmetrics ``Metric`` keyword arguments.

    Raises:
        ValueError: in ``update`` for a batch not of shape ``(B, D)``; in ``compute`` when a set is empty, the
            feature dims differ, or ``k`` is not below both set sizes.

    Example::

        m = PrecisionRecallDensityCoverage(k=5)
        m.update(real_feats, real=True)
        m.update(synthetic_feats, real=False)
        m.compute()["recall"]
    """

    higher_is_better = True

    def __init__(self, k: int = 5, chunk_size: Optional[int] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be a positive integer, got {k!r}.")
        self.k = k
        self.chunk_size = chunk_size

    def compute(self) -> dict[str, Tensor]:
        real, synthetic = self._samples()
        return prdc(real, synthetic, k=self.k, chunk_size=self.chunk_size)


class MaximumMeanDiscrepancy(_RealSyntheticSamples):
    """Unbiased MMD² with an RBF kernel and the median-heuristic bandwidth (Gretton et al. 2012).

    ``compute()`` returns a 0-dim float64 tensor, see
    :func:`~collapse_guard.metrics.functional.maximum_mean_discrepancy`.

    Args:
        bandwidth: kernel width ``sigma``; ``None``: median heuristic on the pooled samples.
        chunk_size: rows per kernel block.
        max_samples_bandwidth: pooled rows used by the median heuristic (seeded subsample).
        kwargs: torchmetrics ``Metric`` keyword arguments.
    """

    higher_is_better = False
    _allow_1d = True

    def __init__(
        self,
        bandwidth: Optional[float] = None,
        chunk_size: Optional[int] = None,
        max_samples_bandwidth: int = 2000,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError(f"`bandwidth` must be > 0 or None, got {bandwidth}.")
        self.bandwidth = bandwidth
        self.chunk_size = chunk_size
        self.max_samples_bandwidth = max_samples_bandwidth

    def compute(self) -> Tensor:
        real, synthetic = self._samples()
        return maximum_mean_discrepancy(
            real,
            synthetic,
            bandwidth=self.bandwidth,
            chunk_size=self.chunk_size,
            max_samples_bandwidth=self.max_samples_bandwidth,
        )


class TailMassRatio(_RealSyntheticSamples):
    """Share of synthetic values in the real per-dimension ``[q, 1 - q]`` tails, over the real share.

    ``compute()`` returns a 0-dim float64 tensor (1: real-like tails, towards 0: tails lost), see
    :func:`~collapse_guard.metrics.functional.tail_mass_ratio`. Accepts ``(B,)`` batches of a 1-D statistic.

    Args:
        q: tail probability per side, ``0 < q < 0.5``.
        kwargs: torchmetrics ``Metric`` keyword arguments.
    """

    higher_is_better = True
    _allow_1d = True

    def __init__(self, q: float = 0.025, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 < q < 0.5:
            raise ValueError(f"`q` must lie in (0, 0.5), got {q}.")
        self.q = q

    def compute(self) -> Tensor:
        real, synthetic = self._samples()
        return tail_mass_ratio(real, synthetic, q=self.q)


class _RealSyntheticMoments(FeatureSumsMetric):
    """Base: sums of features and of their outer products (or squares) per set, ``dist_reduce_fx="sum"``."""

    _outer = True

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        d = num_features
        for side in ("real", "synthetic"):
            self.add_sum_state(f"{side}_sum", (d,))
            self.add_sum_state(f"{side}_second", (d, d) if self._outer else ())
            self.add_count_state(f"{side}_n")

    fake_sum = deprecated_alias("synthetic_sum", "fake_sum")
    fake_second = deprecated_alias("synthetic_second", "fake_second")
    fake_n = deprecated_alias("synthetic_n", "fake_n")

    def update(self, features: Tensor, real: bool) -> None:
        """Add a batch of features, shape ``(B, num_features)``, to the real or synthetic statistics."""
        x = self.checked_batch(features)
        side = "real" if real else "synthetic"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + x.sum(dim=0))
        second = x.t() @ x if self._outer else (x * x).sum()
        setattr(self, f"{side}_second", getattr(self, f"{side}_second") + second)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + x.shape[0])

    def _check_counts(self) -> None:
        for side in ("real", "synthetic"):
            if int(getattr(self, f"{side}_n")) < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 {side} samples before compute().")

    def _mean_cov(self, side: str) -> tuple[Tensor, Tensor]:
        n = getattr(self, f"{side}_n").double()
        mu = getattr(self, f"{side}_sum") / n
        cov = (getattr(self, f"{side}_second") - n * torch.outer(mu, mu)) / (n - 1)
        return mu, cov


class FrechetDistance(_RealSyntheticMoments):
    """Fréchet distance between Gaussian fits of real and synthetic features (FID on any feature space).

    States are the per-set feature sums, outer-product sums and counts (float64, ``dist_reduce_fx="sum"``):
    memory is ``O(D^2)`` whatever the number of samples and the result is exact across DDP ranks. ``compute()``
    returns a 0-dim float64 tensor, see :func:`~collapse_guard.metrics.functional.frechet_distance`.

    Args:
        num_features: feature dimension ``D``.
        kwargs: torchmetrics ``Metric`` keyword arguments.

    Raises:
        ValueError: in ``update`` for a batch not of shape ``(B, D)``; in ``compute`` with fewer than 2
            samples in a set.
    """

    higher_is_better = False

    def compute(self) -> Tensor:
        self._check_counts()
        mu1, s1 = self._mean_cov("real")
        mu2, s2 = self._mean_cov("synthetic")
        return frechet_distance_from_statistics(mu1, s1, mu2, s2)


class VarianceRatio(_RealSyntheticMoments):
    """Total variance of synthetic features over that of real ones, ``Tr Cov(synthetic) / Tr Cov(real)``.

    States: per-set sums, sums of squared norms and counts (``dist_reduce_fx="sum"``), ``O(D)`` memory.
    ``compute()`` returns a 0-dim float64 tensor, see :func:`~collapse_guard.metrics.functional.variance_ratio`.

    Args:
        num_features: feature dimension ``D``.
        kwargs: torchmetrics ``Metric`` keyword arguments.
    """

    higher_is_better = True
    _outer = False

    def _total_variance(self, side: str) -> Tensor:
        n = getattr(self, f"{side}_n").double()
        s = getattr(self, f"{side}_sum")
        return (getattr(self, f"{side}_second") - s.dot(s) / n) / (n - 1)

    def compute(self) -> Tensor:
        self._check_counts()
        return self._total_variance("synthetic") / self._total_variance("real")
