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
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from collapse_guard._compat import LightningModule, Trainer
from collapse_guard._trainer import quiet_trainer_kwargs
from collapse_guard.data.datamodule import MixedDataModule
from collapse_guard.data.sources import SyntheticSource
from collapse_guard.loop.guard import GenerationDecision, GenerationGuard
from collapse_guard.loop.records import Generation, GenerationRecord, MetricFn, NeuralLoopResult
from collapse_guard.loop.regimes import RegimePlanner, TrainingPlan, check_loop_settings

__all__ = ["Generation", "GenerationRecord", "LightningSelfConsumingLoop", "NeuralLoopResult", "as_dataset"]

#: Lightning's advice for real training runs, noise for the loop's many small fits
_QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*You passed in a `val_dataloader` but have no `validation_step`.*",
    ".*isinstance.treespec, LeafSpec.*",
)

SampleOutput = Union[Dataset, torch.Tensor, Sequence[torch.Tensor]]


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

    def _run(self, real, generations, heldout, seed, reserve, keep_models) -> NeuralLoopResult:
        n_syn = self.samples_per_generation or len(real)
        planner = RegimePlanner(
            self.regime, len(real), n_syn, np.random.default_rng(np.random.SeedSequence([seed, 7])),
            self.real_fraction, fresh_real=self.fresh_real,
        )
        run = _RunState(seed, real, heldout, n_syn, _Reserve(reserve), self.generator_name)
        records: List[GenerationRecord] = []
        values: Dict[str, List[float]] = {}
        synthetic: Dict[str, SyntheticSource] = {}
        models: List[Any] = []
        model = samples = None
        stopped_at = None
        for g in range(generations + 1):
            inputs = _GenerationInputs.from_plan(planner.plan(g), real, synthetic)
            attempt = 0
            while True:  # the same inputs for every attempt, but for the guard's real share
                record, model, samples, decision = self._fit_generation(inputs, attempt, run)
                if keep_models:
                    models.append(model)
                records.append(record)
                if decision is None or not decision.refit:
                    break
                attempt += 1
            record.accepted = True
            if g == 0:
                run.first_model = model
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

    def _fit_generation(self, inputs: "_GenerationInputs", attempt: int, run: "_RunState"):
        """Fit, sample, measure and judge one attempt at a generation; returns (record, model, samples, decision)."""
        start = time.perf_counter()
        g = inputs.generation
        real_g = run.reserve.real_pool(inputs.real)
        share = run.reserve.share(inputs)
        fit_seed = int(np.random.SeedSequence([run.seed, g, attempt]).generate_state(1)[0])
        dm = MixedDataModule(
            real=real_g,
            synthetic=inputs.sources or None,
            real_fraction=share,
            holdout=run.heldout,
            reserve=0.0,  # the guard's reserve is the loop's (_Reserve): it grows the real pool between fits
            synthetic_holdout=0.0,
            batch_size=self.batch_size,
            samples_per_epoch=self.samples_per_epoch or inputs.samples_per_epoch,
            seed=fit_seed,
        )
        model, trainer, samples = self._fit_and_sample(g, dm, fit_seed, run)
        # -- indicators (metrics that draw, e.g. an ELBO's noise, are reproducible too)
        first_model = model if g == 0 else run.first_model
        context = Generation(g, model, samples, first_model, run.heldout, run.real, dm, trainer)
        metrics: Dict[str, float] = {}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(fit_seed + 2)
            for name, fn in self.metrics.items():
                metrics.update(_scalar_metrics(name, fn(context)))
        record = self._record(inputs, dm, share, real_g, metrics, attempt)
        params = {
            **self.generator_params,
            "regime": self.regime,
            "trained_on": "real" if g == 0 else ", ".join(["real"] * (share > 0) + list(inputs.sources)),
            "real_fraction": round(share, 6),
            "samples": len(samples),
            "seed": run.seed,
        }
        record.handed_on = SyntheticSource(samples, generator=run.generator, generation=g + 1, params=params)
        decision = None
        if self.guard is not None:
            decision = self.guard.judge(
                g, metrics, share, reserve_size=run.reserve.size, reserve_remaining=run.reserve.remaining
            )
            record.action = decision.action
            run.reserve.apply(decision)
        record.seconds = time.perf_counter() - start
        return record, model, samples, decision

    def _fit_and_sample(self, g: int, dm: MixedDataModule, fit_seed: int, run: "_RunState"):
        """A fresh module fitted on ``dm`` and its samples, under the attempt's seeds (the global RNG is kept)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(fit_seed)
            model = self.model_factory(g)
            if run.generator is None:
                run.generator = type(model).__name__
            trainer = Trainer(**self._trainer_kwargs(g))
            with warnings.catch_warnings():
                if self.quiet:
                    for message in _QUIET_WARNINGS:
                        warnings.filterwarnings("ignore", message=message)
                trainer.fit(model, datamodule=dm)
            model.eval()
            with torch.no_grad():
                samples = as_dataset(model.sample(run.n_syn, torch.Generator().manual_seed(fit_seed + 1)))
        return model, trainer, samples

    def _record(self, inputs, dm: MixedDataModule, share: float, real_g: Dataset, metrics, attempt: int):
        counts = dm.samples_by_source()
        total = max(1, sum(counts.values()))
        return GenerationRecord(
            generation=inputs.generation,
            regime=self.regime,
            real_fraction=share,
            trained_real_fraction=sum(counts.get(name, 0) for name in dm.real_source_names) / total,
            samples_per_epoch=self.samples_per_epoch or inputs.samples_per_epoch,
            real_pool_size=len(real_g),
            samples_per_source={k: int(v) for k, v in counts.items()},
            sources=[p for p in dm.source_provenance() if p["kind"] == "synthetic"],
            metrics=metrics,
            attempt=attempt,
        )

    def _trainer_kwargs(self, generation: int) -> dict:
        opts: Dict[str, Any] = quiet_trainer_kwargs(max_epochs=self.max_epochs, accelerator="cpu", devices=1)
        opts.update(self.trainer_kwargs)
        opts["callbacks"] = list(self.callbacks(generation)) if self.callbacks is not None else []
        return opts


@dataclass
class _GenerationInputs:
    """What one generation trains on under the regime (the same for every attempt)."""

    generation: int
    real: Dataset  # the real pool, or the regime's real subset
    sources: Dict[str, SyntheticSource]  # "gen<k>" -> the samples of generation k - 1
    real_fraction: float  # the regime's target real share (the guard may raise it)
    samples_per_epoch: int

    @classmethod
    def from_plan(cls, plan: TrainingPlan, real: Dataset, synthetic: Mapping[str, SyntheticSource]):
        subset = Subset(real, plan.real_indices.tolist()) if plan.real == "subset" else real
        sources = {f"gen{k}": synthetic[f"gen{k}"] for k in plan.synthetic}
        return cls(plan.fit, subset, sources, plan.real_fraction, plan.size)


class _Reserve:
    """The guard's injections, in one place: reserve samples moved into the real pool and the real-share floor."""

    def __init__(self, data: Optional[Dataset]) -> None:
        self.data, self.used, self.floor = data, 0, 0.0
        self.size = len(data) if data is not None else 0

    @property
    def remaining(self) -> int:
        return self.size - self.used

    def real_pool(self, real: Dataset) -> Dataset:
        return ConcatDataset([real, Subset(self.data, list(range(self.used)))]) if self.used else real

    def share(self, inputs: _GenerationInputs) -> float:
        return 1.0 if inputs.generation == 0 else max(inputs.real_fraction, self.floor)

    def apply(self, decision: GenerationDecision) -> None:
        if decision.action == "inject":
            self.floor = max(self.floor, decision.real_fraction)
            self.used += decision.reserve_samples


@dataclass
class _RunState:
    """One run's fixed inputs and what it learns on the way (the first model, the generator's name)."""

    seed: int
    real: Dataset
    heldout: Dataset
    n_syn: int
    reserve: _Reserve
    generator: Optional[str]
    first_model: Any = None
