"""Cost benchmark: what collapse_guard adds to a fit, and MixedDataModule's loader against a plain DataLoader.

The fit: an MLP 1024-1024-512-10 (1.6 M parameters, Adam) on 32x32 digits (scikit-learn's 8x8 digits upsampled
bilinearly, flattened): the real DataModule holds 1397 real training digits and 400 validation digits (the
held-out real set); the synthetic source is 18,000 samples of a class-conditional GMM fitted on the real training
digits, upsampled the same way. ``MixedDataModule(real, synthetic, real_fraction=0.3, holdout="val", reserve=0.2)``
with its defaults otherwise (10% of the synthetic data held out, ``samples_per_epoch`` = the training pool, about
17,300 samples), batches of 128, ``torch.set_num_threads(1)``. One epoch takes a few seconds on one core.

Measured in one process. Each repetition runs the variants in palindromic order (guarded, features, mixed, plain,
plain, mixed, features, guarded), so a linear drift of the machine's speed over the repetition (seen here: several
percent over a minute, in CPU time too) cancels in every ratio; a repetition's ratio is the ratio of the two fits'
sums, and the tables give the median over repetitions, on process CPU time (what this process computed: on a
machine shared with other jobs, wall time mostly measures the neighbours) and, for reference, on wall time:

* **fit time**: the fit with ``RatioMonitor()``, ``HeldOutRealCheck()`` and ``CollapseGuard()`` (default
  settings: the held-out check every epoch, on all held-out real data and 512 held-out synthetic samples, without
  feature indicators) against the same fit, same MixedDataModule, without them (goal <= 1.03); the same with the
  opt-in feature indicators, ``HeldOutRealCheck(features=True)``; and, for context, the MixedDataModule fit
  against a plain Lightning fit with no collapse_guard at all (the real and synthetic training data concatenated,
  a shuffled DataLoader, as many batches);
* **loader throughput**: samples per second of ``MixedDataModule.train_dataloader()`` for one epoch against a
  plain shuffled ``DataLoader`` over the same ``ConcatDataset`` of the same samples (goal >= 0.97);
* **where the time goes**: CPU seconds per check inside each callback and each part of the held-out check, for
  the defaults and for ``features=True`` (timed by wrapping the methods in this process; collapse_guard's code is
  unchanged).

Usage::

    python benchmarks/cost.py            # 5 repetitions of 8 3-epoch fits (4 variants twice), 7 of the loader (about 4 min)
    python benchmarks/cost.py --quick    # 2 repetitions of 2-epoch fits
    python benchmarks/cost.py --synthetic 2000 --epochs 1 --repeats 1 --loader-repeats 1   # the smoke size
    python benchmarks/cost.py --task language_model   # the character GRU of benchmarks/_tasks.py (issue 15, ~4 min)
    python benchmarks/cost.py --task language_model --synthetic-samples 512   # the language-model default before "auto"
    python benchmarks/cost.py --task language_model --lm-samples 256 --lm-synthetic 600 --epochs 1 --repeats 1  # smoke
    python benchmarks/cost.py --task attribution   # issue 17: + SourceAudit() + SourceCheck(), two sources (RESULTS.md 9)

The language-model variant (``--task language_model``; RESULTS.md, section 6): the suite's ``CharGRU`` on the
``pydoc`` text (seed 0) mixed at real fraction 0.3 with 6000 windows of the good 5-gram, 8192 windows an epoch,
the held-out real set of the suite (256 windows), ``HeldOutRealCheck()``'s 512 held-out synthetic windows: the
guarded fit against the same fit without callbacks, in palindromic order; the per-check breakdown; and the
attributable ratio (:func:`attributable`: CPU time outside the training epochs), steadier on a loaded machine.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    GOOD_GMM,
    CrossEntropyClassifier,
    SplitsDataModule,
    load_average,
    machine_info,
    quiet,
    trainer_kwargs,
    write_record,
)

from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor  # noqa: E402
from collapse_guard import SourceAudit, SourceCheck  # noqa: E402
from pytorch_lightning import Callback, LightningDataModule, Trainer  # noqa: E402
from collapse_guard.callbacks import features as features_mod  # noqa: E402
from collapse_guard.metrics.classification import ClassificationIndicators  # noqa: E402
from collapse_guard.metrics.diversity import EffectiveRank, VendiScore  # noqa: E402
from collapse_guard.metrics.feature import (  # noqa: E402
    FrechetDistance,
    MaximumMeanDiscrepancy,
    PrecisionRecallDensityCoverage,
    TailMassRatio,
    VarianceRatio,
)
from collapse_guard._digits import split_digits_parts  # noqa: E402
from collapse_guard.loop import ClassConditionalGMM  # noqa: E402

SIDE = 32
HIDDEN = (1024, 512)


def upsample(x: np.ndarray) -> torch.Tensor:
    """8x8 digits (0..16) -> 32x32 floats in [0, 1], flattened to 1024."""
    t = torch.as_tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return F.interpolate(t, size=(SIDE, SIDE), mode="bilinear", align_corners=False).reshape(len(t), -1)


def make_data(n_synthetic: int, seed: int = 0) -> dict:
    parts = split_digits_parts(seed, {"val": 400, "train": None})
    (x_train, y_train), (x_val, y_val) = parts["train"], parts["val"]
    gmm = ClassConditionalGMM(random_state=seed, **GOOD_GMM).fit(x_train, y_train)
    xs, ys = gmm.sample(n_synthetic, rng=seed + 1)
    return {
        "train": TensorDataset(upsample(x_train), torch.as_tensor(y_train)),
        "val": TensorDataset(upsample(x_val), torch.as_tensor(y_val)),
        "synthetic": TensorDataset(upsample(xs), torch.as_tensor(ys)),
    }


class PlainMix(LightningDataModule):
    """What a user without collapse_guard would write: real and synthetic concatenated, shuffled."""

    def __init__(self, dataset, batch_size: int = 128) -> None:
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True)


class MLP(CrossEntropyClassifier):
    def __init__(self, hidden=HIDDEN, lr: float = 1e-3) -> None:
        dims = (SIDE * SIDE, *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        super().__init__(nn.Sequential(*layers, nn.Linear(dims[-1], 10)), lr)


# -- where the time goes: wrap methods with timers (this process only) --------------------------------------------
class Profile:
    """Accumulates seconds per variant and label; ``patch()`` wraps collapse_guard's hooks for the fits that follow,
    which are timed while ``variant`` names one (``None``: not timed)."""

    PASSES = ("held-out real pass (+ feature capture)", "held-out synthetic pass", "training-synthetic feature pass")

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._pass_index = 0
        self._originals: list = []
        self.variant: Optional[str] = None

    def _wrap(self, owner, name: str, label, reset_pass: bool = False) -> None:
        original = getattr(owner, name)
        profile = self

        @functools.wraps(original)
        def timed(*args, **kwargs):
            variant = profile.variant
            if variant is None:
                return original(*args, **kwargs)
            if reset_pass:
                profile._pass_index = 0
            key = label() if callable(label) else label
            t0 = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                profile.seconds[variant][key] += time.process_time() - t0
                profile.calls[variant][key] += 1

        self._originals.append((owner, name, original))
        setattr(owner, name, timed)

    def _next_pass(self) -> str:
        label = self.PASSES[min(self._pass_index, len(self.PASSES) - 1)]
        self._pass_index += 1
        return label

    def patch(self) -> "Profile":
        self._wrap(HeldOutRealCheck, "on_train_epoch_end", "HeldOutRealCheck (total)", reset_pass=True)
        self._wrap(HeldOutRealCheck, "_pass", self._next_pass)
        self._wrap(features_mod.FeatureIndicators, "compute", "feature indicators: compute (k-NN, Fréchet, MMD, Vendi)")
        self._wrap(features_mod.FeatureIndicators, "update", "feature indicators: update (inside the passes)")
        for cls in (PrecisionRecallDensityCoverage, FrechetDistance, MaximumMeanDiscrepancy, VarianceRatio,
                    TailMassRatio, VendiScore, EffectiveRank):
            self._wrap(cls, "compute", f"  of which {cls.__name__}.compute")
        self._wrap(ClassificationIndicators, "compute", "classification indicators: compute")
        self._wrap(RatioMonitor, "on_train_epoch_end", "RatioMonitor")
        self._wrap(CollapseGuard, "on_train_epoch_end", "CollapseGuard")
        self._wrap(MixedDataModule, "setup", "MixedDataModule.setup (splits, holdout digests)")
        self._wrap(MixedDataModule, "on_after_batch_transfer", "MixedDataModule.on_after_batch_transfer (counts)")
        return self

    def order(self, variant: str) -> list[str]:
        """Labels in reading order: the check, its passes, its metrics, then the other callbacks and the data."""
        seconds = self.seconds[variant]
        labels = ["HeldOutRealCheck (total)", *self.PASSES, "feature indicators: update (inside the passes)",
                  "feature indicators: compute (k-NN, Fréchet, MMD, Vendi)"]
        labels += sorted((k for k in seconds if k.startswith("  of which")), key=lambda k: -seconds[k])
        labels += ["classification indicators: compute", "RatioMonitor", "CollapseGuard",
                   "MixedDataModule.on_after_batch_transfer (counts)", "MixedDataModule.setup (splits, holdout digests)"]
        return labels

    def unpatch(self) -> None:
        for owner, name, original in reversed(self._originals):
            setattr(owner, name, original)
        self._originals.clear()


class EpochTimer(Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.process_time()

    def on_train_epoch_end(self, trainer, pl_module):  # called before the collapse_guard hooks: training only
        self.seconds.append(time.process_time() - self._t0)


# -- the fits ---------------------------------------------------------------------------------------------------
#: the guarded variants whose time is broken down, and the key of their breakdown in the record
PROFILED = {"guarded": "breakdown", "guarded_features": "breakdown_features"}

def mixed_dm(data: dict, args) -> MixedDataModule:
    return MixedDataModule(real=SplitsDataModule(data, args.batch_size), synthetic={"gmm": data["synthetic"]},
                           real_fraction=args.real_fraction, holdout="val", reserve=0.2, seed=0)


def fit(variant: str, data: dict, args, profile: Profile, make_dm=mixed_dm, make_model=None) -> dict:
    """One fit of ``variant`` (``make_dm(data, args)`` and ``make_model()``: the digits' MixedDataModule and MLP)."""
    torch.manual_seed(0)
    timer = EpochTimer()
    if variant == "plain":
        dm = PlainMix(ConcatDataset([data["train"], data["synthetic"]]), args.batch_size)
        callbacks = [timer]
    else:
        dm = make_dm(data, args)
        callbacks = [timer]
        if variant == "guarded":
            check = HeldOutRealCheck(**getattr(args, "check_kwargs", {}))
            callbacks += [RatioMonitor(), check, CollapseGuard(verbose=False)]
        elif variant == "guarded_features":
            callbacks += [RatioMonitor(), HeldOutRealCheck(features=True), CollapseGuard(verbose=False)]
        elif variant == "attributed":  # issue 17: the default check with the attribution producers
            callbacks += [RatioMonitor(), HeldOutRealCheck(), SourceAudit(), SourceCheck(), CollapseGuard(verbose=False)]
    kwargs = trainer_kwargs(args.epochs)
    kwargs["limit_train_batches"] = args.batches  # every variant trains on exactly the same number of batches
    trainer = Trainer(callbacks=callbacks, **kwargs)
    profile.variant = variant if variant in PROFILED or variant == "attributed" else None
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit((make_model or MLP)(), datamodule=dm)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    profile.variant = None
    return {"seconds": seconds, "cpu_seconds": cpu, "epoch_seconds": timer.seconds}


def loader_epoch(loader) -> tuple[float, float, int]:
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for x, _ in loader:
        n += len(x)
    return time.perf_counter() - t0, time.process_time() - c0, n


def loaders(data: dict, args):
    dm = mixed_dm(data, args)
    dm.setup("fit")
    mixed = dm.train_dataloader()
    n_batches = len(mixed)
    plain_set = dm.train_set  # the same ConcatDataset of the same samples
    plain = DataLoader(plain_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                       collate_fn=mixed.collate_fn)
    plain_batches = len(plain)
    return mixed, plain, n_batches, plain_batches


def ratios(fits: dict, a: str, b: str, key: str) -> dict:
    """Per repetition: the sum of ``a``'s two fits over the sum of ``b``'s; their median."""
    sums = {v: [fits[v][i][key] + fits[v][i + 1][key] for i in range(0, len(fits[v]), 2)] for v in (a, b)}
    values = [x / y for x, y in zip(sums[a], sums[b])]
    return {"median": float(np.median(values)), "all": values}


def prepare(args, make_dm) -> tuple:
    """One torch thread, quiet logs; the load before, the start time, the data and its set-up datamodule
    (``make_dm(data, args)``); ``args.batches`` set to the batches of an epoch."""
    quiet()
    torch.set_num_threads(1)
    load_before = load_average()
    t_start = time.perf_counter()
    data = make_data(args.synthetic)
    dm = make_dm(data, args)
    dm.setup("fit")
    args.batches = len(dm.train_dataloader())
    return load_before, t_start, data, dm


def run(args) -> dict:
    load_before, t_start, data, dm = prepare(args, mixed_dm)
    batches_per_epoch = args.batches
    config = {
        "model": f"MLP {SIDE * SIDE}-{'-'.join(map(str, HIDDEN))}-10 ({sum(p.numel() for p in MLP().parameters()):,} "
                 "parameters), Adam 1e-3",
        "real_train": len(data["train"]), "heldout_real": len(data["val"]), "synthetic": len(data["synthetic"]),
        "heldout_synthetic": len(dm.heldout_synthetic) if dm.heldout_synthetic is not None else 0,
        "reserve": dm.reserve_size, "samples_per_epoch": dm.epoch_size,
        "batch_size": args.batch_size, "batches_per_epoch": batches_per_epoch, "epochs": args.epochs,
        "real_fraction": args.real_fraction, "repeats": args.repeats, "loader_repeats": args.loader_repeats,
        "torch_threads": torch.get_num_threads(),
    }
    profile = Profile().patch()
    variants = ["guarded", "guarded_features", "mixed", "plain"]
    fits: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        for rep in range(args.repeats):
            for variant in variants + variants[::-1]:  # palindromic: a linear drift cancels in every ratio
                fits[variant].append(fit(variant, data, args, profile))
    finally:
        profile.unpatch()

    fit_ratios = {f"{a}/{b}": {"cpu": ratios(fits, a, b, "cpu_seconds"), "wall": ratios(fits, a, b, "seconds")}
                  for a, b in (("guarded", "mixed"), ("guarded_features", "mixed"), ("mixed", "plain"),
                               ("guarded", "plain"))}

    mixed_loader, plain_loader, n_mixed, n_plain = loaders(data, args)
    tput: dict[str, dict[str, list[float]]] = {"mixed": {"cpu": [], "wall": []}, "plain": {"cpu": [], "wall": []}}
    loader_order = [("mixed", mixed_loader), ("plain", plain_loader)]
    for rep in range(args.loader_repeats):
        for name, loader in (loader_order if rep % 2 == 0 else loader_order[::-1]):
            wall, cpu, n = loader_epoch(loader)
            tput[name]["wall"].append(n / wall)
            tput[name]["cpu"].append(n / cpu)
    loader_ratio = {}
    for clock in ("cpu", "wall"):
        values = [m / p for m, p in zip(tput["mixed"][clock], tput["plain"][clock])]
        loader_ratio[clock] = {"median": float(np.median(values)), "all": values}

    mixed_epoch = float(np.median([s for f in fits["mixed"] for s in f["epoch_seconds"]]))
    fit_mixed = float(np.median([f["cpu_seconds"] for f in fits["mixed"]]))
    breakdowns = {}
    for variant, record_key in PROFILED.items():
        seconds, calls = profile.seconds[variant], profile.calls[variant]
        checks = max(1, sum(1 for f in fits[variant] for _ in f["epoch_seconds"]))  # one check per epoch
        order = profile.order(variant)
        breakdown = {k: {"seconds_per_check": v / checks, "share_of_training_epoch": v / checks / mixed_epoch,
                         "calls": calls[k]}
                     for k, v in sorted(seconds.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                                       else len(order), -kv[1]))}
        setup_key = "MixedDataModule.setup (splits, holdout digests)"
        if setup_key in breakdown:  # once per fit, not per check
            v = seconds[setup_key] / len(fits[variant])
            breakdown[setup_key] = {"seconds_per_fit": v, "share_of_fit": v / fit_mixed, "calls": calls[setup_key]}
        breakdowns[record_key] = breakdown
    return {
        "config": config,
        "fits": fits,
        "fit_ratios": fit_ratios,
        "training_epoch_seconds_median": {v: float(np.median([s for f in fits[v] for s in f["epoch_seconds"]]))
                                          for v in variants},
        "loader": {"batches": {"mixed": n_mixed, "plain": n_plain},
                   "samples_per_second": {k: {c: float(np.median(x)) for c, x in v.items()} for k, v in tput.items()},
                   "ratio_mixed_vs_plain": loader_ratio},
        **breakdowns,
        "seconds": time.perf_counter() - t_start,
        "machine": {**machine_info(), "loadavg_before": load_before, "loadavg_after": load_average()},
    }


