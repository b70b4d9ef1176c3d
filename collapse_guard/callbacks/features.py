"""Feature-space indicators for ``HeldOutRealCheck``: the penultimate-layer hook and a bundle of metrics.

The default features of a sample are the inputs of the model's last ``nn.Linear`` layer (its penultimate
activations), captured by a forward hook during the same forward pass that gives the logits, so they cost no
extra forward. A user's ``feature_fn(pl_module, inputs) -> (N, D)`` replaces them.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor, nn

from collapse_guard.metrics.diversity import EffectiveRank, VendiScore
from collapse_guard.metrics.feature import (
    FrechetDistance,
    MaximumMeanDiscrepancy,
    PrecisionRecallDensityCoverage,
    TailMassRatio,
    VarianceRatio,
)


def last_linear(module: nn.Module) -> Optional[nn.Linear]:
    """The last ``nn.Linear`` registered in ``module`` (its output layer in the usual MLP/CNN/transformer head)."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


@contextmanager
def penultimate_features(module: nn.Module) -> Iterator[list]:
    """Collect the inputs of ``module``'s last ``nn.Linear`` for every forward run inside the block.

    Yields:
        A list that receives one ``(N, D)`` tensor per forward (flattened to 2-D, detached); empty when the
        module has no ``nn.Linear``.
    """
    captured: list[Tensor] = []
    layer = last_linear(module)
    if layer is None:
        yield captured
        return

    def hook(_module, inputs, _output):
        x = inputs[0].detach()
        captured.append(x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x)

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


class FeatureIndicators:
    """Feature-space indicators of a synthetic set against held-out real features.

    The synthetic set is training synthetic samples (a synthetic source's) or a generative model's samples.

    Wraps torchmetrics ``Metric`` objects, so the values are exact across DDP ranks:

    * ``precision``, ``recall`` (Kynkäänniemi et al. 2019), ``density``, ``coverage`` (Naeem et al. 2020), k-NN;
    * ``frechet``: Fréchet distance between Gaussian fits; ``mmd``: unbiased MMD², RBF kernel, median heuristic
      (Gretton et al. 2012);
    * ``variance_ratio``: total variance of the synthetic set over the real one; ``tail_mass_ratio``: share of
      synthetic samples in the real 2.5% tails over the real share;
    * ``vendi_real``, ``vendi``: Vendi score (Friedman & Dieng 2023) of the real and of the synthetic features;
      ``effective_rank_real``: effective rank (Roy & Vetterli 2007) of the real features.

    Args:
        num_features: feature dimension ``D``.
        k: neighbour rank of the k-NN indicators.
        device: where the metric states live.
    """

    #: the keys of :meth:`compute`'s dict
    KEYS = (
        "precision", "recall", "density", "coverage", "frechet", "mmd", "variance_ratio", "tail_mass_ratio",
        "vendi_real", "effective_rank_real", "vendi",
    )

    def __init__(self, num_features: int, k: int = 5, device: Optional[torch.device] = None) -> None:
        self.k = k
        self.pair = {
            "prdc": PrecisionRecallDensityCoverage(k=k),
            "frechet": FrechetDistance(num_features),
            "mmd": MaximumMeanDiscrepancy(),
            "variance_ratio": VarianceRatio(num_features),
            "tail_mass_ratio": TailMassRatio(),
        }
        self.real_only = {"vendi_real": VendiScore(num_features), "effective_rank_real": EffectiveRank(num_features)}
        self.synthetic_only = {"vendi": VendiScore(num_features)}
        for metric in self.metrics():
            metric.to(device)

    def metrics(self):
        return [*self.pair.values(), *self.real_only.values(), *self.synthetic_only.values()]

    def update(self, features: Tensor, real: bool) -> None:
        """Add a batch ``(B, D)`` of held-out real (``real=True``) or synthetic features."""
        features = features.float()
        for metric in self.pair.values():
            metric.update(features, real=real)
        for metric in (self.real_only if real else self.synthetic_only).values():
            metric.update(features)

    def compute(self) -> dict[str, Tensor]:
        out = dict(self.pair["prdc"].compute())
        for name, metric in self.pair.items():
            if name != "prdc":
                out[name] = metric.compute()
        for name, metric in {**self.real_only, **self.synthetic_only}.items():
            out[name] = metric.compute()
        return out
