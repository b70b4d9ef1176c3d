"""Replay other rule shapes on the trajectories a detection run logged: does any of them catch more collapses at
the same number of false alarms than the default rules?

Reads the JSON record of ``benchmarks/detection.py`` (every run's logged ``collapse/`` values, their standard
errors and, since the paired experiment, which held-out real samples the model got right at each check) and
replays the two noise-scaled default rules (held-out accuracy and worst-class recall, each with its own standard
error; the effective-classes rule stays as it is) as:

* ``sigmas``: ``best - s * se`` (``Rule(sigmas=s)``, the default's shape; ``s = 2``, patience 2 is the default rule);
* ``floor``: ``best - max(s * se, d)``, a fall must also be at least ``d`` (``Rule(sigmas=s, min_change=d)``);
* ``margin``: ``best - s * se - d`` (``Rule(sigmas=s, min_delta=d)``);
* ``mean2`` / ``mean3``: the mean of the last 2 / 3 checks against the best such mean, ``s`` standard errors of
  the mean;
* ``paired``: for held-out accuracy, a paired test of the current check against the best one on the same held-out
  samples (McNemar's statistic: ``b`` samples right at the best check and wrong now, ``c`` the other way, fires when
  ``(b - c) / sqrt(b + c - (b - c)^2 / n) > s``); worst-class recall keeps the default rule.

Prints, per seed group, caught collapses / false alarms / median delay of every setting, and the settings on the
frontier (none catching more with as few false alarms).

Usage::

    python benchmarks/replay_rules.py runs/bench/detection.json
    python benchmarks/replay_rules.py runs/bench/detection_seeds0-14.json --groups 0-5,6-8,9-14 --accuracy-only
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
from typing import Callable, Iterable, Optional

import numpy as np

from collapse_guard.callbacks.rules import Rule, RuleState

ACC = "collapse/heldout_real/acc"
WORST = "collapse/heldout_real/worst_class_recall"
EFF = "collapse/heldout_real/eff_classes_ratio"


def first_fire(checks: Iterable[tuple[int, Optional[bool]]], patience: int) -> Optional[int]:
    """The epoch at which ``patience`` consecutive violations complete (``None``: a check without a verdict)."""
    wait = 0
    for epoch, violated in checks:
        if violated is None:
            continue
        wait = wait + 1 if violated else 0
        if wait >= patience:
            return epoch
    return None


def best_relative(rows: list[dict], key: str, violated: Callable[[float, float, float], bool], window: int = 1):
    """``(epoch, violated(value, se, best))`` per check; value and se over the last ``window`` checks, best before."""
    checks = [(r["epoch"], r[key], r.get(key + "_stderr", math.nan)) for r in rows if key in r]
    best = None
    for i in range(window - 1, len(checks)):
        part = checks[i + 1 - window: i + 1]
        value = float(np.mean([c[1] for c in part]))
        se = math.sqrt(sum(c[2] ** 2 for c in part)) / window
        yield checks[i][0], (None if best is None else violated(value, se, best))
        best = value if best is None else max(best, value)


def paired(rows: list[dict], s: float):
    """``(epoch, violated)`` per check: McNemar's statistic of the best check against this one above ``s``."""
    best_acc, best = None, None
    for row in rows:
        now = np.frombuffer(row["heldout_correct"].encode(), dtype=np.uint8) == ord("1")
        verdict = None
        if best is not None:
            b, c, n = int((best & ~now).sum()), int((~best & now).sum()), len(now)
            var = b + c - (b - c) ** 2 / n
            verdict = var > 0 and (b - c) / math.sqrt(var) > s
        yield row["epoch"], verdict
        if best_acc is None or now.mean() > best_acc:
            best_acc, best = now.mean(), now


def judged(rows: list[dict], rule: Rule):
    """``(epoch, violated)`` per check of ``rule``, judged by the library's own :class:`RuleState` (``None`` while
    its baseline warms up)."""
    state = RuleState(rule)
    for row in rows:
        if rule.monitor in row:
            verdict = state.judge(row[rule.monitor], row.get(rule.stderr_key) if rule.stderr_key else None)
            yield row["epoch"], (None if verdict.bound is None else verdict.violated)


def violations(shape: str, s: float, d: float, key: str) -> Callable[[list[dict]], Iterable]:
    """The per-check verdicts of one noise-scaled rule of ``shape`` on ``key``."""
    if shape == "paired":
        return lambda rows: paired(rows, s)
    if shape in ("mean2", "mean3"):
        return lambda rows: best_relative(rows, key, lambda v, se, best: v < best - s * se, int(shape[-1]))
    extra = {"floor": {"min_change": d}, "margin": {"min_delta": d}}.get(shape, {})
    return lambda rows: judged(rows, Rule(key, sigmas=s, **extra))


