"""Detection benchmark: does collapse_guard catch collapse on real data, without false alarms, before the
alternatives a user would reach for instead? And does its injection save the fit?

Digits: every run trains the demo's digit classifier (MLP 64-128-10, Adam 5e-3, batches of 64, 1920 samples per
epoch) on scikit-learn's real digits split as in the demo (900 real training digits, 30% of them kept back as the
reserve; 360 held-out real digits, the guard's validation set; 537 real test digits no detector ever sees;
``--heldout N`` moves N - 360 of the training digits to the held-out set).
Healthy training first: 90% real for epochs 0-3; then the real share falls linearly to 0 at epoch 8 (to 10% for
``accumulate``) and training goes on to epoch 13. The synthetic source differs per scenario: it collapses in a
different way (variance shrink, tail truncation, mode loss, label noise, a label-leaking artifact, a one-pixel
offset, recursive ``replace``) or it is healthy (a well-fitted generator, an ``accumulate`` chain, real data only).

Text (``benchmarks/_text.py``): topic classification of 96-character snippets of Python's own help texts
(``pydoc_data.topics``, 6 topics, 627 training / 250 held-out / 377 test snippets per seed; MLP over hashed
character n-grams), the same schedule; synthetic snippets from per-topic character 3-gram models, generation 1
(healthy) or generations 10, 20, 30 of a ``replace`` chain.

Ground truth of a run: the first check (epoch end) from which the accuracy on the unseen real test set stays
``margin`` or more below its best before that check, to the end of the run (a dip that recovers is not a
collapse); a run without one is healthy, whatever its scenario. The margin is 2 points for digits and 5 for text
(about 2.5 standard errors of each test set: 537 digits at 96%, 377 snippets at 67%).

All detectors watch the same trajectory in observe mode (they record when they would act; nothing acts):

* ``collapse_guard``: ``RatioMonitor()`` + ``HeldOutRealCheck()`` + ``CollapseGuard()`` with the default rules
  (observed with ``action="warn"``, which fires exactly when the default ``"inject"`` would);
* ``ES(held-out real loss)``: Lightning ``EarlyStopping`` (defaults: patience 3, min_delta 0) on the cross-entropy
  of the held-out real data;
* ``ES(mixed val loss)``: ``EarlyStopping`` on the loss of a validation split of the mixed stream (held-out real
  and held-out synthetic data weighted by the epoch's real share), the usual validation loss of such a fit;
* ``MMD drift, inputs`` / ``MMD drift, features``: a kernel MMD two-sample permutation test (torchdrift's
  ``KernelMMDDriftDetector``, 100 permutations; our own permutation test on
  ``collapse_guard.metrics.functional.maximum_mean_discrepancy`` when torchdrift is not installed) between 250
  held-out real samples and 250 samples of the epoch's training stream, on the inputs (pixels; n-gram features) or
  on the model's penultimate features; fires at p < 0.05.

Then, per scenario, the fit with ``CollapseGuard()`` acting (default ``"inject"``) against real-only training and
the unguarded mixed fit (the observed run): final real test accuracy and the real share trained on.

Usage::

    python benchmarks/detection.py            # 12 scenarios x 9 seeds, mitigation included (about 12 min on 2 cores)
    python benchmarks/detection.py --quick    # 1 seed (about 1.5 min)
    python benchmarks/detection.py --scenarios mode_loss,pure_real --seeds 0 --epochs 6 --no-mitigation
    python benchmarks/detection.py --heldout 540 --permutations 0 --no-mitigation   # a larger held-out real set
    python benchmarks/detection.py --multi-source --datasets digits,wine --seeds 0,1 --jobs 2   # issue 17 (section 9)

``--multi-source`` runs the multi-source attribution benchmark of ``benchmarks/_multisource.py`` instead (a good and
a harmful synthetic source, or two good ones, per fit; RESULTS.md, section 9).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    write_record,
    DIGITS_HELDOUT,
    SCENARIOS,
    TASKS,
    WARMUP_EPOCHS,
    Task,
    build_scenario,
    machine_info,
    median,
    quiet,
    trainer_kwargs,
)

from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor, default_rules  # noqa: E402
from collapse_guard.callbacks.rules import RuleState  # noqa: E402
from collapse_guard.callbacks.features import penultimate_features  # noqa: E402

from pytorch_lightning import Callback, Trainer  # noqa: E402
from pytorch_lightning.callbacks import EarlyStopping  # noqa: E402

#: the seeds the default rules were chosen on (``CollapseGuard``'s ``sigmas=2.0``); other seeds are fresh
TUNING_SEEDS = (0, 1, 2, 3, 4, 5)

DETECTORS = ("collapse_guard", "ES(held-out real loss)", "ES(mixed val loss)", "MMD drift, inputs", "MMD drift, features")

CONFIG = {
    "epochs": 14,
    "batch_size": 64,
    "lr": 5e-3,
    "samples_per_epoch": 1920,
    "reserve": 0.3,
    "drift_samples": 250,
    "drift_permutations": 100,
    "drift_alpha": 0.05,
}


# -- the kernel two-sample test ---------------------------------------------------------------------------------
def drift_backend() -> str:
    try:
        import torchdrift  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means: use ours
        return "ours"
    return "torchdrift"


def mmd_p_value(reference: torch.Tensor, test: torch.Tensor, permutations: int, seed: int, backend: str) -> float:
    """p-value of a kernel MMD permutation test (Gaussian kernel, median-heuristic bandwidth)."""
    with torch.random.fork_rng(devices=[]):  # the test's permutations must not move the fit's random state
        torch.manual_seed(seed)
        if backend == "torchdrift":
            from torchdrift.detectors import KernelMMDDriftDetector

            detector = KernelMMDDriftDetector(return_p_value=True, n_perm=permutations)
            detector.fit(reference)
            return float(detector(test))
        # ours: the same test on collapse_guard's unbiased MMD^2, the bandwidth fixed on the pooled samples
        from collapse_guard.metrics.functional import maximum_mean_discrepancy

        pooled = torch.cat([reference, test]).double()
        bandwidth = float(torch.cdist(pooled, pooled).median())
        n = len(reference)
        observed = maximum_mean_discrepancy(pooled[:n], pooled[n:], bandwidth=bandwidth)
        count = 0
        for _ in range(permutations):
            perm = torch.randperm(len(pooled))
            count += int(maximum_mean_discrepancy(pooled[perm[:n]], pooled[perm[n:]], bandwidth=bandwidth) > observed)
        return count / permutations


# -- observers --------------------------------------------------------------------------------------------------
class ObservedEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping``, recording the first epoch it would stop at without stopping."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fired_at: Optional[int] = None

    def _run_early_stopping_check(self, trainer) -> None:
        before = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if trainer.should_stop and not before and self.fired_at is None:
            self.fired_at = trainer.current_epoch
        trainer.should_stop = before


class Probe(Callback):
    """At every epoch end: the unseen real test accuracy (ground truth), the losses the EarlyStopping alternatives
    monitor, the drift tests; and a copy of every logged ``collapse/`` value. Runs without gradients in eval mode
    and leaves the fit's random state and the datamodule's counts alone."""

    def __init__(self, test: tuple, cfg: dict, drift: bool, backend: str, seed: int) -> None:
        self.test_x, self.test_y = test
        self.cfg, self.drift, self.backend, self.seed = cfg, drift, backend, seed
        self.rows: list[dict] = []

    @staticmethod
    def _tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(dataset[i] for i in range(len(dataset))))
        return torch.stack(xs), torch.stack(ys)

    def setup(self, trainer, pl_module, stage):
        dm = trainer.datamodule
        self.real = self._tensors(dm.heldout_real)
        self.synth = self._tensors(dm.heldout_synthetic) if dm.heldout_synthetic is not None else None

    @torch.no_grad()
    def on_train_epoch_end(self, trainer, pl_module):
        was_training = pl_module.training
        pl_module.eval()
        dm, epoch = trainer.datamodule, trainer.current_epoch
        row = {"epoch": epoch}
        row["test_acc"] = float((pl_module(self.test_x).argmax(-1) == self.test_y).float().mean())
        real_logits = pl_module(self.real[0])
        real_loss = float(F.cross_entropy(real_logits, self.real[1]))
        # which held-out real samples the model gets right, as a string of 0/1 (for paired replays of a rule)
        row["heldout_correct"] = "".join("01"[int(c)] for c in (real_logits.argmax(-1) == self.real[1]).tolist())
        fraction = dm.current_real_fraction(epoch)
        mixed = real_loss
        if self.synth is not None:
            mixed = fraction * real_loss + (1 - fraction) * float(F.cross_entropy(pl_module(self.synth[0]), self.synth[1]))
        row.update(heldout_real_loss=real_loss, mixed_val_loss=mixed, real_fraction_target=fraction)
        if self.drift:
            n = self.cfg["drift_samples"]
            stream = dm.mixer.plan.batches.flatten()[:n].tolist()  # the epoch's training samples, already shuffled
            test_x = torch.stack([dm.train_set[i][0] for i in stream])
            ref_x = self.real[0][:n]
            with penultimate_features(pl_module) as captured:
                pl_module(ref_x)
                pl_module(test_x)
            seed = self.seed * 1000 + epoch
            args = (self.cfg["drift_permutations"], seed, self.backend)
            row["p_inputs"] = mmd_p_value(ref_x, test_x, *args)
            row["p_features"] = mmd_p_value(captured[0], captured[1], *args)
        pl_module.train(was_training)
        pl_module.log("bench/heldout_real_loss", real_loss)
        pl_module.log("bench/mixed_val_loss", mixed)
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("collapse/")})
        self.rows.append(row)


# -- the fits ---------------------------------------------------------------------------------------------------
def _datamodule(task: Task, data, synthetic, fraction, reserve, cfg, seed) -> MixedDataModule:
    return MixedDataModule(
        real=task.real_dm(data, cfg["batch_size"]),
        synthetic=synthetic,
        real_fraction=fraction,
        holdout="val",
        reserve=reserve,
        samples_per_epoch=cfg["samples_per_epoch"],
        seed=seed,
    )


def _real_share(dm: MixedDataModule) -> float:
    counts = dm.samples_by_source()
    return (counts.get("real", 0) + counts.get("reserve", 0)) / max(1, sum(counts.values()))


def observe_run(scenario: str, seed: int, task: Task, data, synthetic, fraction, cfg: dict, backend: str) -> dict:
    """The mixed fit with every detector observing; nothing acts. Returns the trajectory and each detector's
    first firing epoch."""
    torch.manual_seed(seed)
    dm = _datamodule(task, data, synthetic, fraction, cfg["reserve"], cfg, seed)
    guard = CollapseGuard(action="warn", verbose=False)  # the default rules; "warn" fires when "inject" would
    es_real = ObservedEarlyStopping(monitor="bench/heldout_real_loss", mode="min", check_on_train_epoch_end=True)
    es_mixed = ObservedEarlyStopping(monitor="bench/mixed_val_loss", mode="min", check_on_train_epoch_end=True)
    probe = Probe(task.test(data), cfg, drift=cfg["drift_permutations"] > 0, backend=backend, seed=seed)
    trainer = Trainer(callbacks=[RatioMonitor(), HeldOutRealCheck(), probe, es_real, es_mixed, guard],
                      **trainer_kwargs(cfg["epochs"]))
    t0 = time.perf_counter()
    trainer.fit(task.model(), datamodule=dm)
    rows = probe.rows
    alpha = cfg["drift_alpha"]

    def first(key):
        return next((r["epoch"] for r in rows if key in r and r[key] < alpha), None)

    fired = {
        "collapse_guard": guard.events[0].epoch if guard.events else None,
        "ES(held-out real loss)": es_real.fired_at,
        "ES(mixed val loss)": es_mixed.fired_at,
        "MMD drift, inputs": first("p_inputs"),
        "MMD drift, features": first("p_features"),
    }
    return {
        "scenario": scenario,
        "task": task.name,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
        "margin": task.margin,
        "onset": ground_truth([r["test_acc"] for r in rows], task.margin),
        "fired": fired,
        "guard_events": [{"epoch": e.epoch, "rule": e.rule, "reason": e.reason} for e in guard.events],
        "final_test_acc": rows[-1]["test_acc"],
        "real_share": _real_share(dm),
        "rules": rule_fires(rows),
        "trajectory": rows,
    }


def guarded_run(scenario: str, seed: int, task: Task, data, synthetic, fraction, cfg: dict) -> dict:
    """The same mixed fit with ``CollapseGuard()`` (default rules and action "inject"; ``cfg["guard_kwargs"]``
    overrides, for experiments) acting."""
    torch.manual_seed(seed)
    dm = _datamodule(task, data, synthetic, fraction, cfg["reserve"], cfg, seed)
    guard = CollapseGuard(verbose=False, **cfg.get("guard_kwargs", {}))
    probe = Probe(task.test(data), cfg, drift=False, backend="", seed=seed)
    trainer = Trainer(callbacks=[RatioMonitor(), HeldOutRealCheck(), probe, guard], **trainer_kwargs(cfg["epochs"]))
    trainer.fit(task.model(), datamodule=dm)
    return {
        "scenario": scenario,
        "seed": seed,
        "final_test_acc": probe.rows[-1]["test_acc"],
        "epochs_run": len(probe.rows),
        "real_share": _real_share(dm),
        "actions": [(e.epoch, e.action) for e in guard.events],
    }


def real_only_run(seed: int, task: Task, data, cfg: dict) -> dict:
    """Real training data only (reserve included), as many steps as the mixed fits."""
    torch.manual_seed(seed)
    dm = _datamodule(task, data, None, 1.0, 0.0, cfg, seed)
    probe = Probe(task.test(data), cfg, drift=False, backend="", seed=seed)
    trainer = Trainer(callbacks=[probe], **trainer_kwargs(cfg["epochs"]))
    trainer.fit(task.model(), datamodule=dm)
    return {"seed": seed, "final_test_acc": probe.rows[-1]["test_acc"]}


def ground_truth(test_acc: list[float], margin: float) -> Optional[int]:
    """The collapse onset: the first check from which the real test accuracy stays ``margin`` or more below the
    best of the checks before it, to the end of the run. ``None``: no collapse.

    A dip that recovers is not a collapse: the 537 test digits give each check a standard error of about 0.8
    points, and healthy fits dip by 2 points for an epoch or two when the mix first changes (epoch 4).
    """
    for epoch in range(1, len(test_acc)):
        bound = max(test_acc[:epoch]) - margin + 1e-12
        if all(acc <= bound for acc in test_acc[epoch:]):
            return epoch
    return None


def rule_fires(trajectory: list[dict]) -> dict[str, Optional[int]]:
    """Each default rule alone, replayed on the logged indicators of a run: the first epoch it would fire."""
    out = {}
    for rule in default_rules():
        state, out[rule.label] = RuleState(rule), None
        for row in trajectory:
            stderr = row.get(rule.stderr_key) if rule.stderr_key else None
            if rule.monitor in row and state.judge(row[rule.monitor], stderr).fired:
                out[rule.label] = row["epoch"]
                break
    return out


def describe_rule(rule) -> str:
    """``"1.5 standard errors below best, patience 2"``: a rule's bound in words."""
    bounds = []
    if rule.sigmas is not None:
        bounds.append(f"{rule.sigmas:g} standard errors")
    if rule.relative is not None:
        bounds.append(f"{100 * rule.relative:g}%")
    where = ("below" if rule.mode == "max" else "above") + f" {rule.baseline}"
    text = f"{' or '.join(bounds)} {where}" if bounds else ""
    if rule.threshold is not None:
        text = f"{text}, bound {rule.threshold:g}" if text else f"bound {rule.threshold:g}"
    return f"{text}, patience {rule.patience}"


