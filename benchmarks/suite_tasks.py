"""The detection suite of the language-model and regression defaults (issue 15; protocol: RESULTS.md, section 6):
4 datasets x 5 scenarios x 6 seeds, each fit observed with collapse_guard's defaults; rules scored by replay.

Datasets, models, generators and scenarios: ``benchmarks/_tasks.py``. Each run is the mixed fit (14 epochs; 90%
real for epochs 0-3, then the real share falls to 0 at epoch 8, to 10% for ``accumulate``) with ``RatioMonitor()``
+ ``HeldOutRealCheck()`` + ``CollapseGuard(action="warn")`` observing (the check infers the task); a probe records
every logged ``collapse/`` value at every epoch and the real test loss (cross-entropy per character, or mean squared
error), from which the ground truth labels the run: collapsed from the first epoch from which the test loss stays
the dataset's margin or more above its lowest value before that epoch, to the end; healthy otherwise.

Scoring replays rules (default: ``default_rules(task=...)`` of each run's task) on each run's rows with
``RuleState.judge_row``, as ``benchmarks/suite.py`` does (its ``replay`` and ``summarize``), per task and part:
**development** = ``pydoc`` (language model) and ``diabetes`` (regression) at seeds 0, 1, 2; **untouched** =
``stdlib_docs`` and ``breast_cancer_texture`` at every seed, ``pydoc`` and ``diabetes`` at seeds 3, 4, 5.

Usage::

    python benchmarks/suite_tasks.py --jobs 2                          # 120 fits into runs/bench/suite_tasks.json
    python benchmarks/suite_tasks.py --margins --jobs 2                # the margins: pure_real at seeds 100-102
    python benchmarks/suite_tasks.py --seeds 100,101,102 --no-guard --json runs/bench/tasks_check.json  # generators
    python benchmarks/suite_tasks.py --score-from runs/bench/suite_tasks.json [--rules 'EXPR' --task regression]
    python benchmarks/suite_tasks.py --quick --datasets pydoc,diabetes --epochs 3 --samples-per-epoch 128 \
        --scenarios pure_real,replace,label_chain --json ''       # the smoke test's size
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
from pytorch_lightning import Callback, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _tasks  # noqa: E402
import suite  # noqa: E402
from _common import fit_groups, machine_info, quiet, trainer_kwargs, write_record  # noqa: E402

from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor  # noqa: E402
from collapse_guard.callbacks.rules import Rule, heldout_loss_rule  # noqa: E402

KINDS = ("language_model", "regression")
DEVELOPMENT = {"pydoc": (0, 1, 2), "diabetes": (0, 1, 2)}
SEEDS, MARGIN_SEEDS = (0, 1, 2, 3, 4, 5), (100, 101, 102)
CONFIG = {"epochs": 14, "reserve": 0.3}


def part(run: dict) -> str:
    """``"development"``, ``"untouched"`` (the protocol's other runs at seeds 0-5) or ``"other"``."""
    if run["seed"] in DEVELOPMENT.get(run["task"], ()):
        return "development"
    return "untouched" if run["seed"] in SEEDS else "other"


def task_rules(kind: str, expression: Optional[str] = None) -> list[Rule]:
    """The rules scored on ``kind``'s runs: ``default_rules(task=kind)``, or a Python expression over ``Rule``,
    ``default_rules`` and ``heldout_loss_rule``."""
    from collapse_guard import default_rules

    if expression:
        return list(eval(expression, {"Rule": Rule, "default_rules": default_rules,  # noqa: S307 - the user's CLI
                                      "heldout_loss_rule": heldout_loss_rule}))
    return default_rules(task=kind)


# -- the fits ---------------------------------------------------------------------------------------------------
class LossProbe(Callback):
    """At every epoch end: the real test loss (mean and standard error over the test samples) and a copy of every
    logged ``collapse/`` value. No gradients, eval mode; the fit's random state is not touched."""

    def __init__(self, kind: str, test) -> None:
        self.kind, self.test, self.rows = kind, test, []

    def on_train_epoch_end(self, trainer, pl_module):
        was_training = pl_module.training
        pl_module.eval()
        losses = _tasks.per_sample_losses(self.kind, pl_module, self.test).double()
        pl_module.train(was_training)
        row = {"epoch": trainer.current_epoch, "test_loss": float(losses.mean()),
               "test_loss_se": float(losses.std() / len(losses) ** 0.5)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("collapse/")})
        self.rows.append(row)


