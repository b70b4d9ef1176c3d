"""``RegressionIndicators``: a torchmetrics ``Metric`` over the held-out indicators of a regressor."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from collapse_guard.metrics.functional.per_sample import mean_standard_error
from collapse_guard.metrics.functional.regression import (
    as_regression_pair,
    prediction_variance_ratio,
    r2_score,
    residual_tail_mass,
)


class RegressionIndicators(Metric):
    """Error, spread and tail indicators of a regressor on one evaluation set.

    ``compute()`` returns a dict of scalar tensors:

    * ``loss`` and ``mse``: mean squared error (per sample, the mean over its ``D`` outputs), in squared target
      units; ``loss_stderr``: its standard error by sample;
    * ``mae``: mean absolute error;
    * ``r2``: coefficient of determination, ``<= 1``;
    * ``pred_var_ratio``: variance of the predictions over the variance of the targets, ``>= 0``: a model that
      regresses to the mean, the mark of training on a generator whose variance shrank, makes it fall
      (:func:`~collapse_guard.metrics.functional.regression.prediction_variance_ratio`; Dohmatob, Feng & Kempe 2024);
    * ``residual_tail_mass``: share of samples mispredicted by more than 2 standard deviations of the targets,
      ``[0, 1]`` (:func:`~collapse_guard.metrics.functional.regression.residual_tail_mass`).

    The predictions and targets are kept (``cat`` states, ``N x D`` each: a held-out set, not a training set) and
    gathered across DDP ranks, so every value is that of the whole set.

    Raises:
        ValueError: in ``update``, when predictions and targets are not ``(N,)``, ``(N, 1)`` or ``(N, D)`` alike.

    Example::

        m = RegressionIndicators()
        m.update(preds, target)   # (N,) or (N, D) each, float
        m.compute()["pred_var_ratio"]
    """

    full_state_update = False
    #: the keys of :meth:`compute`'s dict
    KEYS = ("loss", "loss_stderr", "mse", "mae", "r2", "pred_var_ratio", "residual_tail_mass")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        p, t = as_regression_pair(preds, target)
        self.preds.append(p)
        self.target.append(t)

    def compute(self) -> dict[str, Tensor]:
        p, t = dim_zero_cat(self.preds), dim_zero_cat(self.target)
        per_sample = ((t - p) ** 2).mean(1)
        mse = per_sample.mean()
        return {
            "loss": mse,
            "loss_stderr": mean_standard_error(per_sample.sum(), (per_sample**2).sum(), torch.tensor(per_sample.numel())),
            "mse": mse,
            "mae": (t - p).abs().mean(),
            "r2": r2_score(p, t),
            "pred_var_ratio": prediction_variance_ratio(p, t),
            "residual_tail_mass": residual_tail_mass(p, t),
        }