def rules_table(runs: list[dict]) -> list[str]:
    collapsed = [r for r in runs if r["onset"] is not None]
    healthy = [r for r in runs if r["onset"] is None]
    lines = ["| default rule, alone | collapses detected | false alarms | median delay (checks) |", "|---|---|---|---|"]
    for rule in default_rules():
        name = rule.label
        if any(name not in r["rules"] for r in runs):
            continue  # a record written before this default rule existed (e.g. the non-finite loss rule)
        delays = [r["rules"][name] - r["onset"] for r in collapsed if r["rules"][name] is not None]
        lines.append(f"| {name} (`{rule.monitor}`, {describe_rule(rule)}) | "
                     f"{len(delays)}/{len(collapsed)} | {sum(r['rules'][name] is not None for r in healthy)}/{len(healthy)}"
                     f" | {_fmt_delay(median(delays))} |")
    return lines


# -- the alternatives at the guard's false-alarm rate -------------------------------------------------------------
#: the knobs swept for each alternative, replayed on the logged trajectories
ES_PATIENCE = (1, 2, 3, 4, 5, 6)
ES_MIN_DELTA = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
MMD_ALPHA = (0.05, 0.02, 0.01)
MMD_RUNS = (1, 2, 3, 4)


def replay_early_stopping(losses: list[float], patience: int, min_delta: float) -> Optional[int]:
    """The first epoch Lightning's ``EarlyStopping(mode="min", patience, min_delta)`` would stop at: a check
    improves when ``loss < best - min_delta``; ``patience`` checks in a row without improvement stop training.
    (``ES(... patience 3, min_delta 0)`` replayed this way gives the epochs the callback itself recorded.)"""
    best, wait = float("inf"), 0
    for epoch, loss in enumerate(losses):
        if loss < best - min_delta:
            best, wait = loss, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