def observe_run(spec: _tasks.TaskSpec, data, scenario: str, seed: int, cfg: dict, guard: bool = True) -> dict:
    """The mixed fit of ``scenario`` with the default callbacks observing (``guard=False``: without them)."""
    import detection

    synthetic, fraction = _tasks.build_scenario(spec.kind, scenario, data, seed)
    torch.manual_seed(seed)
    per_epoch = cfg.get("samples_per_epoch") or spec.samples_per_epoch
    dm = MixedDataModule(real=spec.real_dm(data), synthetic=synthetic, real_fraction=fraction, holdout="val",
                         reserve=cfg["reserve"], samples_per_epoch=per_epoch, seed=seed)
    probe = LossProbe(spec.kind, data.tensors["test"])
    watch = CollapseGuard(action="warn", verbose=False) if guard else None
    callbacks = [RatioMonitor(), HeldOutRealCheck(), probe, watch] if guard else [probe]
    t0 = time.perf_counter()
    Trainer(callbacks=callbacks, **trainer_kwargs(cfg["epochs"])).fit(spec.model(data), datamodule=dm)
    losses = [r["test_loss"] for r in probe.rows]
    events = watch.events if guard else []
    return {
        "task": spec.name, "kind": spec.kind, "scenario": scenario, "seed": seed, "margin": spec.margin,
        "seconds": time.perf_counter() - t0,
        # the ground truth on the loss: the accuracy rule of detection.ground_truth on its negative
        "onset": detection.ground_truth([-x for x in losses], spec.margin),
        "fired": {"collapse_guard": events[0].epoch if events else None},
        "guard_events": [{"epoch": e.epoch, "rule": e.rule, "reason": e.reason} for e in events],
        "final_test_loss": losses[-1], "real_share": detection._real_share(dm), "trajectory": probe.rows,
    }


def fit_group(dataset: str, seed: int, cfg: dict, scenarios: tuple, guard: bool) -> list[dict]:
    """Every scenario of ``dataset`` at ``seed`` (one worker's task; one torch thread)."""
    quiet()
    torch.set_num_threads(1)
    spec = _tasks.task(dataset)
    data = spec.make(seed)
    return [observe_run(spec, data, s, seed, cfg, guard) for s in scenarios if s in _tasks.SCENARIOS[spec.kind]]


def fit_all(groups: list[tuple], cfg: dict, scenarios: tuple, guard: bool, jobs: int) -> list[dict]:
    """The runs of every ``(dataset, seed)`` group, in up to ``jobs`` spawned worker processes."""
    runs = fit_groups(groups, fit_group, (cfg, scenarios, guard), jobs, lambda result: (
        f"onsets {[r['onset'] for r in result]}, guard {[r['fired']['collapse_guard'] for r in result]}"), width=22)
    order = {d: i for i, d in enumerate(_tasks.DATASETS)}
    names = [s for kind in KINDS for s in _tasks.SCENARIOS[kind]]
    runs.sort(key=lambda r: (order[r["task"]], names.index(r["scenario"]), r["seed"]))
    return runs


# -- the scores -------------------------------------------------------------------------------------------------
def score_kind(runs: list[dict], rules: list[Rule]) -> dict:
    """Every number of one task's tables (``runs`` all of that task), for ``rules`` replayed on every run."""
    replays = {id(r): suite.replay(r["trajectory"], rules) for r in runs}
    guard = lambda r: replays[id(r)]["epoch"]  # noqa: E731
    parts = {}
    for name in suite.PARTS + ("whole suite",):
        rs = [r for r in runs if name == "whole suite" or part(r) == name]
        parts[name] = {
            "summary": suite.summarize(rs, guard),
            "datasets": {d: suite.summarize([r for r in rs if r["task"] == d], guard) for d in dict.fromkeys(
                r["task"] for r in rs)},
            "scenarios": {s: suite.summarize([r for r in rs if r["scenario"] == s], guard) for s in dict.fromkeys(
                r["scenario"] for r in rs)},
            "alone": {rule.label: suite.summarize(rs, lambda r, k=rule.label: replays[id(r)]["alone"][k])
                      for rule in rules},
        }
    per_run = [{"dataset": r["task"], "scenario": r["scenario"], "seed": r["seed"], "part": part(r),
                "onset": r["onset"], "fired": replays[id(r)]["epoch"], "rule": replays[id(r)]["rule"],
                "member": replays[id(r)]["member"], "live": r["fired"]["collapse_guard"]} for r in runs]
    return {"rules": [repr(rule) for rule in rules], "parts": parts, "per_run": per_run}


