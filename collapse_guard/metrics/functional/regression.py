"""Held-out indicators of a regressor, as pure functions on predictions and targets ``(N, D)``.

A regressor trained on data from a generator whose variance shrinks generation after generation regresses to
the mean on real data: its predictions vary less than the real targets, its error grows most on the tails (Dohmatob,
Feng & Kempe 2024, "Model collapse demystified: the case of regression"; Shumailov et al., Nature 2024, the
Gaussian case: the fitted variance shrinks over generations).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_regression_pair", "prediction_variance_ratio", "residual_tail_mass", "r2_score"]


def as_regression_pair(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``preds`` and ``target`` as float ``(N, D)``: ``(N,)`` and ``(N, 1)`` are one output.

    Raises:
        ValueError: when the two do not hold the same ``N x D`` values.

    Example::

        >>> p, t = as_regression_pair(torch.zeros(4, 1), torch.ones(4))
        >>> p.shape, t.shape
        (torch.Size([4, 1]), torch.Size([4, 1]))
    """
    n = target.shape[0] if target.ndim else 0
    t = target.reshape(n, -1)
    p = preds.reshape(n, -1) if n and preds.numel() == target.numel() else preds
    if p.shape != t.shape:
        raise ValueError(f"regression predictions must match the targets, (N,), (N, 1) or (N, D); got predictions "
                         f"{tuple(preds.shape)} for targets {tuple(target.shape)}.")
    return p.detach().double(), t.detach().double()


def prediction_variance_ratio(preds: Tensor, target: Tensor) -> Tensor:
    """Total variance of the predictions over the total variance of the targets, ``>= 0``.

    1 for predictions as spread as the targets; a model regressing to the mean makes it fall (0: a constant).
    A good but imperfect model sits a little below 1 (its predictions explain a share ``R²`` of the variance).

    Args:
        preds: ``(N, D)`` predictions; target: ``(N, D)`` real targets, ``N >= 2``.

    Example::

        >>> t = torch.tensor([[0.0], [2.0], [4.0]])
        >>> prediction_variance_ratio(t / 2, t)
        tensor(0.2500, dtype=torch.float64)
    """
    p, t = as_regression_pair(preds, target)
    return p.var(0, unbiased=False).sum() / t.var(0, unbiased=False).sum().clamp_min(1e-300)


def r2_score(preds: Tensor, target: Tensor) -> Tensor:
    """Coefficient of determination ``1 - Σ (y - ŷ)² / Σ (y - ȳ)²`` over all outputs, ``<= 1``.

    Example::

        >>> t = torch.tensor([[0.0], [2.0], [4.0]])
        >>> r2_score(t, t), r2_score(torch.full((3, 1), 2.0), t)
        (tensor(1., dtype=torch.float64), tensor(0., dtype=torch.float64))
    """
    p, t = as_regression_pair(preds, target)
    return 1 - ((t - p) ** 2).sum() / ((t - t.mean(0)) ** 2).sum().clamp_min(1e-300)


def residual_tail_mass(preds: Tensor, target: Tensor, z: float = 2.0) -> Tensor:
    """Share of samples whose residual is larger than ``z`` standard deviations of the targets, in ``[0, 1]``.

    The residual of a sample is ``|y - ŷ|`` (its Euclidean norm over ``D`` outputs), the scale the root of the
    targets' total variance. A model that has lost the tails mispredicts the extreme samples by more than the
    spread of the data: the share rises. For a model that predicts the mean, it is the targets' own share beyond
    ``z`` standard deviations (about 5% for ``z=2`` and Gaussian targets).

    Example::

        >>> t = torch.tensor([[-3.0], [-1.0], [1.0], [3.0]])
        >>> residual_tail_mass(torch.zeros(4, 1), t, z=1.0)
        tensor(0.5000, dtype=torch.float64)
    """
    p, t = as_regression_pair(preds, target)
    scale = t.var(0, unbiased=False).sum().sqrt()
    return ((t - p).norm(dim=1) > z * scale).double().mean()