def replay_drift(p_values: list[Optional[float]], alpha: float, runs: int) -> Optional[int]:
    """The first epoch ending ``runs`` consecutive drift tests with ``p < alpha``."""
    streak = 0
    for epoch, p in enumerate(p_values):
        streak = streak + 1 if p is not None and p < alpha else 0
        if streak >= runs:
            return epoch
    return None


def alternative_settings() -> list[tuple[str, str, object]]:
    """``(detector, setting, fire(trajectory) -> epoch or None)`` for every swept setting of every alternative."""
    out = []
    for det, key in (("ES(held-out real loss)", "heldout_real_loss"), ("ES(mixed val loss)", "mixed_val_loss")):
        for pat in ES_PATIENCE:
            for md in ES_MIN_DELTA:
                out.append((det, f"patience {pat}, min_delta {md:g}",
                            lambda t, k=key, pat=pat, md=md: replay_early_stopping([r[k] for r in t], pat, md)))
    for det, key in (("MMD drift, inputs", "p_inputs"), ("MMD drift, features", "p_features")):
        for alpha in MMD_ALPHA:
            for n in MMD_RUNS:
                out.append((det, f"p < {alpha:g} at {n} check{'s' if n > 1 else ''} running",
                            lambda t, k=key, a=alpha, n=n: replay_drift([r.get(k) for r in t], a, n)))
    return out


