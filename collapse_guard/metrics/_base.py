"""What the ``Metric`` classes of :mod:`collapse_guard.metrics` share: the batch check and the sum-state base."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torchmetrics import Metric


def check_batch(features: Tensor, num_features: Optional[int], allow_1d: bool = False) -> Tensor:
    """Validate a batch of features, shape ``(B, D)`` (``(B,)`` too with ``allow_1d``), and return it detached.

    Raises:
        TypeError: if ``features`` is not a tensor.
        ValueError: if it is not 2-D, has not ``num_features`` columns, or holds NaN or infinite values.
    """
    if not isinstance(features, Tensor):
        raise TypeError(f"`features` must be a torch.Tensor, got {type(features).__name__}.")
    if allow_1d and features.ndim == 1:
        features = features[:, None]
    if features.ndim != 2:
        raise ValueError(f"`features` must have shape (B, D), got {tuple(features.shape)}.")
    if num_features is not None and features.shape[1] != num_features:
        raise ValueError(f"expected {num_features} features per sample, got {features.shape[1]}.")
    if features.is_floating_point() and not bool(torch.isfinite(features).all()):
        raise ValueError("`features` contains NaN or infinite values.")
    return features.detach()


class FeatureSumsMetric(Metric):
    """Base of the metrics that keep float64 sums over ``num_features`` features (``dist_reduce_fx="sum"``).

    Memory does not grow with the number of samples, and the sums over DDP ranks are exact.

    Args:
        num_features: feature dimension ``D``, a positive integer.
        kwargs: torchmetrics ``Metric`` keyword arguments.

    Raises:
        ValueError: if ``num_features`` is not a positive integer.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"`num_features` must be a positive integer, got {num_features!r}.")
        self.num_features = num_features

    def add_sum_state(self, name: str, shape: tuple) -> None:
        """A float64 state of ``shape`` summed over ranks (use ``()`` for a scalar)."""
        self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def add_count_state(self, name: str) -> None:
        """An integer sample count summed over ranks."""
        self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def checked_batch(self, features: Tensor) -> Tensor:
        """``features`` validated as ``(B, num_features)``, in float64."""
        return check_batch(features, self.num_features).to(torch.float64)
