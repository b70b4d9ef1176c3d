"""How a synthetic source's class marginal departs from the real one: the classes it lacks (its total variation
from the real marginal is :func:`~collapse_guard.metrics.functional.classification.marginal_total_variation`)."""
from __future__ import annotations

import torch
from torch import Tensor


def class_shares(labels: Tensor, num_classes: int) -> Tensor:
    """The share of each class among ``labels``.

    Args:
        labels: integer class labels, shape ``(N,)``, values in ``[0, num_classes)``.
        num_classes: ``C``.

    Returns:
        Float64 tensor of shape ``(C,)`` summing to 1 (all zeros for ``N == 0``).

    Example::

        class_shares(torch.tensor([0, 0, 2]), 3)   # tensor([0.6667, 0.0000, 0.3333])
    """
    return _shares(_counts(labels, num_classes))


def _counts(labels: Tensor, num_classes: int) -> Tensor:
    return torch.bincount(labels.reshape(-1).long(), minlength=num_classes)[:num_classes]


def _shares(counts: Tensor) -> Tensor:
    counts = counts.double()
    total = counts.sum()
    return counts / total if total > 0 else counts


def missing_classes(real_labels: Tensor, synthetic_labels: Tensor, num_classes: int, missing_share: float = 0.1,
                    min_real: int = 5) -> Tensor:
    """The classes a synthetic source lacks: present in the real data (at least ``min_real`` samples) and, in the
    source, at less than ``missing_share`` times their real share (mode loss as the self-consuming-loop papers see
    it: Shumailov et al., Nature 2024; Alemohammad et al., ICLR 2024).

    Args:
        real_labels: real class labels, shape ``(N,)``.
        synthetic_labels: the source's class labels, shape ``(M,)``.
        num_classes: ``C``.
        missing_share: a class below this fraction of its real share counts as missing, in ``[0, 1]``.
        min_real: real samples a class needs to be judged (rarer ones are not).

    Returns:
        Long tensor of the missing classes, sorted (empty when none).

    Example::

        missing_classes(torch.tensor([0, 1, 2] * 10), torch.tensor([0, 1] * 15), 3)   # tensor([2])
    """
    counts = _counts(real_labels, num_classes)  # counted once: the real shares and which classes are judged
    real, synthetic = _shares(counts), class_shares(synthetic_labels, num_classes)
    return torch.nonzero((counts >= min_real) & (synthetic < missing_share * real)).reshape(-1)


__all__ = ["class_shares", "missing_classes"]