def matched_alternatives(runs: list[dict]) -> list[dict]:
    """Each alternative at the most sensitive setting whose false alarms on these healthy runs are no more than
    collapse_guard's (its knobs swept over the grid above and chosen on the same runs: a best case for the
    alternative). Ties: more collapses caught, then the smaller median delay."""
    collapsed = [r for r in runs if r["onset"] is not None]
    healthy = [r for r in runs if r["onset"] is None]
    budget = sum(r["fired"]["collapse_guard"] is not None for r in healthy)
    if not any(r["trajectory"] and "p_inputs" in r["trajectory"][0] for r in runs):
        drift_missing = {"MMD drift, inputs", "MMD drift, features"}
    else:
        drift_missing = set()
    best: dict[str, dict] = {}
    quietest: dict[str, tuple[int, str]] = {}
    for det, setting, fire in alternative_settings():
        if det in drift_missing:
            continue
        fires = {id(r): fire(r["trajectory"]) for r in runs}
        false_alarms = sum(fires[id(r)] is not None for r in healthy)
        if det not in quietest or false_alarms < quietest[det][0]:
            quietest[det] = (false_alarms, setting)
        if false_alarms > budget:
            continue
        delays = [fires[id(r)] - r["onset"] for r in collapsed if fires[id(r)] is not None]
        cand = {"detector": det, "setting": setting, "detected": len(delays), "false_alarms": false_alarms,
                "median_delay": median(delays), "fires": fires}
        key = (cand["detected"], -(cand["median_delay"] if delays else float("inf")))
        old = best.get(det)
        if old is None or key > (old["detected"], -(old["median_delay"] if old["detected"] else float("inf"))):
            best[det] = cand
    table = []
    for det, cand in best.items():
        cmp = vs_guard(collapsed, lambda r, fires=cand["fires"]: fires[id(r)])
        table.append({k: v for k, v in cand.items() if k != "fires"} | {"vs_guard": cmp})
    for det, (false_alarms, setting) in quietest.items():
        if det not in best:  # no setting of the grid stays within the budget
            table.append({"detector": det, "setting": None, "quietest": setting, "false_alarms": false_alarms})
    return table