def score(record: dict, expression: Optional[str] = None, only: Optional[str] = None) -> dict:
    """Per task kind present in ``record`` (or ``only``): :func:`score_kind` of its rules on its runs; where the
    rules are the ones the live guard ran, the runs whose replay differs from it (``mismatches``)."""
    out = {}
    for kind in KINDS:
        runs = [r for r in record["runs"] if r["kind"] == kind]
        if not runs or (only and kind != only):
            continue
        out[kind] = score_kind(runs, task_rules(kind, expression))
        if record.get("live_rules", {}).get(kind) == out[kind]["rules"] and record.get("guard", True):
            out[kind]["mismatches"] = [x for x in out[kind]["per_run"] if x["fired"] != x["live"]]
    return out


def report(record: dict, scores: dict) -> str:
    lines = [f"Detection suite (language models and regression): {len(record['runs'])} runs; margins "
             + ", ".join(f"{d} {m:g}" for d, m in record["margins"].items()) + "."]
    for kind, sc in scores.items():
        lines += ["", f"### {kind}", "", "Rules scored (replayed with RuleState.judge_row):"]
        lines += [f"  {r}" for r in sc["rules"]]
        lines += ["", "| part " + suite.HEAD, "|---|---|---|---|---|---|"]
        lines += [f"| {n} | {suite._cells(p['summary'])} |" for n, p in sc["parts"].items() if p["summary"]["runs"]]
        for name in suite.PARTS:
            p = sc["parts"][name]
            if not p["summary"]["runs"]:
                continue
            lines += ["", f"**{name} part**, per dataset:", "", "| dataset " + suite.HEAD, "|---|---|---|---|---|---|"]
            lines += [f"| {d} | {suite._cells(s)} |" for d, s in p["datasets"].items()]
            lines += ["", f"{name} part, per scenario:", "", "| scenario | runs | collapsed | caught | false alarms |",
                      "|---|---|---|---|---|"]
            lines += [f"| {s} | {x['runs']} | {x['collapsed']} | {x['caught']} | {x['false_alarms']} |"
                      for s, x in p["scenarios"].items()]
            lines += ["", f"{name} part, each rule alone:", "", "| rule " + suite.HEAD, "|---|---|---|---|---|---|"]
            lines += [f"| {label} | {suite._cells(x)} |" for label, x in p["alone"].items()]
            rows = [x for x in sc["per_run"] if x["part"] == name]
            missed = [suite._run(x) for x in rows if x["onset"] is not None and x["fired"] is None]
            alarms = [f"{suite._run(x)} (epoch {x['fired']}, {suite._who(x)})" for x in rows
                      if x["onset"] is None and x["fired"] is not None]
            lines += ["", f"{name}: missed {', '.join(missed) or 'none'}; false alarms {', '.join(alarms) or 'none'}"]
        if sc["parts"]["untouched"]["summary"]["runs"]:
            lines += ["", "Goals on the untouched part: " + "; ".join(suite.goals(sc["parts"]["untouched"]["summary"]))]
        if "mismatches" in sc:
            bad = sc["mismatches"]
            lines += ["", "Replay of the default rules against the live guard: " + (
                "the same first firing on every run" if not bad else f"WARNING: {len(bad)} mismatches: " + ", ".join(
                    f"{suite._run(x)} replay {x['fired']} live {x['live']}" for x in bad))]
    lines += ["", losses_table(record)]
    if "seconds" in record:
        lines += ["", f"wall time {record['seconds']:.0f} s ({record['jobs']} jobs); machine: {record['machine']}"]
    return "\n".join(lines)