# -- the attribution variant (issue 17) -------------------------------------------------------------------------
def two_source_dm(data: dict, args) -> MixedDataModule:
    """The digits' MixedDataModule with the synthetic samples as two sources of equal weight (halves)."""
    x, y = data["synthetic"].tensors
    half = len(x) // 2
    sources = {"gen_a": TensorDataset(x[:half], y[:half]), "gen_b": TensorDataset(x[half:], y[half:])}
    return MixedDataModule(real=SplitsDataModule(data, args.batch_size), synthetic=sources,
                           synthetic_weights={"gen_a": 1.0, "gen_b": 1.0}, real_fraction=args.real_fraction,
                           holdout="val", reserve=0.2, seed=0)


def run_attribution(args) -> dict:
    """``RatioMonitor() + HeldOutRealCheck() + SourceAudit() + SourceCheck() + CollapseGuard()`` against the same
    fit without callbacks, on the digits with two synthetic sources, in palindromic order; the attribution
    producers' CPU seconds (``SourceAudit.setup`` per fit, ``SourceCheck`` per check)."""
    load_before, t_start, data, dm = prepare(args, two_source_dm)
    profile = Profile()
    profile._wrap(SourceAudit, "setup", "SourceAudit.setup (per fit)")
    profile._wrap(SourceCheck, "on_train_epoch_end", "SourceCheck (per check)")
    profile._wrap(HeldOutRealCheck, "on_train_epoch_end", "HeldOutRealCheck (per check)")
    profile._wrap(CollapseGuard, "on_train_epoch_end", "CollapseGuard (per check)")
    variants = ["attributed", "mixed"]
    fits: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        for _ in range(args.repeats):
            for variant in variants + variants[::-1]:
                fits[variant].append(fit(variant, data, args, profile, make_dm=two_source_dm))
    finally:
        profile.unpatch()
    fit_ratios = {"attributed/mixed": {"cpu": ratios(fits, "attributed", "mixed", "cpu_seconds"),
                                       "wall": ratios(fits, "attributed", "mixed", "seconds")}}
    checks = max(1, sum(len(f["epoch_seconds"]) for f in fits["attributed"]))
    epoch = float(np.median([s for f in fits["mixed"] for s in f["epoch_seconds"]]))
    seconds = profile.seconds["attributed"]
    breakdown = {k: (v / len(fits["attributed"]) if "per fit" in k else v / checks) for k, v in seconds.items()}
    return {
        "config": {"sources": {"gen_a": len(data["synthetic"]) // 2, "gen_b": len(data["synthetic"]) - len(data["synthetic"]) // 2},
                   "samples_per_epoch": dm.epoch_size, "batches_per_epoch": args.batches, "batch_size": args.batch_size,
                   "epochs": args.epochs, "repeats": args.repeats, "real_fraction": args.real_fraction,
                   "torch_threads": torch.get_num_threads()},
        "fits": fits, "fit_ratios": fit_ratios, "training_epoch_seconds_median": epoch, "breakdown": breakdown,
        "seconds": time.perf_counter() - t_start,
        "machine": {**machine_info(), "loadavg_before": load_before, "loadavg_after": load_average()},
    }


def report_attribution(r: dict) -> str:
    c, d = r["config"], r["fit_ratios"]["attributed/mixed"]
    met = "yes" if d["cpu"]["median"] <= 1.03 else "no"
    m = r["machine"]
    lines = [f"Digits MLP as the default cost fit, the synthetic samples as two sources of equal weight "
             f"({c['sources']}); {c['samples_per_epoch']:,} samples per epoch, {c['epochs']} epochs, {c['repeats']} "
             "repetitions in palindromic order, one torch thread.", "",
             "| measure | CPU-time ratio (runs) | wall-time ratio (runs) | goal | met (CPU) |", "|---|---|---|---|---|",
             f"| fit, RatioMonitor + HeldOutRealCheck + SourceAudit + SourceCheck + CollapseGuard (defaults) / same fit "
             f"without callbacks | {d['cpu']['median']:.3f} ({_runs(d['cpu']['all'])}) | {d['wall']['median']:.3f} "
             f"({_runs(d['wall']['all'])}) | ≤ 1.03 | {met} |", "",
             f"CPU seconds of a training epoch without callbacks (median): {r['training_epoch_seconds_median']:.2f}; "
             "CPU seconds inside each callback: " + ", ".join(f"{k} {v:.3f}" for k, v in r["breakdown"].items()) + ".",
             "", f"wall time {r['seconds']:.0f} s; {m['nproc']} cores, {m['cpu']}, load average before "
             f"{m['loadavg_before']}, after {m['loadavg_after']}; torch {m['torch']}, Lightning {m['lightning']}."]
    return "\n".join(lines)


# -- the language-model variant (issue 15) ----------------------------------------------------------------------
def text_dm(data, args) -> MixedDataModule:
    return MixedDataModule(real=SplitsDataModule(data.tensors, args.lm_batch_size), synthetic={"ngram": data.synthetic},
                           real_fraction=args.real_fraction, holdout="val", reserve=0.2,
                           samples_per_epoch=args.lm_samples, seed=0)


def run_language_model(args) -> dict:
    """The suite's character GRU (``_tasks.CharGRU``) on ``pydoc`` (seed 0) mixed with the good 5-gram's windows:
    the fit with ``RatioMonitor()``, ``HeldOutRealCheck()`` and ``CollapseGuard()`` (the task inferred) against the
    same fit without them, in palindromic order (guarded, mixed, mixed, guarded) per repetition."""
    import _tasks
    from collapse_guard.metrics.language_model import LanguageModelIndicators

    quiet()
    torch.set_num_threads(1)
    load_before, t_start = load_average(), time.perf_counter()
    data = _tasks.TextData("pydoc", 0)
    data.synthetic = _tasks.window_dataset(_tasks.CharNGram(5).fit(*data.train).sample(args.lm_synthetic,
                                                                                      np.random.default_rng(1))[0])
    dm = text_dm(data, args)
    dm.setup("fit")
    args.batches = len(dm.train_dataloader())
    config = {"model": f"CharGRU ({sum(p.numel() for p in _tasks.CharGRU().parameters()):,} parameters), Adam 5e-3",
              "windows": f"{_tasks.WINDOW} characters", "real_train": len(data.tensors["train"]),
              "heldout_real": len(data.tensors["val"]), "synthetic": len(data.synthetic),
              "heldout_synthetic": len(dm.heldout_synthetic) if dm.heldout_synthetic is not None else 0,
              "samples_per_epoch": dm.epoch_size, "batch_size": args.lm_batch_size, "batches_per_epoch": args.batches,
              "epochs": args.epochs, "real_fraction": args.real_fraction, "repeats": args.repeats,
              "torch_threads": torch.get_num_threads(), "check": f"HeldOutRealCheck({_kwargs(args)})"}
    profile = Profile().patch()
    profile._wrap(LanguageModelIndicators, "compute", "language-model indicators: compute")
    fits: dict[str, list[dict]] = {"guarded": [], "mixed": []}
    try:
        for _ in range(args.repeats):
            for variant in ("guarded", "mixed", "mixed", "guarded"):
                fits[variant].append(fit(variant, data, args, profile, text_dm, _tasks.CharGRU))
    finally:
        profile.unpatch()
    checks = max(1, sum(len(f["epoch_seconds"]) for f in fits["guarded"]))
    epoch = float(np.median([s for f in fits["mixed"] for s in f["epoch_seconds"]]))
    seconds = profile.seconds["guarded"]
    return {"task": "language_model", "config": config, "fits": fits,
            "fit_ratios": {"guarded/mixed": {c: ratios(fits, "guarded", "mixed", k)
                                             for c, k in (("cpu", "cpu_seconds"), ("wall", "seconds"))}},
            "training_epoch_seconds_median": epoch,
            "breakdown": {k: {"seconds_per_check": v / checks, "share_of_training_epoch": v / checks / epoch}
                          for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])
                          if not k.startswith("MixedDataModule.setup")},
            "seconds": time.perf_counter() - t_start,
            "machine": {**machine_info(), "loadavg_before": load_before, "loadavg_after": load_average()}}