def matched_table(runs: list[dict]) -> list[str]:
    collapsed = sum(r["onset"] is not None for r in runs)
    healthy = [r for r in runs if r["onset"] is None]
    guard = score(runs)["detectors"]["collapse_guard"]
    lines = ["| detector | setting (most sensitive within the false-alarm budget) | collapses detected | false alarms "
             "| median delay (checks) | guard earlier / same / later |", "|---|---|---|---|---|---|",
             f"| collapse_guard | defaults | {guard['detected']}/{collapsed} | {guard['false_alarms']}/{len(healthy)} | "
             f"{_fmt_delay(guard['median_delay'])} | — |"]
    for m in matched_alternatives(runs):
        if m["setting"] is None:
            lines.append(f"| {m['detector']} | none: its quietest setting ({m['quietest']}) raises {m['false_alarms']}/"
                         f"{len(healthy)} false alarms | — | — | — | — |")
            continue
        vs = m["vs_guard"]
        lines.append(f"| {m['detector']} | {m['setting']} | {m['detected']}/{collapsed} | {m['false_alarms']}/{len(healthy)}"
                     f" | {_fmt_delay(m['median_delay'])} | {vs['guard_earlier']} / {vs['same']} / {vs['guard_later']} |")
    return lines


# -- scoring ----------------------------------------------------------------------------------------------------
def vs_guard(collapsed: list[dict], fired_at) -> dict[str, int]:
    """Run by run over the collapsed runs: is collapse_guard earlier than, as early as, or later than the detector
    whose first firing on a run is ``fired_at(run)`` (an epoch or ``None``; never firing counts as infinitely late)?"""
    cmp = {"guard_earlier": 0, "same": 0, "guard_later": 0}
    for r in collapsed:
        g, a = r["fired"]["collapse_guard"], fired_at(r)
        g = float("inf") if g is None else g
        a = float("inf") if a is None else a
        cmp["guard_earlier" if g < a else "same" if g == a else "guard_later"] += 1
    return cmp

