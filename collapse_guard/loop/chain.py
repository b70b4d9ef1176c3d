"""Chains of generations of a refittable labelled generator (self-consuming loops on real data)."""
from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple, Union

import numpy as np

from collapse_guard.loop.regimes import (  # noqa: F401  (REGIMES, check_regime: importable from here too)
    REGIMES,
    RegimePlanner,
    TrainingPlan,
    check_loop_settings,
    check_regime,
    real_share_size,
)


def generation_chain(
    model_factory: Callable[[], Any],
    x_real: np.ndarray,
    y_real: np.ndarray,
    generations: int,
    samples_per_generation: int,
    regime: str = "replace",
    seed: int = 0,
    real_fraction: float = 0.1,
    fresh_real: str = "fixed",
    return_models: bool = False,
) -> Union[List[Tuple[np.ndarray, np.ndarray]], Tuple[List[Tuple[np.ndarray, np.ndarray]], List[Any]]]:
    r"""Run a chain of generations: fit a generator, sample from it, refit on the samples, and so on.

    Generation 1 is sampled from a model fitted on the real data in every regime. For ``g >= 2`` the model
    that samples generation ``g`` is fitted on

    * ``replace``: generation ``g-1`` only (Shumailov et al. 2024, "AI models collapse when trained on
      recursively generated data", Nature 631): collapses;
    * ``accumulate``: the real data plus generations ``1..g-1`` (Gerstgrasser et al. 2024, "Is model
      collapse inevitable?"): does not collapse;
    * ``fresh``: generation ``g-1`` plus a real share, ``real_fraction`` of the training set
      (Alemohammad et al. ICLR 2024, "Self-consuming generative models go MAD"; Bertrand et al. ICLR 2024):
      the real samples are one fixed subset of ``x_real`` (``fresh_real="fixed"``) or drawn anew from it
      each generation (``fresh_real="resample"``).

    Each model is a fresh object from ``model_factory()`` with ``fit(x, y)`` and
    ``sample(n, rng) -> (x, y)``; the only randomness is the ``numpy`` generator seeded by ``seed`` (and
    whatever fixed seed the factory gives the model), so the chain is deterministic given ``seed``.

    Args:
        model_factory: zero-argument callable returning an unfitted model.
        x_real: ``(n, d)`` real samples (generation 0).
        y_real: ``(n,)`` real labels.
        generations: number of synthetic generations ``G`` to produce.
        samples_per_generation: samples drawn per generation.
        regime: ``"replace"``, ``"accumulate"`` or ``"fresh"``.
        seed: seed of the chain.
        real_fraction: share of real samples in each ``fresh`` training set (``0 <= f < 1``).
        fresh_real: ``"fixed"`` or ``"resample"`` (``fresh`` only).
        return_models: also return the fitted models (model ``g`` sampled generation ``g``).

    Returns:
        The list ``[(x_1, y_1), ..., (x_G, y_G)]`` of the generations' datasets, or
        ``(datasets, models)`` when ``return_models`` is true.

    Raises:
        ValueError: for an unknown ``regime`` or ``fresh_real``, a ``real_fraction`` outside ``[0, 1)``,
            ``generations < 0``, ``samples_per_generation < 1`` or mismatched real data.

    Example::

        >>> from sklearn.datasets import load_digits
        >>> from collapse_guard.loop import ClassConditionalGMM, generation_chain
        >>> x, y = load_digits(return_X_y=True)
        >>> gens = generation_chain(ClassConditionalGMM, x, y, generations=3, samples_per_generation=300)
        >>> [xg.shape for xg, _ in gens]
        [(300, 64), (300, 64), (300, 64)]
    """
    check_loop_settings(regime, fresh_real, real_fraction)
    if generations < 0:
        raise ValueError(f"generations must be >= 0, got {generations}")
    if samples_per_generation < 1:
        raise ValueError(f"samples_per_generation must be >= 1, got {samples_per_generation}")
    x_real = np.asarray(x_real)
    y_real = np.asarray(y_real)
    if len(x_real) != len(y_real) or len(x_real) == 0:
        raise ValueError(f"x_real and y_real must be non-empty and of equal length, got {len(x_real)}, {len(y_real)}")

    # Two independent streams: sampling, and the choice of real shares (so generation 1 is the same in
    # every regime for a given seed).
    sample_ss, real_ss = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(sample_ss)
    n_real = min(real_share_size(real_fraction, samples_per_generation), len(x_real))
    planner = RegimePlanner(
        regime, len(x_real), samples_per_generation, np.random.default_rng(real_ss), real_fraction,
        n_real=n_real, fresh_real=fresh_real, sort=False,
    )
    datasets: List[Tuple[np.ndarray, np.ndarray]] = []
    models: List[Any] = []
    for g in range(1, generations + 1):
        train_x, train_y = _training_set(planner.plan(g - 1), x_real, y_real, datasets)
        model = model_factory()
        model.fit(train_x, train_y)
        datasets.append(model.sample(samples_per_generation, rng))
        if return_models:
            models.append(model)
    if return_models:
        return datasets, models
    return datasets


def _training_set(
    plan: TrainingPlan, x_real: np.ndarray, y_real: np.ndarray, datasets: Sequence[Tuple[np.ndarray, np.ndarray]]
) -> Tuple[np.ndarray, np.ndarray]:
    """The arrays of ``plan``: the real pool keeps its dtype beside samples; a real subset takes the samples'."""
    syn = [datasets[k - 1] for k in plan.synthetic]
    if plan.real == "none":
        return syn[0]
    if plan.real == "all":
        return (
            np.concatenate([x_real] + [x.astype(x_real.dtype, copy=False) for x, _ in syn]),
            np.concatenate([y_real] + [y.astype(y_real.dtype, copy=False) for _, y in syn]),
        )
    (xg, yg), idx = syn[0], plan.real_indices
    return (
        np.concatenate([x_real[idx].astype(xg.dtype, copy=False), xg]),
        np.concatenate([y_real[idx].astype(yg.dtype, copy=False), yg]),
    )


def to_tensor_dataset(x: np.ndarray, y: np.ndarray):
    """Wrap ``(x, y)`` arrays as a ``torch.utils.data.TensorDataset`` of float32 inputs and int64 labels.

    Args:
        x: ``(n, d)`` samples.
        y: ``(n,)`` labels.

    Returns:
        ``TensorDataset(torch.float32 (n, d), torch.int64 (n,))``.

    Example::

        >>> import numpy as np
        >>> ds = to_tensor_dataset(np.zeros((4, 64)), np.arange(4))
        >>> len(ds), ds[0][0].dtype
        (4, torch.float32)
    """
    import torch
    from torch.utils.data import TensorDataset

    return TensorDataset(
        torch.as_tensor(np.asarray(x), dtype=torch.float32),
        torch.as_tensor(np.asarray(y), dtype=torch.int64),
    )
