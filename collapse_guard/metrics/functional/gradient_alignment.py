"""How a batch of one data source pulls a model compared with held-out real data: gradient cosine similarity.

The gradient of a source's loss points where a training step on that source moves the weights; the gradient of the
held-out real loss points where the weights should go to do better on real data. Their cosine is positive for a
source whose steps help on real data and negative for one whose steps hurt: the first-order influence used to
select data by gradient matching (GRAD-MATCH, Killamsetty et al., ICML 2021) and to trace a training point's
influence on a test loss (TracIn, Pruthi et al., NeurIPS 2020).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


def flat_gradient(loss: Tensor, params: Sequence[Tensor]) -> Tensor:
    """The gradient of a scalar ``loss`` with respect to ``params``, flattened into one float64 vector (parameters
    the loss does not reach count as zeros). No ``.grad`` is written.

    Args:
        loss: 0-dim tensor.
        params: the parameters (tensors with ``requires_grad``).

    Returns:
        Float64 tensor of shape ``(sum of the parameters' sizes,)``.

    Example::

        g = flat_gradient(F.cross_entropy(model(x), y), list(model.parameters()))
    """
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                      for g, p in zip(grads, params)])


def gradient_cosines(source: Sequence[Tensor], reference: Tensor) -> tuple[float, float]:
    """The mean cosine between each of a source's batch gradients and a reference gradient, and its standard error
    over the batches.

    Args:
        source: the source's flattened batch gradients, each of shape ``(P,)``.
        reference: the reference gradient (e.g. the mean held-out real gradient), shape ``(P,)``.

    Returns:
        ``(mean, standard error)``: the mean in ``[-1, 1]`` (0 for zero gradients); the standard error
        ``std / sqrt(B)`` over the ``B`` batches (NaN for one batch).

    Example::

        mean, se = gradient_cosines([g1, g2, g3], g_real)   # mean < 0: the source's steps raise the real loss
    """
    ref_norm = reference.norm()

    def cosine(g: Tensor) -> Tensor:  # one batch at a time: no (B, P) stack of model-sized gradients
        norm = g.norm()  # once a gradient: each is as long as the model
        if norm > 0 and ref_norm > 0:
            return (g @ reference) / (norm * ref_norm)
        return torch.zeros((), dtype=torch.float64)

    cos = torch.stack([cosine(g) for g in source])
    se = float(cos.std(unbiased=True) / math.sqrt(len(cos))) if len(cos) > 1 else math.nan
    return float(cos.mean()), se


__all__ = ["flat_gradient", "gradient_cosines"]
