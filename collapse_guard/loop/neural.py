"""Self-consuming loops of neural generative models, trained through Lightning generation after generation.

Generation 0 fits a fresh ``LightningModule`` on real data; every later generation fits a fresh module on data
sampled from earlier generations, under a regime (``replace`` / ``accumulate`` / ``fresh``). Each generation's
training data is a :class:`~collapse_guard.MixedDataModule` whose synthetic sources are the earlier generations'
samples, tagged with their provenance (:class:`~collapse_guard.SyntheticSource`: generator, generation, params),
and whose held-out real data is never trained on. After each generation the loop records indicators of the model
and its samples, and an optional :class:`~collapse_guard.loop.GenerationGuard` decides whether the next
generation trains on more real data or the loop stops.
"""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from collapse_guard._compat import LightningModule, Trainer
from collapse_guard._trainer import quiet_trainer_kwargs
from collapse_guard.data.datamodule import MixedDataModule
from collapse_guard.data.sources import SyntheticSource
from collapse_guard.loop.chain import check_loop_settings
from collapse_guard.loop.guard import GenerationDecision, GenerationEvent, GenerationGuard
from collapse_guard.loop.self_consuming import LoopResult

#: Lightning's advice for real training runs, noise for the loop's many small fits
_QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*You passed in a `val_dataloader` but have no `validation_step`.*",
    ".*isinstance.treespec, LeafSpec.*",
)

SampleOutput = Union[Dataset, torch.Tensor, Sequence[torch.Tensor]]


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


def as_dataset(samples: SampleOutput) -> Dataset:
    """A map-style ``Dataset`` from what a module's ``sample`` returned (a Dataset, a tensor or a tuple of tensors).

    Tensors are detached and moved to the CPU.

    Raises:
        TypeError: for anything else.
    """
    if isinstance(samples, torch.Tensor):
        return TensorDataset(samples.detach().cpu())
    if isinstance(samples, (tuple, list)) and samples and all(isinstance(t, torch.Tensor) for t in samples):
        return TensorDataset(*(t.detach().cpu() for t in samples))
    if hasattr(samples, "__getitem__") and hasattr(samples, "__len__") and not isinstance(samples, (str, bytes)):
        return samples
    raise TypeError(
        f"`sample(n, generator)` must return a Dataset, a tensor or a tuple of tensors, got {type(samples).__name__}."
    )


@contextlib.contextmanager
def _quiet_lightning(quiet: bool) -> Iterator[None]:
    """Silence Lightning's per-fit info lines (accelerator, ``max_epochs`` reached) for the loop's many fits."""
    if not quiet:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _num_threads(n: Optional[int]) -> Iterator[None]:
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _scalar_metrics(name: str, value: Any) -> Dict[str, float]:
    if isinstance(value, Mapping):
        return {f"{name}/{k}": float(torch.as_tensor(v)) for k, v in value.items()}
    return {name: float(torch.as_tensor(value))}


