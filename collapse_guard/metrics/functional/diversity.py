"""Reference-free diversity of a set of features: Vendi score and effective rank.

* Vendi score: Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning",
  TMLR 2023 (reference implementation: the ``vendi-score`` package, ``vendi.score_dual`` / ``score_X``).
* Effective rank: Roy & Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO 2007.

Both are exponentials of an entropy of a spectrum, so they read as an "effective number" (of distinct samples,
of used dimensions) and fall when a generator collapses onto fewer modes or directions.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from collapse_guard.metrics.functional._chunk import check_features

__all__ = [
    "normalize_rows",
    "vendi_score",
    "vendi_score_from_eigenvalues",
    "effective_rank",
    "effective_rank_from_singular_values",
]


def normalize_rows(features: Tensor) -> Tensor:
    """L2-normalise each row in float64; all-zero rows stay zero (as ``sklearn.preprocessing.normalize``)."""
    x = features.double()
    norms = x.norm(dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def _hill_number(p: Tensor, q: float) -> Tensor:
    """``exp`` of the Rényi entropy of order ``q`` of a (sub-)probability vector; zero entries are ignored."""
    p = p.clamp_min(0)
    pos = p[p > 0]
    if pos.numel() == 0:
        return torch.tensor(0.0, dtype=torch.float64, device=p.device)
    if q == 1:
        return torch.exp(-(pos * pos.log()).sum())
    if math.isinf(q):
        return 1.0 / pos.max()
    return torch.exp(torch.log((pos**q).sum()) / (1.0 - q))


def vendi_score_from_eigenvalues(eigenvalues: Tensor, q: float = 1.0) -> Tensor:
    """Vendi score of order ``q`` from the eigenvalues of ``K / n`` (negative rounding noise is dropped).

    Args:
        eigenvalues: eigenvalues of the normalised similarity matrix, shape ``(r,)``, summing to 1 when
            ``k(x, x) = 1``.
        q: order; 1 (Shannon, default), ``float('inf')`` or any other positive value.

    Returns:
        0-dim float64 tensor.
    """
    if q < 0:
        raise ValueError(f"`q` must be >= 0, got {q}.")
    return _hill_number(eigenvalues.double(), q)


def vendi_score(features: Tensor, q: float = 1.0, normalize: bool = True) -> Tensor:
    """Vendi score ``exp(-sum_i l_i log l_i)``, ``l_i`` the eigenvalues of ``K / n`` with the cosine kernel.

    ``K_ij = <x_i, x_j>`` on L2-normalised rows (cosine similarity, ``k(x, x) = 1``). Since ``X X^T`` and
    ``X^T X`` share their non-zero eigenvalues, the ``D x D`` matrix ``X^T X / n`` is decomposed when ``D < n``
    and the ``n x n`` kernel otherwise, in float64. This is ``vendi_score.vendi.score_dual(X)`` (and
    ``score_X``). It ranges from 1 (all samples identical up to scale) to ``min(n, D)`` (orthogonal samples).

    Args:
        features: shape ``(N, D)``, ``N >= 1``.
        q: order of the entropy (1: Shannon, the paper's default).
        normalize: L2-normalise the rows first (cosine kernel). With ``False`` the linear kernel is used as
            given, which is a valid Vendi score only if every row already has unit norm.

    Returns:
        0-dim float64 tensor in ``[1, min(N, D)]`` for normalised non-zero rows.

    Raises:
        ValueError: if ``features`` is not a finite non-empty 2-D tensor or ``q < 0``.

    Example::

        >>> round(float(vendi_score(torch.eye(4))), 6)  # four orthogonal samples
        4.0
        >>> round(float(vendi_score(torch.ones(10, 3))), 6)  # one sample repeated
        1.0
    """
    check_features(features, "features")
    x = normalize_rows(features) if normalize else features.double()
    n, d = x.shape
    gram = (x.t() @ x) if d < n else (x @ x.t())
    w = torch.linalg.eigvalsh(gram / n)
    return vendi_score_from_eigenvalues(w, q)


def effective_rank_from_singular_values(singular_values: Tensor) -> Tensor:
    """Effective rank ``exp(H(p))``, ``p = s / sum(s)``, from singular values ``s >= 0`` (shape ``(r,)``).

    Returns a 0-dim float64 tensor in ``[1, r]`` (0 for an all-zero spectrum).
    """
    s = singular_values.double().clamp_min(0)
    total = s.sum()
    if float(total) == 0.0:
        return torch.tensor(0.0, dtype=torch.float64, device=s.device)
    return _hill_number(s / total, 1.0)


def effective_rank(features: Tensor, center: bool = False) -> Tensor:
    """Effective rank of a feature matrix (Roy & Vetterli 2007): ``exp(-sum_k p_k log p_k)``, ``p = s / |s|_1``.

    ``s`` are the singular values of the ``(N, D)`` matrix (float64). A continuous version of the rank: ``D``
    for a matrix whose singular values are all equal, 1 for rank one; dimensional collapse of embeddings makes
    it fall (RankMe, Garrido et al. 2023, uses it on uncentred embeddings, the default here).

    Args:
        features: shape ``(N, D)``.
        center: subtract the column means first (effective rank of the covariance's square root).

    Returns:
        0-dim float64 tensor in ``[1, min(N, D)]`` (0 for an all-zero matrix).

    Raises:
        ValueError: if ``features`` is not a finite non-empty 2-D tensor.

    Example::

        >>> round(float(effective_rank(torch.eye(3))), 6)
        3.0
        >>> round(float(effective_rank(torch.ones(5, 3))), 6)
        1.0
    """
    check_features(features, "features")
    x = features.double()
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    return effective_rank_from_singular_values(torch.linalg.svdvals(x))
