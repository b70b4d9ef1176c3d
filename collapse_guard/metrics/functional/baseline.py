"""Real-vs-real baseline: the noise of an indicator when both sides are real data.

No paper gives validated action thresholds for collapse indicators (none of Shumailov et al. 2024,
Alemohammad et al. 2024, Bertrand et al. 2024, Gerstgrasser et al. 2024 states one). What can be stated
honestly is how far an indicator moves between two disjoint real subsets of the same size as the evaluation
sets: thresholds are then expressed in units of that real-data noise (e.g. "recall more than 3 baseline stds
below the baseline mean"). Sample-size-dependent indicators (precision/recall at high dimension, distinct-n,
type-token ratio) need this most.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["RealBaseline", "real_baseline"]


class RealBaseline(NamedTuple):
    """Result of :func:`real_baseline`.

    For a metric returning one value, ``mean`` and ``std`` are 0-dim float64 tensors and ``values`` has shape
    ``(num_splits,)``; for a metric returning a dict, each field is a dict with the same keys.
    """

    mean: Union[Tensor, dict[str, Tensor]]
    std: Union[Tensor, dict[str, Tensor]]
    values: Union[Tensor, dict[str, Tensor]]


def _take(data: Any, idx: Tensor) -> Any:
    if isinstance(data, Tensor):
        return data[idx.to(data.device)]
    return [data[i] for i in idx.tolist()]


def _as_scalar(v: Any) -> Tensor:
    t = torch.as_tensor(v).detach().double().cpu()
    if t.numel() != 1:
        raise ValueError(f"`metric_fn` must return scalars, got a value of shape {tuple(t.shape)}.")
    return t.reshape(())


def real_baseline(
    metric_fn: Callable[[Any, Any], Union[Tensor, float, Mapping[str, Any]]],
    real: Union[Tensor, Sequence[Any]],
    n: int,
    num_splits: int = 10,
    generator: Optional[torch.Generator] = None,
) -> RealBaseline:
    """Mean and std of ``metric_fn(A, B)`` over random pairs of disjoint real subsets ``A``, ``B`` of size ``n``.

    Each split draws a fresh random permutation of the real samples and takes its first ``n`` as ``A`` (in the
    role of the real reference) and the next ``n`` as ``B`` (in the role of the synthetic set). Use the same
    ``n`` as the evaluation set, since many indicators depend on the sample size.

    Args:
        metric_fn: indicator taking ``(real, synthetic)`` and returning a scalar (tensor or float) or a dict of
            scalars, e.g. ``functools.partial(prdc, k=5)`` or :func:`frechet_distance`.
        real: real samples: a tensor indexed along dim 0, shape ``(N, ...)``, or any sequence (e.g. a list
            of strings for the text indicators).
        n: subset size, ``1 <= n`` and ``2 n <= N``.
        num_splits: number of independent subset pairs, ``>= 2``.
        generator: random generator of the permutations (seeded 0 when ``None``, so the result is
            deterministic).

    Returns:
        :class:`RealBaseline` ``(mean, std, values)``, float64; ``std`` is the unbiased sample std over splits.

    Raises:
        ValueError: if ``2 n`` exceeds the number of real samples, ``n < 1`` or ``num_splits < 2``.

    Example::

        >>> from functools import partial
        >>> x = torch.randn(2000, 8)
        >>> base = real_baseline(partial(prdc, k=5), x, n=500, num_splits=4)
        >>> sorted(base.mean)
        ['coverage', 'density', 'precision', 'recall']
    """
    total = len(real)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive integer, got {n!r}.")
    if 2 * n > total:
        raise ValueError(f"need 2 * n = {2 * n} real samples for two disjoint subsets, have {total}.")
    if num_splits < 2:
        raise ValueError(f"`num_splits` must be >= 2 for a std, got {num_splits}.")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    results = []
    for _ in range(num_splits):
        perm = torch.randperm(total, generator=generator)
        results.append(metric_fn(_take(real, perm[:n]), _take(real, perm[n : 2 * n])))
    if isinstance(results[0], Mapping):
        keys = list(results[0].keys())
        values = {key: torch.stack([_as_scalar(r[key]) for r in results]) for key in keys}
        return RealBaseline(
            mean={key: v.mean() for key, v in values.items()},
            std={key: v.std(unbiased=True) for key, v in values.items()},
            values=values,
        )
    values = torch.stack([_as_scalar(r) for r in results])
    return RealBaseline(mean=values.mean(), std=values.std(unbiased=True), values=values)
