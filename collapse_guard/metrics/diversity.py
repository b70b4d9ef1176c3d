"""torchmetrics ``Metric`` classes over the reference-free diversity indicators (one set of features).

Both keep a ``D x D`` Gram matrix sum and a count (``dist_reduce_fx="sum"``), not the samples: the non-zero
eigenvalues of ``X X^T / n`` (the Vendi kernel) are those of ``X^T X / n``, and the singular values of ``X``
are the square roots of the eigenvalues of ``X^T X``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from collapse_guard.metrics._base import FeatureSumsMetric
from collapse_guard.metrics.functional.diversity import (
    effective_rank_from_singular_values,
    normalize_rows,
    vendi_score_from_eigenvalues,
)

__all__ = ["VendiScore", "EffectiveRank"]


class _GramMetric(FeatureSumsMetric):
    higher_is_better = True

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.add_sum_state("gram", (num_features, num_features))
        self.add_sum_state("total", (num_features,))
        self.add_count_state("n")

    def _prepare(self, x: Tensor) -> Tensor:
        return x

    def update(self, features: Tensor) -> None:
        """Add a batch of features, shape ``(B, num_features)``."""
        x = self._prepare(self.checked_batch(features))
        self.gram = self.gram + x.t() @ x
        self.total = self.total + x.sum(dim=0)
        self.n = self.n + x.shape[0]

    def _check_n(self) -> None:
        if int(self.n) < 1:
            raise ValueError(f"{type(self).__name__} needs at least one sample before compute().")


class VendiScore(_GramMetric):
    """Vendi score with the cosine-similarity kernel (Friedman & Dieng 2023), accumulated over batches.

    ``compute()`` returns a 0-dim float64 tensor in ``[1, min(N, D)]``, equal to
    :func:`~collapse_guard.metrics.functional.vendi_score` on all the samples seen.

    Args:
        num_features: feature dimension ``D``.
        q: order of the entropy (1: Shannon).
        kwargs: torchmetrics ``Metric`` keyword arguments.

    Example::

        m = VendiScore(num_features=512)
        for feats in loader:  # (B, 512)
            m.update(feats)
        m.compute()
    """

    def __init__(self, num_features: int, q: float = 1.0, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if q < 0:
            raise ValueError(f"`q` must be >= 0, got {q}.")
        self.q = q

    def _prepare(self, x: Tensor) -> Tensor:
        return normalize_rows(x)

    def compute(self) -> Tensor:
        self._check_n()
        g = self.gram / self.n.double()
        w = torch.linalg.eigvalsh(0.5 * (g + g.t()))
        return vendi_score_from_eigenvalues(w, self.q)


class EffectiveRank(_GramMetric):
    """Effective rank of the feature matrix (Roy & Vetterli 2007), accumulated over batches.

    ``compute()`` returns a 0-dim float64 tensor in ``[1, min(N, D)]``, equal (to rounding of the Gram route,
    about ``1e-8`` relative on the singular values) to :func:`~collapse_guard.metrics.functional.effective_rank`
    on all the samples seen.

    Args:
        num_features: feature dimension ``D``.
        center: subtract the mean feature vector first.
        kwargs: torchmetrics ``Metric`` keyword arguments.
    """

    def __init__(self, num_features: int, center: bool = False, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.center = center

    def compute(self) -> Tensor:
        self._check_n()
        g = self.gram
        if self.center:
            g = g - torch.outer(self.total, self.total) / self.n.double()
        w = torch.linalg.eigvalsh(0.5 * (g + g.t()))
        return effective_rank_from_singular_values(w.clamp_min(0).sqrt())
