"""The detection suite of the default rules (issue 14; protocol: RESULTS.md, section 5): 5 datasets x 7 scenarios x
6 seeds, each fit observed with collapse_guard's defaults; any rule set scored by replay on the logged indicators.

Datasets and scenarios: ``benchmarks/_datasets.py``. Each run is ``detection.observe_run`` without drift tests: the
mixed fit (14 epochs of 1920 samples, 90% real for epochs 0-3, then falling to 0 at epoch 8, to 10% for
``accumulate``) with ``RatioMonitor()`` + ``HeldOutRealCheck()`` + ``CollapseGuard(action="warn")`` observing; its
``Probe`` records every logged ``collapse/`` value at every epoch (per class too) and the real test accuracy, from
which ``detection.ground_truth`` labels the run (collapsed from an onset, or healthy) with its dataset's margin.

Scoring replays a list of rules (default: ``collapse_guard.default_rules()`` as they are when scoring) on each run's
trajectory with ``RuleState.judge_row``, one state per rule and one row per epoch: the first epoch at which any rule
fires is the guard's firing epoch (the rule named is the first in the list to fire then; a family rule names its
member). For the default rules the replay must give the epochs of the live guard (a warning lists any mismatch).

Parts (round 2, RESULTS.md, section 8): **development** = digits, digits4x4, text at seeds 0, 1, 2 (rules are chosen
there, ``benchmarks/choose_defaults.py``); **untouched** = every dataset at seeds 6, 7, 8 (chatterbot and iris, new
in round 2, at any seed); **seen** = round 1's untouched part (wine and breast_cancer at seeds 0-5, digits,
digits4x4, text at seeds 3-5), reported apart: it was looked at in round 1. Round 3 (``--round3``, ``--parts
round3``; RESULTS.md, section 10): development as before; **untouched** = every dataset at the new seeds 30, 31,
32; **seen** = every other run (rounds 1 and 2). Per part: collapsed runs caught, false alarms on healthy runs (a firing at any epoch of a run the
ground truth calls healthy), median delay (firing epoch minus onset), firings in ``pure_real`` runs and in the
warm-up (epochs 0-3); per dataset, per scenario, and each rule alone.

Usage::

    python benchmarks/suite.py --jobs 2                                 # seeds 0-5: 294 fits into runs/bench/suite.json
    python benchmarks/suite.py --round2 --jobs 2 --json runs/bench/suite_round2.json   # round 2: 357 fits
    python benchmarks/suite.py --round3 --jobs 2 --json runs/bench/suite_round3.json   # round 3: 147 fits
    python benchmarks/suite.py --score-from runs/bench/suite_round2.json,runs/bench/suite_round3.json --parts round3
    python benchmarks/suite.py --quick --datasets wine --epochs 3 --json ''   # the smoke test's configuration
    python benchmarks/suite.py --score-from runs/bench/suite.json      # re-score with the current default rules
    python benchmarks/suite.py --score-from runs/bench/suite.json --rules 'default_rules(min_change=0.01)'
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _datasets  # noqa: E402
from _common import WARMUP_EPOCHS, fit_groups, machine_info, median, quiet, write_record  # noqa: E402

from collapse_guard import default_rules  # noqa: E402
from collapse_guard.callbacks.rules import Rule, RuleState, heldout_loss_rule  # noqa: E402

DEV_DATASETS, DEV_SEEDS, SEEDS = ("digits", "digits4x4", "text"), (0, 1, 2), (0, 1, 2, 3, 4, 5)
#: round 2 (RESULTS.md, section 8): new seeds of every dataset, and the datasets no earlier round used
UNTOUCHED_SEEDS, NEW_DATASETS = (6, 7, 8), ("chatterbot", "iris")
#: round 3 (RESULTS.md, section 10): seeds no benchmark of this project had run, every dataset
ROUND3_SEEDS = (30, 31, 32)
PARTS = ("development", "untouched", "seen")
HEALTHY = tuple(s for s, (expected, _) in _datasets.SCENARIOS.items() if expected == "healthy")


def part(run: dict, parts: str = "round2") -> str:
    """The part of a run, by round 2's protocol (RESULTS.md, section 8): ``"development"`` (digits, digits4x4, text
    at seeds 0-2), ``"untouched"`` (every dataset at seeds 6-8, and chatterbot and iris at any seed), ``"seen"``
    (round 1's untouched part: seeds 0-5 outside the development part, looked at in round 1) or ``"other"``; by
    round 3's (``parts="round3"``, section 10): the same development part, ``"untouched"`` at seeds 30-32,
    ``"seen"`` for every other run."""
    if run["task"] in DEV_DATASETS and run["seed"] in DEV_SEEDS:
        return "development"
    if parts == "round3":
        return "untouched" if run["seed"] in ROUND3_SEEDS else "seen"
    if run["seed"] in UNTOUCHED_SEEDS or run["task"] in NEW_DATASETS:
        return "untouched"
    return "seen" if run["seed"] in SEEDS else "other"


# -- the fits ---------------------------------------------------------------------------------------------------
def fit_group(dataset: str, seed: int, cfg: dict) -> list[dict]:
    """Every scenario of ``dataset`` at ``seed`` (one worker's task; one torch thread)."""
    import torch

    import detection

    quiet()
    torch.set_num_threads(1)
    task = _datasets.task(dataset)
    data = task.make(seed)
    runs = []
    for scenario in _datasets.SCENARIOS:
        synthetic, fraction = _datasets.build_scenario(dataset, scenario, data, seed)
        runs.append(detection.observe_run(scenario, seed, task, data, synthetic, fraction, cfg, backend=""))
    return runs


def round2_groups() -> list[tuple[str, int]]:
    """The (dataset, seed) groups of round 2 (RESULTS.md, section 8): its development, untouched and seen parts."""
    dev = [(d, s) for d in DEV_DATASETS for s in DEV_SEEDS]
    untouched = [(d, s) for d in _datasets.DATASETS for s in UNTOUCHED_SEEDS]
    seen = [(d, s) for d in _datasets.DATASETS if d not in NEW_DATASETS for s in SEEDS if (d, s) not in dev]
    return dev + untouched + seen


def round3_groups() -> list[tuple[str, int]]:
    """The (dataset, seed) groups fitted in round 3 (RESULTS.md, section 10): its untouched part, every dataset at
    seeds 30-32 (the development part is replayed from round 2's record)."""
    return [(d, s) for d in _datasets.DATASETS for s in ROUND3_SEEDS]


def run(datasets: list[str], seeds: list[int], cfg: dict, jobs: int = 1,
        groups: Optional[list[tuple[str, int]]] = None) -> dict:
    """Fit every (dataset, seed) group (``groups``, else every dataset at every seed), in up to ``jobs`` worker
    processes; runs sorted by dataset, scenario, seed."""
    t0 = time.perf_counter()
    groups = groups or [(d, s) for d in datasets for s in seeds]
    datasets = list(dict.fromkeys(d for d, _ in groups))
    seeds = sorted({s for _, s in groups})
    runs = fit_groups(groups, fit_group, (cfg,), jobs, lambda result: (
        f"onsets {[r['onset'] for r in result]}, guard {[r['fired']['collapse_guard'] for r in result]}"))
    order = {name: i for i, name in enumerate(_datasets.DATASETS)}
    scenarios = {name: i for i, name in enumerate(_datasets.SCENARIOS)}
    runs.sort(key=lambda r: (order[r["task"]], scenarios[r["scenario"]], r["seed"]))
    return {
        "config": cfg,
        "datasets": datasets,
        "seeds": seeds,
        "groups": groups,
        "scenarios": {n: {"expected": e, "synthetic": what} for n, (e, what) in _datasets.SCENARIOS.items()},
        "margins": {d: _datasets.task(d).margin for d in datasets},
        "live_rules": [repr(r) for r in default_rules()],
        "runs": runs,
        "seconds": time.perf_counter() - t0,
        "jobs": jobs,
        "machine": machine_info(),
    }


# -- the replay -------------------------------------------------------------------------------------------------
def replay(trajectory: list[dict], rules: list[Rule]) -> dict:
    """Each rule alone and the guard (all of them) replayed on a run's logged rows: ``{"epoch", "rule", "member",
    "alone": {label: epoch or None}}`` (``epoch`` ``None``: never fired)."""
    states = [RuleState(rule) for rule in rules]
    alone: list[Optional[tuple]] = [None] * len(rules)
    for row in trajectory:
        for i, state in enumerate(states):
            verdict = state.judge_row(row)
            if alone[i] is None and verdict is not None and verdict.fired:
                alone[i] = (row["epoch"], verdict.member)
    fired = [(f[0], i) for i, f in enumerate(alone) if f is not None]
    first = min(fired) if fired else None
    return {"epoch": first[0] if first else None, "rule": rules[first[1]].label if first else None,
            "member": alone[first[1]][1] if first else None,
            "alone": {rule.label: (f[0] if f else None) for rule, f in zip(rules, alone)}}


def first_fire(trajectory: list[dict], rule: Rule) -> Optional[int]:
    """The first epoch ``rule`` alone fires on a run's rows (``None``: never)."""
    return replay(trajectory, [rule])["epoch"]


# -- the scores -------------------------------------------------------------------------------------------------
def summarize(runs: list[dict], fired: Callable[[dict], Optional[int]]) -> dict:
    """Caught / collapsed, false alarms / healthy, delays, firings in ``pure_real`` runs and in the warm-up."""
    collapsed = [r for r in runs if r["onset"] is not None]
    healthy = [r for r in runs if r["onset"] is None]
    delays = [fired(r) - r["onset"] for r in collapsed if fired(r) is not None]
    pure = [r for r in runs if r["scenario"] == "pure_real"]
    return {
        "runs": len(runs), "collapsed": len(collapsed), "caught": len(delays), "healthy": len(healthy),
        "false_alarms": sum(fired(r) is not None for r in healthy), "median_delay": median(delays),
        "delays": delays, "pure_real": len(pure), "pure_real_fired": sum(fired(r) is not None for r in pure),
        "warmup_fired": sum(fired(r) is not None and fired(r) < WARMUP_EPOCHS for r in runs),
    }


def score(record: dict, rules: list[Rule], parts: str = "round2") -> dict:
    """Every number of the tables, for ``rules`` replayed on every run of ``record`` (parts by :func:`part`)."""
    runs = record["runs"]
    part_of = lambda r: part(r, parts)  # noqa: E731
    replays = [replay(r["trajectory"], rules) for r in runs]
    by_id = {id(r): p for r, p in zip(runs, replays)}
    guard = lambda r: by_id[id(r)]["epoch"]  # noqa: E731
    out: dict = {"rules": [repr(rule) for rule in rules], "parts": {}}
    for name in PARTS + ("whole suite",):
        rs = [r for r in runs if name == "whole suite" or part_of(r) == name]
        out["parts"][name] = {
            "summary": summarize(rs, guard),
            "datasets": {d: summarize([r for r in rs if r["task"] == d], guard)
                         for d in dict.fromkeys(r["task"] for r in rs)},
            "scenarios": {s: summarize([r for r in rs if r["scenario"] == s], guard)
                          for s in dict.fromkeys(r["scenario"] for r in rs)},
            "alone": {rule.label: summarize(rs, lambda r, k=rule.label: by_id[id(r)]["alone"][k]) for rule in rules},
        }
    out["per_run"] = [{"dataset": r["task"], "scenario": r["scenario"], "seed": r["seed"], "part": part_of(r),
                       "onset": r["onset"], "fired": p["epoch"], "rule": p["rule"], "member": p["member"],
                       "live": r["fired"]["collapse_guard"],
                       "live_rules_scored": r.get("live_rules", record.get("live_rules")) == out["rules"]}
                      for r, p in zip(runs, replays)]
    live = [x for x in out["per_run"] if x["live_rules_scored"]]
    if live:  # runs whose live guard ran the rules scored: the replay must agree with it
        out["mismatches"] = [x for x in live if x["fired"] != x["live"]]
        out["live_checked"] = len(live)
    return out


def goals(summary: dict) -> list[str]:
    """RESULTS.md section 5's goals on the untouched part, met or not, in words."""
    s = summary
    caught = s["caught"] / s["collapsed"] if s["collapsed"] else float("nan")
    alarms = s["false_alarms"] / s["healthy"] if s["healthy"] else float("nan")
    delay = s["median_delay"]
    return [f"{'met' if caught >= 0.95 else 'NOT met'}: >= 95% of collapsed runs caught ({100 * caught:.1f}%)",
            f"{'met' if alarms <= 0.02 else 'NOT met'}: <= 2% false alarms ({100 * alarms:.1f}%)",
            f"{'met' if delay is not None and delay <= 1 else 'NOT met'}: median delay <= +1 check ({_delay(delay)})"]


# -- the tables -------------------------------------------------------------------------------------------------
def _delay(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:+.1f}"


def _cells(s: dict) -> str:
    return (f"{s['caught']}/{s['collapsed']} | {s['false_alarms']}/{s['healthy']} | {_delay(s['median_delay'])} | "
            f"{s['pure_real_fired']}/{s['pure_real']} | {s['warmup_fired']}/{s['runs']}")


HEAD = "| caught / collapsed | false alarms / healthy | median delay (checks) | fired in pure_real | fired in warm-up |"


def report(record: dict, scores: dict) -> str:
    lines = [f"Detection suite: {len(record['runs'])} runs ({', '.join(record['datasets'])}; seeds "
             f"{', '.join(map(str, record['seeds']))}); margins "
             + ", ".join(f"{d} {100 * m:g} points" for d, m in record["margins"].items()) + ".",
             "Rules scored (replayed with RuleState.judge_row):"] + [f"  {r}" for r in scores["rules"]]
    parts = scores["parts"]
    lines += ["", "| part " + HEAD, "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {_cells(p['summary'])} |" for name, p in parts.items() if p["summary"]["runs"]]
    for name in PARTS:
        p = parts[name]
        if not p["summary"]["runs"]:
            continue
        lines += ["", f"**{name} part**, per dataset:", "", "| dataset " + HEAD, "|---|---|---|---|---|---|"]
        lines += [f"| {d} | {_cells(s)} |" for d, s in p["datasets"].items()]
        lines += ["", f"{name} part, per scenario:", "", "| scenario | runs | collapsed | caught | false alarms |",
                  "|---|---|---|---|---|"]
        lines += [f"| {sc} | {s['runs']} | {s['collapsed']} | {s['caught']} | {s['false_alarms']} |"
                  for sc, s in p["scenarios"].items()]
        lines += ["", f"{name} part, each rule alone:", "", "| rule " + HEAD, "|---|---|---|---|---|---|"]
        lines += [f"| {label} | {_cells(s)} |" for label, s in p["alone"].items()]
    if parts["untouched"]["summary"]["runs"]:
        lines += ["", "Goals on the untouched part: " + "; ".join(goals(parts["untouched"]["summary"]))]
    pure = [x for x in scores["per_run"] if x["scenario"] == "pure_real" and x["fired"] is not None]
    lines += ["", f"Fired in pure_real runs of the whole suite: {len(pure)}"
              + "".join(f"\n  {x['dataset']} seed {x['seed']} ({x['part']}): epoch {x['fired']}, {_who(x)}"
                        for x in pure)]
    for name in PARTS:
        rows = [x for x in scores["per_run"] if x["part"] == name]
        missed = [x for x in rows if x["onset"] is not None and x["fired"] is None]
        alarms = [x for x in rows if x["onset"] is None and x["fired"] is not None]
        fires = ", ".join(f"{_run(x)} (epoch {x['fired']}, {_who(x)})" for x in alarms)
        lines += [f"{name}: missed {', '.join(_run(x) for x in missed) or 'none'}; false alarms {fires or 'none'}"]
    if "mismatches" in scores:
        bad = scores["mismatches"]
        lines += ["", f"Replay of the default rules against the live guard ({scores['live_checked']} runs ran them): "
                  + ("the same first firing on every run" if not bad else
                     f"WARNING: {len(bad)} mismatches: " + ", ".join(f"{_run(x)} replay {x['fired']} live {x['live']}"
                                                                    for x in bad))]
    else:
        lines += ["", "The rules scored are not the ones the live guard ran (the defaults changed since, or --rules): "
                  "no replay-against-live check."]
    if "seconds" in record:
        lines += [f"wall time {record['seconds']:.0f} s ({record.get('jobs', 1)} jobs); machine: {record['machine']}"]
    return "\n".join(lines)


def _run(x: dict) -> str:
    return f"{x['dataset']}/{x['scenario']}/{x['seed']}"


def _who(x: dict) -> str:
    return x["rule"] if x["member"] is None else f"{x['rule']} (member {x['member']})"


def rules_from(expression: Optional[str]) -> list[Rule]:
    """The rule list to score: ``default_rules()`` now, or a Python expression over ``Rule``, ``default_rules`` and
    ``heldout_loss_rule``."""
    if not expression:
        return default_rules()
    return list(eval(expression, {"Rule": Rule, "default_rules": default_rules,  # noqa: S307 - the user's own CLI
                                  "heldout_loss_rule": heldout_loss_rule}))


def load_records(paths: str) -> dict:
    """One record from one or more comma-separated records of :func:`run`: the runs of all (each keeps the rules
    its live guard ran, ``live_rules``), the first record's other fields, datasets, seeds and margins merged."""
    records = [json.loads(Path(p).read_text()) for p in paths.split(",") if p]
    if len(records) == 1:
        return records[0]
    merged = dict(records[0], runs=[], datasets=[], seeds=[], margins={})
    merged.pop("seconds", None)
    for rec in records:
        for r in rec["runs"]:
            merged["runs"].append(dict(r, live_rules=rec.get("live_rules")))
        merged["datasets"] += [d for d in rec["datasets"] if d not in merged["datasets"]]
        merged["seeds"] = sorted(set(merged["seeds"]) | set(rec["seeds"]))
        merged["margins"].update(rec["margins"])
    merged["live_rules"] = None
    return merged


def main(argv=None) -> dict:
    import detection

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(_datasets.DATASETS), help="comma-separated, of: "
                   + ", ".join(_datasets.DATASETS))
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,...,5; --quick: 0)")
    p.add_argument("--quick", action="store_true", help="one seed")
    p.add_argument("--round2", action="store_true", help="round 2's groups (RESULTS.md, section 8): development, "
                   "untouched (seeds 6-8, chatterbot, iris) and seen; --datasets and --seeds are ignored")
    p.add_argument("--round3", action="store_true", help="round 3's untouched part (RESULTS.md, section 10): every "
                   "dataset at seeds 30-32; --datasets and --seeds are ignored")
    p.add_argument("--parts", default="round2", choices=("round2", "round3"), help="which round's parts to report")
    p.add_argument("--epochs", type=int, default=detection.CONFIG["epochs"])
    p.add_argument("--jobs", type=int, default=1, help="worker processes, one (dataset, seed) group each at a time")
    p.add_argument("--json", default=None, help="where to write the record (default runs/bench/suite.json; '': "
                   "nowhere; with --score-from: only where given)")
    p.add_argument("--score-from", default=None, metavar="JSON", help="re-score saved records (comma-separated: "
                   "their runs together); run nothing")
    p.add_argument("--rules", default=None, help="the rules to score, a Python expression (default: default_rules())")
    args = p.parse_args(argv)
    rules = rules_from(args.rules)
    if args.score_from:
        record = load_records(args.score_from)
    else:
        datasets = [d for d in args.datasets.split(",") if d]
        unknown = set(datasets) - set(_datasets.DATASETS)
        if unknown:
            p.error(f"unknown datasets {sorted(unknown)}; choose from {list(_datasets.DATASETS)}")
        seeds = [int(s) for s in (args.seeds or ("0" if args.quick else ",".join(map(str, SEEDS)))).split(",")]
        cfg = dict(detection.CONFIG, epochs=args.epochs, drift_permutations=0)
        groups = round2_groups() if args.round2 else round3_groups() if args.round3 else None
        record = run(datasets, seeds, cfg, jobs=args.jobs, groups=groups)
    record["scores"] = score(record, rules, args.parts)
    print(report(record, record["scores"]))
    if "mismatches" in record["scores"] and record["scores"]["mismatches"]:
        print(f"WARNING: the replay differs from the live guard on {len(record['scores']['mismatches'])} runs",
              file=sys.stderr)
    path = args.json if args.json is not None else ("" if args.score_from else "runs/bench/suite.json")
    write_record(record, path)
    return record


if __name__ == "__main__":
    main()