def fires(rows: list[dict], shape: str, s: float, d: float, patience: int,
          accuracy_only: bool = False) -> list[Optional[int]]:
    """First firing epoch of each rule: held-out accuracy and worst-class recall in ``shape`` (worst class in the
    default shape when ``shape`` is ``paired`` or ``accuracy_only``), effective classes 5% below best; all with
    ``patience``, the default rules with their own (2)."""
    default = ("sigmas", 2.0, 0.0, 2)
    worst = default if shape == "paired" or accuracy_only else (shape, s, d, patience)
    return [first_fire(violations(shape, s, d, ACC)(rows), patience),
            first_fire(violations(*worst[:3], WORST)(rows), worst[3]),
            first_fire(judged(rows, Rule(EFF, relative=0.05)), 2)]


def score(runs: list[dict], shape: str, s: float, d: float, patience: int, accuracy_only: bool = False):
    """``(caught, collapsed, false alarms, healthy, median delay)`` of one setting over ``runs``."""
    caught = collapsed = alarms = healthy = 0
    delays = []
    for run in runs:
        fired = [e for e in fires(run["trajectory"], shape, s, d, patience, accuracy_only) if e is not None]
        first = min(fired) if fired else None
        if run["onset"] is None:
            healthy += 1
            alarms += first is not None
        else:
            collapsed += 1
            if first is not None:
                caught += 1
                delays.append(first - run["onset"])
    return caught, collapsed, alarms, healthy, (float(np.median(delays)) if delays else None)


def settings(paired_available: bool):
    for s, p in itertools.product((1.0, 1.5, 2.0, 2.5, 3.0), (1, 2)):
        yield "sigmas", s, 0.0, p
        yield "mean2", s, 0.0, p
        yield "mean3", s, 0.0, p
        if paired_available:
            yield "paired", s, 0.0, p
        for d in (0.005, 0.01, 0.015, 0.02):
            yield "floor", s, d, p
            yield "margin", s, d, p


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="JSON record of benchmarks/detection.py")
    ap.add_argument("--groups", default="0-5,6-8", help="seed groups to score separately, e.g. 0-5,6-8,9-14")
    ap.add_argument("--accuracy-only", action="store_true",
                    help="replay the shapes on the accuracy rule only (worst-class recall keeps the default rule)")
    args = ap.parse_args(argv)
    runs = json.loads(open(args.record).read())["runs"]
    groups = {}
    for g in args.groups.split(","):
        lo, hi = (int(x) for x in g.split("-"))
        groups[g] = [r for r in runs if lo <= r["seed"] <= hi]
    groups["all"] = runs
    has_paired = all("heldout_correct" in row for r in runs for row in r["trajectory"])
    table = []
    for shape, s, d, p in settings(has_paired):
        table.append({"shape": shape, "s": s, "d": d, "patience": p,
                      **{g: score(rs, shape, s, d, p, args.accuracy_only) for g, rs in groups.items()}})
    print(f"| rule shape ({'accuracy rule' if args.accuracy_only else 'accuracy and worst-class rules'}) | " + " | ".join(f"seeds {g}: caught, false alarms, delay" for g in groups) + " |")
    print("|---|" + "---|" * len(groups))
    for t in table:
        label = f"{t['shape']} s={t['s']:g}" + (f" d={100 * t['d']:g} pt" if t["d"] else "") + f" patience {t['patience']}"
        print(f"| {label} | " + " | ".join(f"{t[g][0]}/{t[g][1]}, {t[g][2]}/{t[g][3]}, {t[g][4]}" for g in groups) + " |")
    def dominated(t: dict) -> bool:
        (c, _, a, _, _), others_ = t["all"], [o["all"] for o in table]
        return any(o[0] >= c and o[2] <= a and (o[0] > c or o[2] < a) for o in others_)

    frontier = {}  # one setting per (caught, false alarms), the first in the grid's order
    for t in sorted((t for t in table if not dominated(t)), key=lambda t: t["all"][2]):
        frontier.setdefault((t["all"][0], t["all"][2]), t)
    print("\nFrontier over all runs (no setting catches more with as few false alarms):")
    for (caught, alarms), t in frontier.items():
        print(f"  {caught}/{t['all'][1]} caught, {alarms}/{t['all'][3]} false alarms: {t['shape']} s={t['s']:g}"
              + (f" d={100 * t['d']:g} pt" if t["d"] else "") + f" patience {t['patience']}")
    return {"table": table, "frontier": list(frontier.values())}


if __name__ == "__main__":
    main()
