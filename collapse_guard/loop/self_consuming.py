"""Self-consuming loop over generations of a statistical model, vectorised over seeds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import numpy as np

from collapse_guard.loop.digits import single_threaded_blas
from collapse_guard.loop.regimes import RegimePlanner, TrainingPlan, check_loop_settings

Data = Any  # an array with a seed axis first and a sample axis second, or a tuple of such arrays
MetricFn = Callable[[Any, Data], Union[float, np.ndarray]]


def _n_samples(data: Data) -> int:
    return (data[0] if isinstance(data, tuple) else data).shape[1]


def _n_seeds(data: Data) -> int:
    return (data[0] if isinstance(data, tuple) else data).shape[0]


def _concat(parts: List[Data]) -> Data:
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate([p[i] for p in parts], axis=1) for i in range(len(parts[0])))
    return np.concatenate(parts, axis=1)


def _take(data: Data, idx: np.ndarray) -> Data:
    if isinstance(data, tuple):
        return tuple(np.take(a, idx, axis=1) for a in data)
    return np.take(data, idx, axis=1)


@dataclass
class LoopResult:
    """What :meth:`SelfConsumingLoop.run` returns.

    Attributes:
        generations: the recorded generations ``g`` (model ``g`` is fitted on generation ``g-1``'s training
            set; generation 0 is the real data).
        metrics: ``name -> array (len(generations), S)``: each metric of model ``g`` / its samples per seed.
        model: the model after the last generation.
        data: the samples of the last generation.
    """

    generations: np.ndarray
    metrics: Dict[str, np.ndarray] = field(default_factory=dict)
    model: Any = None
    data: Data = None

    def at(self, name: str, generation: int) -> np.ndarray:
        """Values of metric ``name`` at ``generation``, one per seed.

        Raises:
            KeyError: if the metric or the generation was not recorded.
        """
        hits = np.flatnonzero(self.generations == generation)
        if len(hits) == 0:
            raise KeyError(f"generation {generation} was not recorded")
        return self.metrics[name][hits[0]]

    def median(self, name: str, generation: int) -> float:
        """Median over seeds of metric ``name`` at ``generation``."""
        return float(np.median(self.at(name, generation)))

    def mean(self, name: str, generation: int) -> float:
        """Mean over seeds of metric ``name`` at ``generation``."""
        return float(np.mean(self.at(name, generation)))


class SelfConsumingLoop:
    r"""Refit a model on its own samples generation after generation, under a data regime, for many seeds.

    Generation 0 is the real data; model ``g`` is fitted on training set ``g-1`` and draws the
    ``samples_per_generation`` samples of generation ``g``. The training set of generation ``g >= 1`` is

    * ``replace``: generation ``g``'s samples only (Shumailov et al., Nature 631, 2024): collapses;
    * ``accumulate``: the real data plus the samples of generations ``1..g`` (Gerstgrasser et al. 2024,
      "Is model collapse inevitable?"; Dohmatob et al. 2024): bounded error, no collapse;
    * ``fresh``: generation ``g``'s samples plus a real share of ``n_real`` samples (Bertrand et al., ICLR
      2024; Alemohammad et al., "Self-consuming generative models go MAD", ICLR 2024): one fixed subset of
      the real data (``fresh_real="fixed"``), or new real samples each generation (``"resample"``: from
      ``real_sampler`` when given, else drawn again from the real pool).

    Every array has the seed axis first and the sample axis second (see :mod:`collapse_guard.loop.models`),
    so a loop over hundreds of seeds is one vectorised computation. The same model object is refit every
    generation (models start each fit from scratch unless they have a ``warm_start`` option). When the model
    has ``stats(data)`` / ``fit_stats(stats)`` (additive sufficient statistics), ``accumulate`` sums statistics
    instead of refitting on the growing pile.

    Args:
        model: an object with ``fit(data)`` and ``sample(n, rng)``.
        regime: ``"replace"``, ``"accumulate"`` or ``"fresh"``.
        samples_per_generation: synthetic samples per generation; default: as many as the real data.
        real_fraction: ``fresh`` only: the real share of each training set, giving
            ``n_real = round(f / (1 - f) * samples_per_generation)``.
        n_real: ``fresh`` only: number of real samples per generation (overrides ``real_fraction``).
        fresh_real: ``"fixed"`` or ``"resample"``.
        real_sampler: ``f(n, rng) -> data`` drawing fresh real samples (``fresh_real="resample"``).
        metrics: ``name -> f(model, samples) -> array (S,)`` recorded after each recorded generation.

    Raises:
        ValueError: for an unknown ``regime`` or ``fresh_real``, a ``real_fraction`` outside ``[0, 1)``,
            a negative ``n_real``, a real pool smaller than ``n_real`` or non-positive sizes.

    Example::

        >>> from collapse_guard.loop import GaussianModel, SelfConsumingLoop
        >>> rng = np.random.default_rng(0)
        >>> loop = SelfConsumingLoop(GaussianModel(), "replace", metrics={"std": lambda m, x: m.std})
        >>> res = loop.run(rng.normal(size=(1000, 100)), generations=100, seed=0)  # 1000 seeds, M = 100
        >>> round(res.median("std", 10), 1), round(res.median("std", 100), 2)   # ~exp(-g/M)
        (0.9, 0.37)
    """

    def __init__(
        self,
        model: Any,
        regime: str = "replace",
        samples_per_generation: Optional[int] = None,
        real_fraction: float = 0.0,
        n_real: Optional[int] = None,
        fresh_real: str = "fixed",
        real_sampler: Optional[Callable[[int, np.random.Generator], Data]] = None,
        metrics: Optional[Dict[str, MetricFn]] = None,
    ) -> None:
        self.regime = check_loop_settings(regime, fresh_real, real_fraction)
        if n_real is not None and n_real < 0:
            raise ValueError(f"n_real must be >= 0, got {n_real}")
        if samples_per_generation is not None and samples_per_generation < 1:
            raise ValueError(f"samples_per_generation must be >= 1, got {samples_per_generation}")
        self.model = model
        self.samples_per_generation = samples_per_generation
        self.real_fraction = float(real_fraction)
        self.n_real = n_real
        self.fresh_real = fresh_real
        self.real_sampler = real_sampler
        self.metrics = dict(metrics or {})

    def run(
        self,
        real_data: Data,
        generations: int,
        seed: int = 0,
        record: Optional[Iterable[int]] = None,
    ) -> LoopResult:
        """Run ``generations`` generations.

        Args:
            real_data: generation 0, ``(S, n, ...)`` (or a tuple of such arrays), one real dataset per seed.
            generations: number of generations ``G``.
            seed: seed of the whole run (deterministic given it).
            record: generations (``1..G``) at which to evaluate ``metrics``; default all.

        Returns:
            A :class:`LoopResult`.

        Raises:
            ValueError: if ``generations < 1``, ``record`` holds a generation outside ``1..G`` or the real
                pool is too small for ``n_real``.
        """
        if generations < 1:
            raise ValueError(f"generations must be >= 1, got {generations}")
        with single_threaded_blas():  # small arrays: threaded BLAS only adds contention
            return self._run(real_data, generations, seed, record)

    def _run(self, real_data: Data, generations: int, seed: int, record: Optional[Iterable[int]]) -> LoopResult:
        gens = np.arange(1, generations + 1) if record is None else np.unique(np.asarray(list(record), dtype=int))
        if len(gens) and (gens.min() < 1 or gens.max() > generations):
            raise ValueError(f"record must lie in 1..{generations}")
        to_record = set(gens.tolist())
        sample_ss, real_ss = np.random.SeedSequence(seed).spawn(2)
        rng = np.random.default_rng(sample_ss)
        real_rng = np.random.default_rng(real_ss)

        n_pool = _n_samples(real_data)
        n_syn = self.samples_per_generation or n_pool
        planner = RegimePlanner(
            self.regime, n_pool, n_syn, real_rng, self.real_fraction, n_real=self.n_real, fresh_real=self.fresh_real,
            draw_real=self.real_sampler is None,
        )
        model = self.model
        use_stats = self.regime == "accumulate" and hasattr(model, "stats") and hasattr(model, "fit_stats")
        batches: Dict[int, Data] = {}  # sample batch k (drawn by model k), kept while a later fit may train on it
        acc_stats = model.stats(real_data) if use_stats else None
        values: Dict[str, List[np.ndarray]] = {k: [] for k in self.metrics}
        samples = None
        for g in range(1, generations + 1):
            plan = planner.plan(g - 1)
            if use_stats:  # additive sufficient statistics: summed over the plan's sets instead of a refit on the pile
                model.fit_stats(acc_stats)
            else:
                model.fit(self._training_set(plan, real_data, batches, real_rng))
            samples = model.sample(n_syn, rng)
            if use_stats and g < generations:
                acc_stats = tuple(x + y for x, y in zip(acc_stats, model.stats(samples)))
            elif not use_stats:
                if self.regime != "accumulate":
                    batches.clear()
                batches[g] = samples
            if g in to_record:
                for name, fn in self.metrics.items():
                    v = np.asarray(fn(model, samples), dtype=np.float64)
                    values[name].append(np.broadcast_to(v, (_n_seeds(samples),)).copy())
        return LoopResult(
            generations=gens,
            metrics={k: np.stack(v) if v else np.empty((0, _n_seeds(real_data))) for k, v in values.items()},
            model=model,
            data=samples,
        )

    def _training_set(self, plan: TrainingPlan, real_data: Data, batches: Dict[int, Data], real_rng) -> Data:
        """The data of ``plan``: arrays with the seed axis first, concatenated along the sample axis."""
        syn = [batches[k] for k in plan.synthetic]
        if plan.real == "all":
            return _concat([real_data] + syn) if syn else real_data
        if plan.real == "none":
            return syn[0]
        if plan.real == "subset":
            return _concat([_take(real_data, plan.real_indices)] + syn)
        return _concat([self.real_sampler(plan.n_real, real_rng)] + syn)
