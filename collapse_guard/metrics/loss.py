"""``LossIndicators``: the mean of per-sample losses and its standard error, for any model."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from collapse_guard.metrics.functional.per_sample import mean_standard_error


class LossIndicators(Metric):
    """Mean per-sample loss on one evaluation set and its standard error by sample.

    The task-agnostic core of the held-out check: whatever the model, the user's own loss per sample (per sequence
    for sequence models) on held-out real data, ``loss``, with the noise of the held-out sample, ``loss_stderr``
    (:func:`~collapse_guard.metrics.functional.per_sample.mean_standard_error`). All states are sums
    (``dist_reduce_fx="sum"``), so values are exact across DDP ranks.

    Raises:
        ValueError: in ``update``, for losses that are not one value per sample (shape ``(N,)``; ``(N, 1)`` is taken).

    Example::

        m = LossIndicators()
        m.update(torch.tensor([0.5, 1.5]))   # per-sample losses (N,)
        m.compute()                          # {"loss": 1.0, "loss_stderr": 0.5}
    """

    full_state_update = False
    #: the keys of :meth:`compute`'s dict
    KEYS = ("loss", "loss_stderr")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("total", "total_sq", "count"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, losses: Tensor) -> None:
        if not isinstance(losses, Tensor) or losses.ndim not in (1, 2) or (losses.ndim == 2 and losses.shape[1] != 1):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(f"per-sample losses must have shape (N,), got {shape}.")
        x = losses.detach().reshape(-1).double()
        self.total += x.sum()
        self.total_sq += (x * x).sum()
        self.count += x.numel()

    def compute(self) -> dict[str, Tensor]:
        return {"loss": self.total / self.count.clamp_min(1),
                "loss_stderr": mean_standard_error(self.total, self.total_sq, self.count)}
