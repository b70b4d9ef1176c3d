"""What :class:`~collapse_guard.loop.LightningSelfConsumingLoop` records: per generation, per fit, per run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from collapse_guard._compat import Trainer
from collapse_guard.data.datamodule import MixedDataModule
from collapse_guard.data.sources import SyntheticSource
from collapse_guard.loop.guard import GenerationEvent
from collapse_guard.loop.self_consuming import LoopResult


@dataclass
class Generation:
    """What a metric function of :class:`LightningSelfConsumingLoop` sees after one generation.

    Attributes:
        generation: its index (0 = fitted on real data only).
        model: the module fitted in this generation (eval mode).
        samples: the samples it generated (the training data of the next generation), a ``Dataset``.
        first_model: the generation-0 module (e.g. the reference encoder of Shumailov et al.'s VAE measure).
        heldout: held-out real data, never trained on.
        real: the real training data of generation 0.
        datamodule: this generation's ``MixedDataModule``.
        trainer: this generation's ``Trainer``.
    """

    generation: int
    model: Any
    samples: Dataset
    first_model: Any
    heldout: Dataset
    real: Dataset
    datamodule: Optional[MixedDataModule] = None
    trainer: Optional[Trainer] = None


MetricFn = Callable[[Generation], Union[float, torch.Tensor, Mapping[str, Any]]]


@dataclass
class GenerationRecord:
    """One generation of a :class:`LightningSelfConsumingLoop` run.

    Attributes:
        generation: its index.
        regime: the loop's regime.
        real_fraction: target real share of its training batches (the regime's, raised by the guard).
        trained_real_fraction: real share of the samples it actually trained on (from the sampler's counts).
        samples_per_epoch: training samples drawn per epoch.
        real_pool_size: real samples it could draw from (injected reserve samples included).
        samples_per_source: samples trained on per source (``real``, ``reserve``, ``gen<k>``).
        sources: provenance of the synthetic sources it trained on (name, generator, generation, params, size).
        metrics: its indicators.
        action: the guard's decision after it (``"ok"`` without a guard).
        seconds: wall time of fit, sampling and metrics.
        attempt: ``0``, or the number of earlier fits of this generation the guard rejected (``refit=True``).
        accepted: whether its samples were handed on (``False`` for a fit the guard rejected).
    """

    generation: int
    regime: str
    real_fraction: float
    trained_real_fraction: float
    samples_per_epoch: int
    real_pool_size: int
    samples_per_source: Dict[str, int]
    sources: List[dict]
    metrics: Dict[str, float]
    action: str = "ok"
    seconds: float = 0.0
    attempt: int = 0
    accepted: bool = False
    handed_on: Optional[SyntheticSource] = field(default=None, repr=False)


@dataclass
class NeuralLoopResult(LoopResult):
    """What :meth:`LightningSelfConsumingLoop.run` returns: a :class:`~collapse_guard.loop.LoopResult` for one run.

    ``generations`` are ``0..G`` (the generations that ran; fewer when the guard stopped the loop) and every
    ``metrics[name]`` has shape ``(len(generations), 1)``, so ``at`` / ``median`` / ``mean`` work as for the
    closed-form loops.

    Attributes:
        records: one :class:`GenerationRecord` per fit: per generation, plus the fits a ``refit=True`` guard
            rejected (``accepted=False``); ``metrics`` hold the accepted generations only.
        events: the guard's :class:`GenerationEvent` s.
        stopped_at: the generation after which the guard stopped the loop, or ``None``.
        synthetic: every generation's samples as handed on: ``"gen<k>" ->`` :class:`~collapse_guard.SyntheticSource`.
        models: with ``keep_models=True`` the module of every fit, in the order of ``records``; else ``[]``.
    """

    records: List[GenerationRecord] = field(default_factory=list)
    events: List[GenerationEvent] = field(default_factory=list)
    stopped_at: Optional[int] = None
    synthetic: Dict[str, SyntheticSource] = field(default_factory=dict)
    models: List[Any] = field(default_factory=list)

    def value(self, name: str, generation: int) -> float:
        """Metric ``name`` at ``generation``, a float.

        Raises:
            KeyError: if the metric or the generation was not recorded.
        """
        return float(self.at(name, generation)[0])

    def series(self, name: str) -> np.ndarray:
        """Metric ``name`` over the generations that ran, shape ``(len(generations),)``."""
        return self.metrics[name][:, 0].copy()

    def first_generation(self, name: str, predicate: Callable[[float], bool]) -> Optional[int]:
        """The first generation whose value of ``name`` satisfies ``predicate``, or ``None``."""
        for g, v in zip(self.generations.tolist(), self.series(name).tolist()):
            if predicate(v):
                return int(g)
        return None

    def table(self, columns: Optional[Mapping[str, str]] = None, digits: int = 3) -> str:
        """Per-fit text table: generation, real share trained on, metrics (``columns``: header -> name), action.

        Fits the guard rejected (``refit=True``) are listed too, marked ``*`` after the generation.
        """
        columns = dict(columns or {name: name for name in self.metrics})
        heads = ["gen", "real%"] + list(columns) + ["action"]
        widths = [5, 6] + [max(len(h), digits + 4) for h in columns] + [7]
        lines = [" ".join(h.rjust(w) for h, w in zip(heads, widths))]
        for rec in self.records:
            cells = [f"{rec.generation}{'' if rec.accepted else '*'}", f"{100 * rec.trained_real_fraction:.1f}"]
            for name in columns.values():
                cells.append(f"{rec.metrics.get(name, float('nan')):.{digits}f}")
            cells.append(rec.action)
            lines.append(" ".join(c.rjust(w) for c, w in zip(cells, widths)))
        return "\n".join(lines)
