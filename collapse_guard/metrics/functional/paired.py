"""Paired comparison of a classifier's correctness on the *same* held-out samples at two checks.

A model is checked on a fixed held-out set. Between a reference check and now, the samples whose correctness
flipped carry both sources of noise a fall must be judged against at once: the sampling error of the held-out set
and how far the model itself moved (the check-to-check variation of healthy training). With ``b`` samples right at
the reference and wrong now and ``c`` wrong then and right now, out of ``n``, the accuracy changed by
``(c - b) / n``, and the standard error of that paired difference of proportions is
``sqrt(b + c - (b - c)**2 / n) / n`` (McNemar, *Psychometrika* 12, 1947; Agresti, *Categorical Data Analysis*, 2nd
ed. 2002, section 10.1.1). Samples that did not flip add nothing to it: the same samples judged twice cancel their
own sampling error, and a model that moves a lot between checks (many flips both ways) has a wide unit.

The counts are sums, so held-out shards on several ranks add up exactly (``dist_reduce_fx="sum"``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["paired_counts", "paired_difference"]


def paired_counts(correct: Tensor, reference: Tensor, groups: Optional[Tensor] = None,
                  num_groups: int = 1) -> Tensor:
    """The discordant and total counts of a paired comparison, per group.

    Args:
        correct: whether each sample is classified right now, shape ``(N,)``, bool (or 0/1).
        reference: whether each *same* sample was right at the reference check, shape ``(N,)``, same order.
        groups: the group of each sample (its true class), shape ``(N,)``, integers in ``[0, num_groups)``;
            ``None``: one group.
        num_groups: number of groups ``G`` (classes), ``>= 1``.

    Returns:
        Long tensor of shape ``(3, G)``: row 0 ``b`` (right at the reference, wrong now), row 1 ``c`` (wrong at the
        reference, right now), row 2 ``n`` (samples), per group.

    Raises:
        ValueError: if ``correct`` and ``reference`` are not 1-D of the same length, or ``groups`` is not.

    Example::

        >>> paired_counts(torch.tensor([True, False, True, False]), torch.tensor([True, True, False, False]))
        tensor([[1],
                [1],
                [4]])
    """
    correct, reference = correct.reshape(-1).bool(), reference.reshape(-1).bool()
    if correct.shape != reference.shape:
        raise ValueError(f"`correct` and `reference` must be paired (same length), got {tuple(correct.shape)} and "
                         f"{tuple(reference.shape)}.")
    if groups is None:
        groups = torch.zeros_like(correct, dtype=torch.long)
    groups = groups.reshape(-1).long()
    if groups.shape != correct.shape:
        raise ValueError(f"`groups` must give one group per sample, shape {tuple(correct.shape)}, got "
                         f"{tuple(groups.shape)}.")
    out = torch.zeros(3, num_groups, dtype=torch.long, device=correct.device)
    out[0].index_add_(0, groups, (reference & ~correct).long())
    out[1].index_add_(0, groups, (~reference & correct).long())
    out[2].index_add_(0, groups, torch.ones_like(groups))
    return out


def paired_difference(b: Tensor, c: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """The change of a proportion between two checks of the same samples, and its standard error.

    Args:
        b: samples right at the reference and wrong now, any shape (counts, ``>= 0``).
        c: samples wrong at the reference and right now, same shape.
        n: samples compared, same shape (``b + c <= n``).

    Returns:
        ``(change, stderr)``, float64 tensors of the same shape: ``change = (c - b) / n`` in ``[-1, 1]`` (now
        minus the reference: negative is a fall), ``stderr = sqrt(b + c - (b - c)**2 / n) / n`` in ``[0, 1]``
        (the paired-proportion standard error, McNemar 1947; Agresti 2002, section 10.1.1). Where ``n`` is 0:
        NaN for both. With no flip at all (``b = c = 0``) both are 0; when every flip goes one way and nearly every
        sample flipped the estimate shrinks towards 0 too, so pair a ``sigmas`` bound on it with a minimum change.

    Example::

        >>> change, stderr = paired_difference(torch.tensor(6), torch.tensor(2), torch.tensor(100))
        >>> round(change.item(), 4), round(stderr.item(), 4)
        (-0.04, 0.028)
    """
    b, c, n = b.double(), c.double(), n.double()
    safe = n.clamp_min(1)
    change = (c - b) / safe
    stderr = (b + c - (b - c) ** 2 / safe).clamp_min(0).sqrt() / safe
    nan = torch.full_like(change, float("nan"))
    return torch.where(n > 0, change, nan), torch.where(n > 0, stderr, nan)