def score(runs: list[dict]) -> dict:
    """Per detector: collapses detected, false alarms on healthy runs, firing in the warm-up, delays, and how it
    compares with collapse_guard run by run."""
    collapsed = [r for r in runs if r["onset"] is not None]
    healthy = [r for r in runs if r["onset"] is None]
    out = {"collapsed_runs": len(collapsed), "healthy_runs": len(healthy), "detectors": {}}
    for name in DETECTORS:
        delays = [r["fired"][name] - r["onset"] for r in collapsed if r["fired"][name] is not None]
        d = {
            "detected": sum(r["fired"][name] is not None for r in collapsed),
            "false_alarms": sum(r["fired"][name] is not None for r in healthy),
            "warmup_fires": sum(r["fired"][name] is not None and r["fired"][name] < WARMUP_EPOCHS for r in runs),
            "median_delay": median(delays),
            "delays": delays,
        }
        if name != "collapse_guard":  # run by run on collapsed runs: guard earlier / same / later
            d["vs_guard"] = vs_guard(collapsed, lambda r, name=name: r["fired"][name])
        out["detectors"][name] = d
    return out


def _fmt_delay(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:+.1f}"


def _epoch(x: Optional[int]) -> str:
    return "—" if x is None else str(x)


def _detector_table(scores: dict, n_runs: int) -> list[str]:
    lines = ["| detector | collapses detected | false alarms (healthy runs) | fired in warm-up (epochs 0-3) "
             "| median delay (checks) | guard earlier / same / later |", "|---|---|---|---|---|---|"]
    for name, d in scores["detectors"].items():
        vs = d.get("vs_guard")
        vs = f"{vs['guard_earlier']} / {vs['same']} / {vs['guard_later']}" if vs else "—"
        lines.append(f"| {name} | {d['detected']}/{scores['collapsed_runs']} | {d['false_alarms']}/{scores['healthy_runs']}"
                     f" | {d['warmup_fires']}/{n_runs} | {_fmt_delay(d['median_delay'])} | {vs} |")
    return lines