def attributable(fits: dict) -> float:
    """1 + the CPU time the guarded fits spend outside their training epochs (checks, set-up), beyond the unguarded
    fits', over an unguarded fit's CPU time: the callbacks' cost without the epochs' own spread (on a loaded machine
    the training epochs of identical fits differ by 10-20% in CPU time, which the fit ratio reads as cost)."""
    outside = {v: np.mean([f["cpu_seconds"] - sum(f["epoch_seconds"]) for f in fits[v]]) for v in ("guarded", "mixed")}
    return float(1 + (outside["guarded"] - outside["mixed"]) / np.mean([f["cpu_seconds"] for f in fits["mixed"]]))


def _kwargs(args) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in getattr(args, "check_kwargs", {}).items())


def report_language_model(r: dict) -> str:
    c, ratio, m = r["config"], r["fit_ratios"]["guarded/mixed"], r["machine"]
    lines = [f"Language model: {c['model']}; {c['samples_per_epoch']:,} windows of {c['windows']} an epoch "
             f"({c['batches_per_epoch']} batches of {c['batch_size']}), real fraction {c['real_fraction']}; held-out "
             f"real {c['heldout_real']} windows, held-out synthetic {c['heldout_synthetic']}; {c['epochs']} epochs a "
             f"fit, {c['repeats']} repetitions (guarded, mixed, mixed, guarded), {c['torch_threads']} torch thread; "
             f"{c.get('check', 'HeldOutRealCheck()')}.", "",
             "| measure | CPU-time ratio (runs) | wall-time ratio (runs) | goal | met (CPU) |", "|---|---|---|---|---|",
             f"| fit, RatioMonitor + HeldOutRealCheck + CollapseGuard (defaults, task inferred) / same fit without "
             f"them | {ratio['cpu']['median']:.3f} ({_runs(ratio['cpu']['all'])}) | {ratio['wall']['median']:.3f} "
             f"({_runs(ratio['wall']['all'])}) | ≤ 1.03 | {'yes' if ratio['cpu']['median'] <= 1.03 else 'no'} |",
             f"| the same, CPU time outside the training epochs only (attributable) | {attributable(r['fits']):.3f} | — | "
             f"≤ 1.03 | {'yes' if attributable(r['fits']) <= 1.03 else 'no'} |", "",
             f"CPU seconds of the training part of an epoch (median, without callbacks): "
             f"{r['training_epoch_seconds_median']:.2f}. Per check (CPU seconds; share of that epoch):", ""]
    lines += [f"- {k}: {v['seconds_per_check']:.3f} ({100 * v['share_of_training_epoch']:.2f}%)"
              for k, v in r["breakdown"].items()]
    lines += ["", f"wall time {r['seconds']:.0f} s; {m['nproc']} cores, {m['cpu']}, load average before "
              f"{m['loadavg_before']}, after {m['loadavg_after']}; torch {m['torch']}, Lightning {m['lightning']}; "
              f"collapse_guard {m['collapse_guard']}."]
    return "\n".join(lines)


