"""What each generation of a self-consuming loop trains on, under ``replace`` / ``accumulate`` / ``fresh``.

One planner for every loop (:func:`~collapse_guard.loop.generation_chain`,
:class:`~collapse_guard.loop.SelfConsumingLoop`, :class:`~collapse_guard.loop.LightningSelfConsumingLoop`): the
loops differ in how they hold data (arrays, arrays with a seed axis, ``Dataset`` s), not in what each fit sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from collapse_guard._numbers import check_fraction

REGIMES = ("replace", "accumulate", "fresh")
FRESH_REAL = ("fixed", "resample")


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
    if fresh_real not in FRESH_REAL:
        raise ValueError(f"fresh_real must be 'fixed' or 'resample', got {fresh_real!r}")
    if check_fraction(real_fraction, "real_fraction") == 1.0:
        raise ValueError("`real_fraction` must be below 1 (a loop needs synthetic samples), got 1.0.")
    return regime


def real_share_size(real_fraction: float, samples_per_generation: int) -> int:
    """Real samples beside ``samples_per_generation`` synthetic ones for a real share ``real_fraction``."""
    return int(round(real_fraction / (1.0 - real_fraction) * samples_per_generation))


@dataclass(frozen=True)
class TrainingPlan:
    """What fit ``fit`` of a loop trains on (fit 0 trains on the real data alone).

    Attributes:
        fit: the fit's index (``0, 1, ...``); its samples are handed on as batch ``fit + 1``.
        real: ``"all"`` (the whole real pool), ``"subset"`` (the real samples ``real_indices``), ``"new"`` (``n_real``
            real samples the loop draws itself, e.g. from a sampler) or ``"none"``.
        real_indices: indices into the real pool when ``real == "subset"``, else ``None``.
        n_real: real samples trained on (``0`` for ``"none"``).
        synthetic: the sample batches trained on, ``1..fit`` (batch ``k`` drawn by fit ``k - 1``).
        real_fraction: the target real share of the fit's batches, in ``[0, 1]``: ``1`` for fit 0, ``0`` under
            ``replace``, the pool's share of the training set under ``accumulate``, the loop's under ``fresh``.
        size: samples in the training set (real plus synthetic).
    """

    fit: int
    real: str
    real_indices: Optional[np.ndarray]
    n_real: int
    synthetic: Tuple[int, ...]
    real_fraction: float
    size: int


class RegimePlanner:
    r"""Say, fit after fit, what a self-consuming loop trains on under its regime.

    Fit 0 trains on the whole real pool. Fit ``g >= 1`` trains on

    * ``replace``: the samples of fit ``g-1`` (batch ``g``) only;
    * ``accumulate``: the real pool plus batches ``1..g``;
    * ``fresh``: batch ``g`` plus ``n_real`` real samples: one fixed subset of the real pool (``fresh_real="fixed"``,
      drawn once, before fit 1) or a new one per fit (``"resample"``; ``draw_real=False`` leaves the drawing to the
      loop, e.g. from a real-data sampler: the plan says ``"new"``).

    Plans must be asked for in order (``plan(0)``, ``plan(1)``, ...): a resampled real subset is drawn from ``rng``
    when its plan is made, so the draws follow the fits.

    Args:
        regime: ``"replace"``, ``"accumulate"`` or ``"fresh"``.
        n_pool: real samples in the pool (``>= 1``).
        samples_per_generation: synthetic samples in each batch (``>= 1``).
        rng: the generator of the real subsets (``fresh`` only; unused otherwise).
        real_fraction: ``fresh`` only: the real share, giving ``n_real = round(f / (1 - f) * samples_per_generation)``.
        n_real: ``fresh`` only: real samples per fit (overrides ``real_fraction``).
        fresh_real: ``"fixed"`` or ``"resample"``.
        sort: sort the drawn real indices (else they keep the order they were drawn in).
        draw_real: draw resampled real subsets (``False``: the loop draws them, the plan says ``"new"``).

    Raises:
        ValueError: an unknown ``regime`` or ``fresh_real``, a ``real_fraction`` outside ``[0, 1)``, a negative
            ``n_real``, or a real share larger than the pool (unless the loop draws it itself).

    Example::

        >>> planner = RegimePlanner("fresh", n_pool=100, samples_per_generation=90, rng=np.random.default_rng(0),
        ...                         real_fraction=0.1)
        >>> p0, p1 = planner.plan(0), planner.plan(1)
        >>> (p0.real, p0.size), (p1.real, p1.n_real, p1.synthetic, p1.size)
        (('all', 100), ('subset', 10, (1,), 100))
    """

    def __init__(
        self,
        regime: str,
        n_pool: int,
        samples_per_generation: int,
        rng: Optional[np.random.Generator] = None,
        real_fraction: float = 0.0,
        n_real: Optional[int] = None,
        fresh_real: str = "fixed",
        sort: bool = True,
        draw_real: bool = True,
    ) -> None:
        self.regime = check_loop_settings(regime, fresh_real, real_fraction)
        if n_real is not None and n_real < 0:
            raise ValueError(f"n_real must be >= 0, got {n_real}")
        self.n_pool, self.n_syn = int(n_pool), int(samples_per_generation)
        self.fresh_real, self.sort, self.draw_real = fresh_real, sort, draw_real
        self.rng = rng if rng is not None else np.random.default_rng(0)
        share = real_share_size(real_fraction, self.n_syn) if n_real is None else int(n_real)
        self.n_real = share if regime == "fresh" else 0
        self.real_fraction = float(real_fraction) if n_real is None else self.n_real / max(1, self.n_real + self.n_syn)
        if self.n_real > self.n_pool and (fresh_real == "fixed" or draw_real):
            raise ValueError(
                f"the real share (real_fraction={real_fraction}, n_real={n_real}) needs {self.n_real} real samples; "
                f"the real pool has {self.n_pool}. Lower the share or pass more real data."
            )
        self._fixed = self._draw() if regime == "fresh" and fresh_real == "fixed" and self.n_real > 0 else None
        self._next = 0

    def _draw(self) -> np.ndarray:
        idx = self.rng.choice(self.n_pool, size=self.n_real, replace=False)
        return np.sort(idx) if self.sort else idx

    def plan(self, fit: int) -> TrainingPlan:
        """The training set of fit ``fit``.

        Raises:
            ValueError: when plans are asked for out of order.
        """
        if fit != self._next:
            raise ValueError(f"plans are made in order: expected fit {self._next}, got {fit}")
        self._next += 1
        if fit == 0:
            return TrainingPlan(0, "all", None, self.n_pool, (), 1.0, self.n_pool)
        if self.regime == "replace":
            return TrainingPlan(fit, "none", None, 0, (fit,), 0.0, self.n_syn)
        if self.regime == "accumulate":
            size = self.n_pool + fit * self.n_syn
            return TrainingPlan(fit, "all", None, self.n_pool, tuple(range(1, fit + 1)), self.n_pool / size, size)
        size = self.n_syn + self.n_real
        if self.n_real == 0:
            return TrainingPlan(fit, "none", None, 0, (fit,), self.real_fraction, size)
        if self._fixed is not None:
            kind, idx = "subset", self._fixed
        elif self.draw_real:
            kind, idx = "subset", self._draw()
        else:
            kind, idx = "new", None
        return TrainingPlan(fit, kind, idx, self.n_real, (fit,), self.real_fraction, size)