def report(result: dict) -> str:
    runs, scores, cfg = result["runs"], result["scores"], result["config"]
    short = ["guard", "ES real", "ES mixed", "MMD in", "MMD feat"]
    margins = ", ".join(f"{100 * m:.0f} points ({t})" for t, m in result["margins"].items())
    lines = [f"Detection: {len(runs)} runs ({len(result['scenarios'])} scenarios x {len(result['seeds'])} seeds), "
             f"{scores['collapsed_runs']} collapsed by the ground truth (real test accuracy stays {margins} or more "
             f"below its best), {scores['healthy_runs']} healthy. Drift test: {result['drift_backend']}."
             + (f" Held-out real digits: {cfg['digits_heldout']} (the training digits fewer by as many)."
                if cfg.get("digits_heldout", DIGITS_HELDOUT) != DIGITS_HELDOUT else ""), ""]
    tasks = list(result["margins"])
    if len(tasks) > 1:
        lines.append("All runs:")
        lines.append("")
    lines += _detector_table(scores, len(runs))
    if len(tasks) > 1:
        for task, sc in result["scores_by_task"].items():
            n = sum(r["task"] == task for r in runs)
            lines += ["", f"{task} runs only ({n}):", ""] + _detector_table(sc, n)
    fresh = [r for r in runs if r["seed"] not in TUNING_SEEDS]
    if fresh and len(fresh) < len(runs):
        for label, group in (
            (f"seeds {', '.join(map(str, TUNING_SEEDS))} only (the default rules' 2 standard errors were chosen on "
             "these)", [r for r in runs if r["seed"] in TUNING_SEEDS]),
            (f"seeds {', '.join(str(s) for s in sorted({r['seed'] for r in fresh}))} only (fresh: not looked at when "
             "choosing the defaults)", fresh),
        ):
            lines += ["", f"{label}, {len(group)} runs:", ""] + _detector_table(score(group), len(group))
    lines += ["", "The alternatives at collapse_guard's false-alarm rate: each one's knobs (EarlyStopping patience and "
              "min_delta; the drift tests' alpha and consecutive firings) swept and replayed on the logged trajectories, "
              "and the most sensitive setting with no more false alarms on these healthy runs than collapse_guard kept "
              "(chosen on the same runs: a best case for the alternative):", ""]
    lines += matched_table(runs)
    if len(tasks) > 1:
        for task in tasks:
            lines += ["", f"{task} runs only:", ""] + matched_table([r for r in runs if r["task"] == task])
    lines += ["", "The default rules one at a time (replayed on the logged indicators of the same runs):", ""]
    lines += rules_table(runs)
    if len(tasks) > 1:
        for task in tasks:
            lines += ["", f"{task} runs only:", ""] + rules_table([r for r in runs if r["task"] == task])
    lines += ["", "Per scenario: runs that collapsed by the ground truth, the fall of real test accuracy from its best to "
              "the end (mean, points), and the runs on which each detector fired.", ""]
    lines.append("| scenario | synthetic source | collapsed | fall (points) | " + " | ".join(short) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(short))
    for name, info in result["scenarios"].items():
        rs = [r for r in runs if r["scenario"] == name]
        fall = np.mean([max(x["test_acc"] for x in r["trajectory"]) - r["final_test_acc"] for r in rs])
        lines.append(f"| {name} | {info['synthetic']} | {sum(r['onset'] is not None for r in rs)}/{len(rs)} | "
                     f"{100 * fall:.1f} | "
                     + " | ".join(f"{sum(r['fired'][n] is not None for r in rs)}/{len(rs)}" for n in DETECTORS) + " |")
    lines += ["", "Per run: ground-truth onset and the epoch each detector first fires (— never); final real test "
              "accuracy of the unguarded fit.", ""]
    lines.append("| scenario | seed | onset | " + " | ".join(short) + " | final test acc | guard rule |")
    lines.append("|---|---|---|" + "---|" * len(short) + "---|---|")
    for r in runs:
        rule = r["guard_events"][0]["rule"] if r["guard_events"] else ""
        lines.append(f"| {r['scenario']} | {r['seed']} | {_epoch(r['onset'])} | "
                     + " | ".join(_epoch(r["fired"][n]) for n in DETECTORS)
                     + f" | {r['final_test_acc']:.3f} | {rule} |")
    if result.get("mitigation"):
        variant = cfg.get("guard_kwargs") or {}
        which = f"CollapseGuard({', '.join(f'{k}={v!r}' for k, v in variant.items())})" if variant else "CollapseGuard()"
        lines += ["", f"Mitigation with {which}: final real test accuracy (mean over seeds) and the real share trained "
                  "on.", "",
                  "| scenario | real only | mixed, no guard | mixed + guard | guarded − real only (points) "
                  "| real share trained (guarded) | guard actions |",
                  "|---|---|---|---|---|---|---|"]
        for m in result["mitigation"]:
            lines.append(f"| {m['scenario']} | {m['real_only']:.3f} | {m['mixed']:.3f} | {m['guarded']:.3f} | "
                         f"{100 * (m['guarded'] - m['real_only']):+.1f} | {m['real_share_guarded']:.2f} | {m['actions']} |")
    drift = (f"kernel MMD permutation test ({result['drift_backend']}, {cfg['drift_permutations']} permutations, "
             f"{cfg['drift_samples']} + {cfg['drift_samples']} samples, p < {cfg['drift_alpha']}) on the inputs / on the "
             "model's penultimate features" if cfg["drift_permutations"] > 0 else "drift tests not run (--permutations 0)")
    lines += ["", "Detectors: guard = RatioMonitor() + HeldOutRealCheck() + CollapseGuard() (default rules, observed); "
              "ES real / ES mixed = EarlyStopping (patience 3) on held-out real loss / on the mixed validation loss; "
              f"MMD in / MMD feat = {drift}."]
    lines += ["", f"wall time {result['seconds']:.0f} s; machine: {result['machine']}"]
    return "\n".join(lines)


def mitigation_table(runs: list[dict], guarded: list[dict], real_only: dict) -> list[dict]:
    table = []
    for scenario in dict.fromkeys(g["scenario"] for g in guarded):
        task = SCENARIOS[scenario][0]
        gs = [g for g in guarded if g["scenario"] == scenario]
        ms = [r for r in runs if r["scenario"] == scenario]
        table.append({
            "scenario": scenario,
            "real_only": float(np.mean([real_only[f"{task}/{g['seed']}"] for g in gs])),
            "mixed": float(np.mean([m["final_test_acc"] for m in ms])),
            "guarded": float(np.mean([g["final_test_acc"] for g in gs])),
            "real_share_guarded": float(np.mean([g["real_share"] for g in gs])),
            "real_share_mixed": float(np.mean([m["real_share"] for m in ms])),
            "actions": "; ".join(",".join(f"{a}@{e}" for e, a in g["actions"]) or "none" for g in gs),
            "per_seed": [{"seed": g["seed"], "guarded": g["final_test_acc"], "real_only": real_only[f"{task}/{g['seed']}"],
                          "mixed": next(m["final_test_acc"] for m in ms if m["seed"] == g["seed"])} for g in gs],
        })
    return table


