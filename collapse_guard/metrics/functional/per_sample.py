"""Per-sample losses summarised for a rule: the mean and its standard error, from sums that add up across batches
and DDP ranks; and the ratio estimator for a per-token mean over sequences of different lengths."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["mean_standard_error", "ratio_standard_error"]


def mean_standard_error(total: Tensor, total_sq: Tensor, count: Tensor) -> Tensor:
    """Standard error of a mean from the sum, the sum of squares and the number of independent samples.

    ``sqrt(s² / n)`` with ``s²`` the unbiased sample variance ``(Σx² - n·x̄²) / (n - 1)``: the noise of the mean of
    ``n`` per-sample values (per-sample losses of a held-out set) from the sample alone.

    Args:
        total: ``Σ x``, scalar.
        total_sq: ``Σ x²``, scalar.
        count: ``n``, scalar, ``>= 0``.

    Returns:
        0-dim float64 tensor, ``>= 0``; ``0`` when ``n < 2``.

    Example::

        >>> x = torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> mean_standard_error(x.sum(), (x ** 2).sum(), torch.tensor(4))
        tensor(0.6455, dtype=torch.float64)
    """
    n = torch.as_tensor(count).double()
    if float(n) < 2:
        return torch.zeros((), dtype=torch.float64)
    mean = torch.as_tensor(total).double() / n
    var = (torch.as_tensor(total_sq).double() - n * mean**2).clamp_min(0) / (n - 1)
    return (var / n).sqrt()


def ratio_standard_error(sum_y: Tensor, sum_n: Tensor, sum_yy: Tensor, sum_yn: Tensor, sum_nn: Tensor,
                         count: Tensor) -> Tensor:
    """Standard error of the ratio estimator ``R = Σ y_i / Σ n_i`` over ``m`` independent sequences.

    A token-level mean (the mean token loss or token accuracy of a language model) is a ratio: sequence ``i``
    contributes a total ``y_i`` over its ``n_i`` counted tokens. Tokens of one sequence are not independent, so the
    standard error is taken *by sequence*, with the linearisation (delta method) of the ratio estimator of cluster
    sampling (Cochran 1977, *Sampling Techniques*, section 6.4): ``se² = Σ (y_i - R n_i)² / (m (m - 1) n̄²)``,
    expanded in the five sums so that batches and ranks add up.

    Args:
        sum_y: ``Σ y_i``; sum_n: ``Σ n_i``; sum_yy: ``Σ y_i²``; sum_yn: ``Σ y_i n_i``; sum_nn: ``Σ n_i²``
            (scalars); count: ``m``, the number of sequences.

    Returns:
        0-dim float64 tensor, ``>= 0``; ``0`` when ``m < 2`` or no token was counted.

    Example::

        >>> y, n = torch.tensor([2.0, 6.0]), torch.tensor([2.0, 4.0])   # sequence totals and token counts
        >>> ratio_standard_error(y.sum(), n.sum(), (y * y).sum(), (y * n).sum(), (n * n).sum(), torch.tensor(2))
        tensor(0.2222, dtype=torch.float64)
    """
    m = torch.as_tensor(count).double()
    sn = torch.as_tensor(sum_n).double()
    if float(m) < 2 or float(sn) <= 0:
        return torch.zeros((), dtype=torch.float64)
    r = torch.as_tensor(sum_y).double() / sn
    ss = (torch.as_tensor(sum_yy).double() - 2 * r * torch.as_tensor(sum_yn).double()
          + r**2 * torch.as_tensor(sum_nn).double()).clamp_min(0)
    n_bar = sn / m
    return (ss / (m * (m - 1) * n_bar**2)).sqrt()