def losses_table(record: dict) -> str:
    """Per dataset and scenario: the mean final real test loss (over seeds) and the runs the ground truth calls
    collapsed, against ``pure_real``."""
    lines = ["| dataset | scenario | runs | final test loss, mean (min-max) | minus pure_real | collapsed |",
             "|---|---|---|---|---|---|"]
    for d in dict.fromkeys(r["task"] for r in record["runs"]):
        runs = [r for r in record["runs"] if r["task"] == d]
        pure = {r["seed"]: r["final_test_loss"] for r in runs if r["scenario"] == "pure_real"}
        for s in dict.fromkeys(r["scenario"] for r in runs):
            rs = [r for r in runs if r["scenario"] == s]
            loss = [r["final_test_loss"] for r in rs]
            diff = [r["final_test_loss"] - pure[r["seed"]] for r in rs if r["seed"] in pure]
            lines.append(f"| {d} | {s} | {len(rs)} | {np.mean(loss):.3f} ({min(loss):.3f}-{max(loss):.3f}) | "
                         f"{np.mean(diff) if diff else float('nan'):+.3f} | {sum(r['onset'] is not None for r in rs)} |")
    return "\n".join(lines)


def margins(record: dict) -> dict:
    """Per dataset: the mean over ``pure_real`` runs of the final test loss's standard error, and 2.5 of them."""
    out = {}
    for d in dict.fromkeys(r["task"] for r in record["runs"]):
        se = [r["trajectory"][-1]["test_loss_se"] for r in record["runs"] if r["task"] == d
              and r["scenario"] == "pure_real"]
        out[d] = {"standard_error": float(np.mean(se)), "margin": round(max(_tasks.MARGIN_FLOOR, 2.5 * np.mean(se)), 3),
                  "seeds": [r["seed"] for r in record["runs"] if r["task"] == d and r["scenario"] == "pure_real"]}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(_tasks.DATASETS), help="of: " + ", ".join(_tasks.DATASETS))
    p.add_argument("--seeds", default=None, help="comma-separated (default 0-5; --quick: 0; --margins: 100-102)")
    p.add_argument("--scenarios", default=None, help="comma-separated (default: all of each task)")
    p.add_argument("--quick", action="store_true", help="one seed")
    p.add_argument("--margins", action="store_true", help="pure_real at seeds 100-102: the ground truth's margins")
    p.add_argument("--no-guard", action="store_true", help="fit without collapse_guard's callbacks (the generators)")
    p.add_argument("--epochs", type=int, default=CONFIG["epochs"])
    p.add_argument("--samples-per-epoch", type=int, default=None, help="instead of the task's (the smoke test)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--json", default=None, help="the record (default runs/bench/suite_tasks.json; '': nowhere)")
    p.add_argument("--score-from", default=None, metavar="JSON", help="re-score a saved record; run nothing")
    p.add_argument("--rules", default=None, help="rules to score, a Python expression (default: default_rules(task=))")
    p.add_argument("--task", default=None, choices=KINDS, help="score only this task's runs")
    args = p.parse_args(argv)
    if args.score_from:
        record = json.loads(Path(args.score_from).read_text())
    else:
        seeds = args.seeds or ("0" if args.quick else ",".join(map(str, MARGIN_SEEDS if args.margins else SEEDS)))
        every = dict.fromkeys(s for k in KINDS for s in _tasks.SCENARIOS[k])
        scenarios = ("pure_real",) if args.margins else tuple(args.scenarios.split(",") if args.scenarios else every)
        groups = [(d, int(s)) for d in args.datasets.split(",") if d for s in seeds.split(",")]
        cfg = dict(CONFIG, epochs=args.epochs, samples_per_epoch=args.samples_per_epoch)
        guard, t0 = not (args.no_guard or args.margins), time.perf_counter()
        record = {"config": cfg, "guard": guard, "runs": fit_all(groups, cfg, scenarios, guard, args.jobs)}
        record.update(seconds=time.perf_counter() - t0, jobs=args.jobs, machine=machine_info(),
                      margins={d: _tasks.margin(d) for d in dict.fromkeys(g[0] for g in groups)},
                      scenarios=_tasks.SCENARIOS, strength=_tasks.STRENGTH)
        if guard:
            record["live_rules"] = {k: [repr(r) for r in task_rules(k)] for k in KINDS}
    if args.margins:
        record["margin_basis"] = margins(record)
        print(json.dumps(record["margin_basis"], indent=1))
    if record.get("guard", True) and not args.margins:
        record["scores"] = score(record, args.rules, args.task)
        print(report(record, record["scores"]))
    else:
        print(losses_table(record))
    path = args.json if args.json is not None else ("" if args.score_from else "runs/bench/suite_tasks.json")
    write_record(record, path)
    return record


if __name__ == "__main__":
    main()