class LightningSelfConsumingLoop:
    r"""Train a neural generative model generation after generation on its own samples, through Lightning.

    Generation 0 fits a fresh module from ``model_factory(0)`` on the real data. Generation ``g >= 1`` fits a
    fresh module from ``model_factory(g)`` on

    * ``replace``: the samples of generation ``g-1`` only (Shumailov et al., Nature 631, 2024): collapses;
    * ``accumulate``: the real data plus the samples of generations ``0..g-1`` (Gerstgrasser et al. 2024, "Is
      model collapse inevitable?"): does not collapse, although the real share falls towards 0;
    * ``fresh``: the samples of generation ``g-1`` plus a real share ``real_fraction`` of every batch
      (Alemohammad et al., ICLR 2024; Bertrand et al., ICLR 2024): one fixed real subset of
      ``round(f / (1 - f) * samples_per_generation)`` samples (``fresh_real="fixed"``) or a new one drawn from
      the real data each generation (``"resample"``).

    Every fit is ``Trainer(...).fit(module, datamodule=MixedDataModule(...))``: the real data, the earlier
    generations' samples as named :class:`~collapse_guard.SyntheticSource` s (``"gen<k>"``: the samples of
    generation ``k-1``, ``generation=k`` rounds away from real data, with the generator's name and parameters),
    the target real fraction of the regime and the held-out real data as ``holdout`` (never trained on). After
    the fit the module draws ``samples_per_generation`` samples with ``module.sample(n, generator)`` (eval mode, no
    gradients, a seeded ``torch.Generator``), and every metric is evaluated on a :class:`Generation`.

    With a :class:`~collapse_guard.loop.GenerationGuard`, the loop asks it after every generation: ``inject``
    raises the real share of the later generations' batches (and moves fresh real data from ``reserve`` into the
    real pool), ``stop`` ends the loop. Its events, with reasons, are in the result.

    The generative module is any ``LightningModule`` whose ``training_step`` takes batches of the real data's
    format and which has ``sample(n: int, generator: torch.Generator) -> Dataset | Tensor | tuple[Tensor, ...]``
    returning samples in that same format.

    Args:
        model_factory: ``generation -> LightningModule``, a fresh (unfitted) module; it runs under the generation's
            seed, so its initialisation is reproducible.
        regime: ``"replace"``, ``"accumulate"`` or ``"fresh"``.
        samples_per_generation: samples each generation draws; default: as many as the real training data.
        real_fraction: ``fresh`` only: the real share of each generation's batches, in ``[0, 1)``.
        fresh_real: ``"fixed"`` or ``"resample"`` (``fresh`` only).
        metrics: ``name -> f(Generation) -> number | {key: number}``; a dict is recorded as ``name/key``.
        guard: a :class:`~collapse_guard.loop.GenerationGuard` over the recorded metric names, or ``None``.
        max_epochs: epochs of every fit.
        batch_size: training batch size.
        samples_per_epoch: training samples per epoch; default: the size of the generation's training set under
            the regime (real data at generation 0; ``samples_per_generation`` for ``replace``; real plus all earlier
            samples for ``accumulate``; samples plus the real share for ``fresh``).
        generator_name: the ``generator`` recorded in the sources' provenance; default: the module's class name.
        generator_params: parameters recorded with every source (temperature, sizes, ...).
        trainer_kwargs: extra ``Trainer`` arguments (they override the quiet CPU defaults).
        callbacks: ``generation -> list of callbacks`` for each fit (e.g. ``RatioMonitor()``).
        num_threads: ``torch.set_num_threads`` during the run (restored after); ``None`` leaves it.
        quiet: silence Lightning's per-fit info lines.

    Raises:
        ValueError: an unknown ``regime`` or ``fresh_real``, a ``real_fraction`` outside ``[0, 1)``, non-positive
            sizes.

    Example::

        >>> from collapse_guard import Rule
        >>> from collapse_guard.loop import GenerationGuard, LightningSelfConsumingLoop
        >>> from reproductions.vae import DigitsVAE, digits_split, vae_metrics
        >>> real, heldout = digits_split(n_train=300, seed=0)
        >>> guard = GenerationGuard([Rule("latent/recall", relative=0.1, baseline="first")])
        >>> loop = LightningSelfConsumingLoop(lambda g: DigitsVAE(), "replace", metrics=vae_metrics(), guard=guard,
        ...                                   max_epochs=5)
        >>> result = loop.run(real, generations=2, heldout=heldout, seed=0)
        >>> result.generations.tolist(), sorted(result.synthetic)
        ([0, 1, 2], ['gen1', 'gen2', 'gen3'])

    The regimes: Shumailov et al., "AI models collapse when trained on recursively generated data", Nature 631
    (2024); Gerstgrasser et al., "Is model collapse inevitable? Breaking the curse of recursion by accumulating
    real and synthetic data" (2024); Alemohammad et al., "Self-consuming generative models go MAD", ICLR 2024.
    """

    def __init__(
        self,
        model_factory: Callable[[int], LightningModule],
        regime: str = "replace",
        samples_per_generation: Optional[int] = None,
        real_fraction: float = 0.0,
        fresh_real: str = "fixed",
        metrics: Optional[Mapping[str, MetricFn]] = None,
        guard: Optional[GenerationGuard] = None,
        max_epochs: int = 10,
        batch_size: int = 64,
        samples_per_epoch: Optional[int] = None,
        generator_name: Optional[str] = None,
        generator_params: Optional[Mapping[str, Any]] = None,
        trainer_kwargs: Optional[Mapping[str, Any]] = None,
        callbacks: Optional[Callable[[int], list]] = None,
        num_threads: Optional[int] = None,
        quiet: bool = True,
    ) -> None:
        self.regime = check_loop_settings(regime, fresh_real, real_fraction)
        for name, value in (
            ("samples_per_generation", samples_per_generation),
            ("samples_per_epoch", samples_per_epoch),
            ("max_epochs", max_epochs),
            ("batch_size", batch_size),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if guard is not None and not isinstance(guard, GenerationGuard):
            raise TypeError(f"`guard` must be a GenerationGuard, got {type(guard).__name__}.")
        self.model_factory = model_factory
        self.samples_per_generation = samples_per_generation
        self.real_fraction = float(real_fraction)
        self.fresh_real = fresh_real
        self.metrics = dict(metrics or {})
        self.guard = guard
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.generator_name = generator_name
        self.generator_params = dict(generator_params or {})
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.callbacks = callbacks
        self.num_threads = num_threads
        self.quiet = quiet

    # -- the run --------------------------------------------------------------------------------------------
    def run(
        self,
        real: Dataset,
        generations: int,
        *,
        heldout: Dataset,
        seed: int = 0,
        reserve: Optional[Dataset] = None,
        keep_models: bool = False,
    ) -> NeuralLoopResult:
        """Run generations ``0..generations`` (fewer when the guard stops the loop).

        Args:
            real: the real training data of generation 0 (a map-style ``Dataset`` in the module's batch format).
            generations: ``G >= 0``: the number of generations after generation 0.
            heldout: held-out real data, never trained on; the metrics compare against it.
            seed: seed of the whole run: module initialisation, batches, real subsets and sampling of every
                generation are functions of it (and of the generation index) alone.
            reserve: fresh real data, never trained on, that the guard's injections move into the real pool.
            keep_models: keep every fit's module in the result (else only the last one).

        Returns:
            A :class:`NeuralLoopResult`.

        Raises:
            ValueError: for ``generations < 0``, empty ``real`` / ``heldout``, or a ``fresh`` real share that needs
                more real samples than there are.
            KeyError: when the guard monitors a metric the loop does not record (strict guards).
        """
        if not isinstance(generations, int) or generations < 0:
            raise ValueError(f"generations must be an integer >= 0, got {generations!r}")
        for name, ds in (("real", real), ("heldout", heldout)):
            if not hasattr(ds, "__len__") or len(ds) == 0:
                raise ValueError(f"`{name}` must be a non-empty map-style Dataset.")
        if self.guard is not None:
            self.guard.reset()
        with _num_threads(self.num_threads), _quiet_lightning(self.quiet):
            return self._run(real, generations, heldout, int(seed), reserve, keep_models)

    def _n_real_share(self, n_syn: int) -> int:
        return int(round(self.real_fraction / (1.0 - self.real_fraction) * n_syn))

    def _run(self, real, generations, heldout, seed, reserve, keep_models) -> NeuralLoopResult:
        n_real_all = len(real)
        n_syn = self.samples_per_generation or n_real_all
        real_rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        n_share = self._n_real_share(n_syn) if self.regime == "fresh" else 0
        if self.regime == "fresh" and n_share > n_real_all:
            raise ValueError(f"real_fraction={self.real_fraction} needs {n_share} real samples; `real` has {n_real_all}.")
        fixed_idx = None
        if self.regime == "fresh" and self.fresh_real == "fixed" and n_share > 0:
            fixed_idx = np.sort(real_rng.choice(n_real_all, size=n_share, replace=False)).tolist()
        reserve_size = len(reserve) if reserve is not None else 0
        state = {"reserve_used": 0, "floor": 0.0, "generator": self.generator_name, "first_model": None}

        records: List[GenerationRecord] = []
        values: Dict[str, List[float]] = {}
        synthetic: Dict[str, SyntheticSource] = {}
        models: List[Any] = []
        model = samples = None
        stopped_at = None
        for g in range(generations + 1):
            # -- what generation g trains on (the same for every attempt, but for the guard's real share)
            if g == 0:
                real_g, sources, base_share, n_epoch = real, {}, 1.0, n_real_all
            elif self.regime == "replace":
                real_g, sources, base_share, n_epoch = real, {f"gen{g}": synthetic[f"gen{g}"]}, 0.0, n_syn
            elif self.regime == "accumulate":
                sources = {f"gen{k}": synthetic[f"gen{k}"] for k in range(1, g + 1)}
                n_pile = n_real_all + sum(len(src.data) for src in sources.values())
                real_g, base_share, n_epoch = real, n_real_all / n_pile, n_pile
            else:  # fresh
                sources = {f"gen{g}": synthetic[f"gen{g}"]}
                if n_share == 0:
                    real_g = real
                elif fixed_idx is not None:
                    real_g = Subset(real, fixed_idx)
                else:
                    real_g = Subset(real, np.sort(real_rng.choice(n_real_all, size=n_share, replace=False)).tolist())
                base_share, n_epoch = self.real_fraction, n_syn + n_share
            attempt = 0
            while True:
                record, model, samples, decision = self._fit_generation(
                    g, attempt, seed, real, real_g, sources, base_share, n_epoch, n_syn, heldout, reserve, state
                )
                if keep_models:
                    models.append(model)
                records.append(record)
                if decision is not None and decision.refit:
                    attempt += 1
                    continue
                break
            record.accepted = True
            if g == 0:
                state["first_model"] = model
            synthetic[f"gen{g + 1}"] = record.handed_on
            for k, v in record.metrics.items():
                values.setdefault(k, []).append(v)
            if record.action == "stop":
                stopped_at = g
                break
        n_done = len(values[next(iter(values))]) if values else sum(r.accepted for r in records)
        for rec in records:
            rec.handed_on = None
        return NeuralLoopResult(
            generations=np.arange(n_done),
            metrics={k: np.asarray(v, dtype=np.float64).reshape(n_done, 1) for k, v in values.items()},
            model=model,
            data=samples,
            records=records,
            events=list(self.guard.events) if self.guard is not None else [],
            stopped_at=stopped_at,
            synthetic=synthetic,
            models=models,
        )

    def _fit_generation(self, g, attempt, seed, real, real_g, sources, base_share, n_epoch, n_syn, heldout, reserve, state):
        """Fit, sample, measure and judge one attempt at generation ``g``; returns (record, model, samples, decision)."""
        start = time.perf_counter()
        if state["reserve_used"]:
            real_g = ConcatDataset([real_g, Subset(reserve, list(range(state["reserve_used"])))])
        share = 1.0 if g == 0 else max(base_share, state["floor"])
        fit_seed = int(np.random.SeedSequence([seed, g, attempt]).generate_state(1)[0])
        dm = MixedDataModule(
            real=real_g,
            synthetic=sources or None,
            real_fraction=share,
            holdout=heldout,
            reserve=0.0,
            synthetic_holdout=0.0,
            batch_size=self.batch_size,
            samples_per_epoch=self.samples_per_epoch or n_epoch,
            seed=fit_seed,
        )
        # -- fit and sample under the attempt's seeds (the caller's global RNG state is left as it was)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(fit_seed)
            model = self.model_factory(g)
            if state["generator"] is None:
                state["generator"] = type(model).__name__
            trainer = Trainer(**self._trainer_kwargs(g))
            with warnings.catch_warnings():
                if self.quiet:
                    for message in _QUIET_WARNINGS:
                        warnings.filterwarnings("ignore", message=message)
                trainer.fit(model, datamodule=dm)
            model.eval()
            with torch.no_grad():
                samples = as_dataset(model.sample(n_syn, torch.Generator().manual_seed(fit_seed + 1)))
        # -- indicators (metrics that draw, e.g. an ELBO's noise, are reproducible too)
        first_model = model if g == 0 else state["first_model"]
        context = Generation(g, model, samples, first_model, heldout, real, dm, trainer)
        metrics: Dict[str, float] = {}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(fit_seed + 2)
            for name, fn in self.metrics.items():
                metrics.update(_scalar_metrics(name, fn(context)))
        counts = dict(zip(dm.mixer.names, dm.mixer.total_counts.tolist()))
        total = max(1, sum(counts.values()))
        params = {
            **self.generator_params,
            "regime": self.regime,
            "trained_on": "real" if g == 0 else ", ".join(["real"] * (share > 0) + list(sources)),
            "real_fraction": round(share, 6),
            "samples": len(samples),
            "seed": seed,
        }
        record = GenerationRecord(
            generation=g,
            regime=self.regime,
            real_fraction=share,
            trained_real_fraction=(counts.get("real", 0) + counts.get("reserve", 0)) / total,
            samples_per_epoch=dm.mixer.samples_per_epoch,
            real_pool_size=len(real_g),
            samples_per_source={k: int(v) for k, v in counts.items()},
            sources=[src.provenance() for src in dm.mixer.sources if not src.is_real],
            metrics=metrics,
            attempt=attempt,
        )
        record.handed_on = SyntheticSource(samples, generator=state["generator"], generation=g + 1, params=params)
        # -- the guard's decision
        decision = None
        if self.guard is not None:
            reserve_size = len(reserve) if reserve is not None else 0
            decision = self.guard.check(
                g, metrics, share, reserve_size=reserve_size, reserve_remaining=reserve_size - state["reserve_used"]
            )
            record.action = decision.action
            if decision.action == "inject":
                state["floor"] = max(state["floor"], decision.real_fraction)
                state["reserve_used"] += decision.reserve_samples
        record.seconds = time.perf_counter() - start
        return record, model, samples, decision

    def _trainer_kwargs(self, generation: int) -> dict:
        opts: Dict[str, Any] = quiet_trainer_kwargs(max_epochs=self.max_epochs, accelerator="cpu", devices=1)
        opts.update(self.trainer_kwargs)
        opts["callbacks"] = list(self.callbacks(generation)) if self.callbacks is not None else []
        return opts