def _runs(values: list[float]) -> str:
    return ", ".join(f"{x:.3f}" for x in values)


def report(r: dict) -> str:
    c, fr, loader = r["config"], r["fit_ratios"], r["loader"]

    def row(label: str, d: dict, goal: str = "—", ok=None) -> str:
        met = "—" if ok is None else ("yes" if ok(d["cpu"]["median"]) else "no")
        return (f"| {label} | {d['cpu']['median']:.3f} ({_runs(d['cpu']['all'])}) | {d['wall']['median']:.3f} "
                f"({_runs(d['wall']['all'])}) | {goal} | {met} |")

    lines = [
        f"Model: {c['model']}; {c['samples_per_epoch']:,} samples per epoch ({c['batches_per_epoch']} batches of "
        f"{c['batch_size']}), real fraction {c['real_fraction']}; held-out real {c['heldout_real']}, held-out "
        f"synthetic {c['heldout_synthetic']}; {c['epochs']} epochs per fit, {c['repeats']} repetitions of the 4 "
        "variants in palindromic order (each variant twice per repetition), "
        f"{c['torch_threads']} torch thread. Ratios: median over repetitions of the ratio of the two fits' sums, on "
        "process CPU time (what this process computed; robust to other jobs on the machine) and on wall time.",
        "",
        "| measure | CPU-time ratio (runs) | wall-time ratio (runs) | goal | met (CPU) |",
        "|---|---|---|---|---|",
        row("fit, RatioMonitor + HeldOutRealCheck + CollapseGuard (defaults) / same fit without them",
            fr["guarded/mixed"], "≤ 1.03", lambda x: x <= 1.03),
        row("fit, the same with HeldOutRealCheck(features=True) (opt-in) / same fit without them",
            fr["guarded_features/mixed"]),
        row("MixedDataModule loader / plain DataLoader, samples per second", loader["ratio_mixed_vs_plain"], "≥ 0.97",
            lambda x: x >= 0.97),
        row("context: MixedDataModule fit without callbacks / plain Lightning fit", fr["mixed/plain"]),
        row("context: guarded fit (defaults) / plain Lightning fit", fr["guarded/plain"]),
        "",
    ]
    secs = {v: np.median([f["seconds"] for f in fs]) for v, fs in r["fits"].items()}
    epoch = r["training_epoch_seconds_median"]
    sps = loader["samples_per_second"]
    lines += [
        "Fit wall seconds (median): " + ", ".join(f"{v} {s:.2f}" for v, s in secs.items())
        + "; CPU seconds of the training part of an epoch (median): " + ", ".join(f"{v} {s:.2f}" for v, s in epoch.items())
        + f". Loader: {sps['mixed']['wall']:,.0f} vs {sps['plain']['wall']:,.0f} samples/s wall "
        f"({loader['batches']['mixed']} vs {loader['batches']['plain']} batches per epoch).",
        "",
        "Where the time goes (CPU seconds inside each part, guarded fits with the defaults and with "
        "HeldOutRealCheck(features=True); one check per epoch; share of the CPU time of a training epoch without "
        "callbacks):",
        "",
        "| part | defaults: seconds | share | features=True: seconds | share |",
        "|---|---|---|---|---|",
    ]
    parts = [r["breakdown"], r["breakdown_features"]]
    labels = list(parts[1]) + [k for k in parts[0] if k not in parts[1]]
    labels.sort(key=lambda k: k == "MixedDataModule.setup (splits, holdout digests)")  # stable: the fit's part last

    def cells(v: Optional[dict]) -> str:
        if v is None:
            return "— | —"
        if "seconds_per_fit" in v:
            return f"{v['seconds_per_fit']:.3f} per fit | {100 * v['share_of_fit']:.2f}% of the fit"
        return f"{v['seconds_per_check']:.3f} per check | {100 * v['share_of_training_epoch']:.2f}%"

    for k in labels:
        lines.append(f"| {k} | {cells(parts[0].get(k))} | {cells(parts[1].get(k))} |")
    m = r["machine"]
    lines += ["", f"wall time {r['seconds']:.0f} s; {m['nproc']} cores, {m['cpu']}, load average before "
              f"{m['loadavg_before']}, after {m['loadavg_after']}; torch {m['torch']}, Lightning {m['lightning']}."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 repetitions of 2-epoch fits, 5 loader repetitions")
    p.add_argument("--synthetic", type=int, default=18_000, help="synthetic samples")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--loader-repeats", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--real-fraction", type=float, default=0.3)
    p.add_argument("--json", default=None, help="where to write the full record (default runs/bench/cost.json, "
                   "runs/bench/cost_language_model.json with --task language_model; '': nowhere)")
    p.add_argument("--task", default="classification", choices=("classification", "language_model", "attribution"),
                   help="the digits MLP (default), the suite's character GRU on pydoc (issue 15), or the digits MLP "
                   "with two synthetic sources and SourceAudit + SourceCheck (issue 17; only that ratio)")
    p.add_argument("--lm-samples", type=int, default=8192, help="language model: windows an epoch")
    p.add_argument("--lm-synthetic", type=int, default=6000, help="language model: 5-gram windows")
    p.add_argument("--lm-batch-size", type=int, default=32)
    p.add_argument("--synthetic-samples", type=int, default=None,
                   help="HeldOutRealCheck(synthetic_samples=N) in the guarded fit (default: the check's default)")
    args = p.parse_args(argv)
    args.check_kwargs = {} if args.synthetic_samples is None else {"synthetic_samples": args.synthetic_samples}
    lm = args.task == "language_model"
    args.epochs = args.epochs or (1 if args.quick and lm else 2 if args.quick or lm else 3)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.loader_repeats = args.loader_repeats or (5 if args.quick else 7)
    if args.task == "attribution":
        result = run_attribution(args)
        print(report_attribution(result))
        write_record(result, "runs/bench/cost_attribution.json" if args.json is None else args.json)
        return result
    if args.json is None:
        args.json = "runs/bench/cost_language_model.json" if lm else "runs/bench/cost.json"
    result = run_language_model(args) if lm else run(args)
    print(report_language_model(result) if lm else report(result))
    write_record(result, args.json)
    return result


if __name__ == "__main__":
    main()
