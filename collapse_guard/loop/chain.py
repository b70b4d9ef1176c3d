"""Chains of generations of a refittable labelled generator (self-consuming loops on real data)."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np

REGIMES = ("replace", "accumulate", "fresh")


def check_regime(regime: str) -> str:
    """Return ``regime`` if it is one of ``REGIMES``.

    Raises:
        ValueError: for any other name.
    """
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; expected one of {', '.join(REGIMES)}")
    return regime


def check_loop_settings(regime: str, fresh_real: str, real_fraction: float) -> str:
    """Check the settings every self-consuming loop takes; return ``regime``.

    Raises:
        ValueError: for a ``regime`` not in ``REGIMES``, a ``fresh_real`` other than ``"fixed"`` / ``"resample"``,
            or a ``real_fraction`` outside ``[0, 1)``.
    """
    check_regime(regime)
    if fresh_real not in ("fixed", "resample"):
        raise ValueError(f"fresh_real must be 'fixed' or 'resample', got {fresh_real!r}")
    if not 0.0 <= real_fraction < 1.0:
        raise ValueError(f"real_fraction must be in [0, 1), got {real_fraction}")
    return regime


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
    check_regime(regime)
    if fresh_real not in ("fixed", "resample"):
        raise ValueError(f"fresh_real must be 'fixed' or 'resample', got {fresh_real!r}")
    if not 0.0 <= real_fraction < 1.0:
        raise ValueError(f"real_fraction must be in [0, 1), got {real_fraction}")
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
    real_rng = np.random.default_rng(real_ss)
    n_real_share = int(round(real_fraction / (1.0 - real_fraction) * samples_per_generation))
    n_real_share = min(n_real_share, len(x_real))
    fixed_idx: Optional[np.ndarray] = None
    if regime == "fresh" and fresh_real == "fixed":
        fixed_idx = real_rng.choice(len(x_real), size=n_real_share, replace=False)

    datasets: List[Tuple[np.ndarray, np.ndarray]] = []
    models: List[Any] = []
    train_x, train_y = x_real, y_real
    for g in range(1, generations + 1):
        model = model_factory()
        model.fit(train_x, train_y)
        xg, yg = model.sample(samples_per_generation, rng)
        datasets.append((xg, yg))
        if return_models:
            models.append(model)
        if regime == "replace":
            train_x, train_y = xg, yg
        elif regime == "accumulate":
            train_x = np.concatenate([train_x, xg.astype(train_x.dtype, copy=False)])
            train_y = np.concatenate([train_y, yg.astype(train_y.dtype, copy=False)])
        else:  # fresh
            if fixed_idx is not None:
                idx = fixed_idx
            else:
                idx = real_rng.choice(len(x_real), size=n_real_share, replace=False)
            train_x = np.concatenate([x_real[idx].astype(xg.dtype, copy=False), xg])
            train_y = np.concatenate([y_real[idx].astype(yg.dtype, copy=False), yg])
    if return_models:
        return datasets, models
    return datasets


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