def run(scenarios: list[str], seeds: list[int], cfg: dict, mitigation: bool = True, verbose: bool = True) -> dict:
    quiet()
    torch.set_num_threads(1)
    backend = drift_backend()
    t0 = time.perf_counter()
    runs, guarded, real_only = [], [], {}
    options = {"digits": {"heldout": cfg.get("digits_heldout", DIGITS_HELDOUT)}}
    tasks = {name: TASKS[name](**options.get(name, {})) for name in dict.fromkeys(SCENARIOS[s][0] for s in scenarios)}
    for seed in seeds:
        for task in tasks.values():
            data = task.make(seed)
            if mitigation and any(SCENARIOS[s][0] == task.name and SCENARIOS[s][1] == "collapse" for s in scenarios):
                real_only[f"{task.name}/{seed}"] = real_only_run(seed, task, data, cfg)["final_test_acc"]
            for name in (s for s in scenarios if SCENARIOS[s][0] == task.name):
                synthetic, fraction = build_scenario(name, data, seed)
                r = observe_run(name, seed, task, data, synthetic, fraction, cfg, backend)
                runs.append(r)
                if mitigation and SCENARIOS[name][1] == "collapse":
                    guarded.append(guarded_run(name, seed, task, data, synthetic, fraction, cfg))
                if verbose:
                    print(f"  {name:<20} seed {seed}: onset {_epoch(r['onset']):>2}, fired "
                          + ", ".join(f"{k}={_epoch(v)}" for k, v in r["fired"].items())
                          + f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    order = {name: i for i, name in enumerate(scenarios)}
    runs.sort(key=lambda r: (order[r["scenario"]], r["seed"]))
    result = {
        "config": cfg,
        "scenarios": {n: {"task": SCENARIOS[n][0], "expected": SCENARIOS[n][1], "synthetic": SCENARIOS[n][2]}
                      for n in scenarios},
        "margins": {t.name: t.margin for t in tasks.values()},
        "seeds": seeds,
        "drift_backend": backend,
        "runs": runs,
        "scores": score(runs),
        "scores_by_task": {t: score([r for r in runs if r["task"] == t]) for t in tasks},
        "mitigation": mitigation_table(runs, guarded, real_only) if mitigation else [],
        "guarded_runs": guarded,
        "real_only": real_only,
        "seconds": time.perf_counter() - t0,
        "machine": machine_info(),
    }
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one seed (all scenarios)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,...,8; --quick: 0)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of: " + ", ".join(SCENARIOS))
    p.add_argument("--epochs", type=int, default=CONFIG["epochs"])
    p.add_argument("--permutations", type=int, default=CONFIG["drift_permutations"],
                   help="permutations of each drift test (0: no drift tests)")
    p.add_argument("--no-mitigation", action="store_true", help="skip the guarded and real-only fits")
    p.add_argument("--heldout", type=int, default=DIGITS_HELDOUT,
                   help="held-out real digits (more than 360 moves that many training digits to the held-out set)")
    p.add_argument("--guard-kwargs", default="{}",
                   help='JSON keyword arguments of the acting CollapseGuard (experiments; default: none, the defaults)')
    p.add_argument("--json", default=None, help="where to write the full record ('' : nowhere; default "
                   "runs/bench/detection.json, with --multi-source runs/bench/multisource.json)")
    p.add_argument("--report-from", default=None, metavar="JSON", help="print the report of a saved record; run nothing")
    ms = p.add_argument_group("multi-source attribution (issue 17; RESULTS.md, section 9; benchmarks/_multisource.py)")
    ms.add_argument("--multi-source", action="store_true", help="run the multi-source benchmark instead: a good and a "
                    "harmful synthetic source (or two good ones) per fit, with SourceAudit() + SourceCheck()")
    ms.add_argument("--datasets", default=None, help="with --multi-source: comma-separated datasets (default: all of "
                    "_datasets.DATASETS); --seeds defaults to 0,1 there")
    ms.add_argument("--mixes", default=None, help="with --multi-source: comma-separated, of label_noise, mode_loss, "
                    "offset, replace, good2, real_only (default: all)")
    ms.add_argument("--jobs", type=int, default=1, help="with --multi-source: worker processes, one (dataset, seed) "
                    "group each at a time")
    ms.add_argument("--observe", action="store_true", help="with --multi-source: also an observe fit per mix (the "
                    "guard warns, quarantine only recorded)")
    args = p.parse_args(argv)
    if args.multi_source:  # with --report-from: re-score a saved multi-source record
        import _multisource

        return _multisource.main(args, write_record)
    if args.json is None:
        args.json = "runs/bench/detection.json"
    if args.report_from:
        result = json.loads(Path(args.report_from).read_text())
        print(report(result))
        return result
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2,3,4,5,6,7,8")).split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; choose from {list(SCENARIOS)}")
    cfg = dict(CONFIG, epochs=args.epochs, drift_permutations=args.permutations, digits_heldout=args.heldout,
               guard_kwargs=json.loads(args.guard_kwargs))
    result = run(scenarios, seeds, cfg, mitigation=not args.no_mitigation)
    print(report(result))
    write_record(result, args.json)
    return result


if __name__ == "__main__":
    main()
