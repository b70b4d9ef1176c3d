"""A :class:`~collapse_guard.loop.LightningSelfConsumingLoop` that does not fit the same inputs twice.

The VAE experiment runs every seed twice, without and with a guard, and the two runs agree until the guard
first acts: generation 0 (the same fit on real data) and, after it, every attempt 0 the guard has not changed yet
(same generation, seed, real share, real pool and synthetic samples). Those fits are deterministic functions of
their inputs, so the second run takes the first run's module, samples and datamodule instead of fitting again.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from collapse_guard.loop.neural import LightningSelfConsumingLoop


class FitCache:
    """The fits of one seed's runs, by their inputs; share one between loops of the same settings only.

    ``hits`` counts the fits taken from the cache.
    """

    def __init__(self) -> None:
        self._fits: Dict[Tuple, Tuple[Any, ...]] = {}
        self.hits = 0

    @staticmethod
    def key(g: int, fit_seed: int, dm) -> Tuple:
        """What a fit depends on besides the loop's settings: the generation, the attempt's seed, the real share
        and the identities of the real pool and of every synthetic dataset (the objects are kept alive by the
        cache, so an identity is never reused)."""
        synthetic = tuple(sorted((name, id(src.data)) for name, src in (dm.synthetic or {}).items()))
        return (g, fit_seed, float(dm.real_fraction), id(dm.real), synthetic)


class ReusingLoop(LightningSelfConsumingLoop):
    """:class:`~collapse_guard.loop.LightningSelfConsumingLoop` whose fits go through a :class:`FitCache`.

    A fit whose key is in the cache is not run: the earlier module, trainer and samples are returned, and the
    generation's record reads the earlier datamodule (its per-source sample counts and provenance, the same by
    construction). Every loop sharing a cache must have the same settings but for the guard.
    """

    def __init__(self, *args, cache: FitCache, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cache = cache
        self._reused_dm: Dict[int, Any] = {}

    def _fit_and_sample(self, g, dm, fit_seed, run):
        key = FitCache.key(g, fit_seed, dm)
        hit = self.cache._fits.get(key)
        if hit is None:
            model, trainer, samples = super()._fit_and_sample(g, dm, fit_seed, run)
            keep = (dm.real, [src.data for src in (dm.synthetic or {}).values()])
            self.cache._fits[key] = (model, trainer, samples, dm, keep)
            return model, trainer, samples
        model, trainer, samples, fitted_dm, _ = hit
        self.cache.hits += 1
        if run.generator is None:
            run.generator = type(model).__name__
        self._reused_dm[id(dm)] = fitted_dm
        return model, trainer, samples

    def _record(self, inputs, dm, share, real_g, metrics, attempt):
        return super()._record(inputs, self._reused_dm.pop(id(dm), dm), share, real_g, metrics, attempt)
