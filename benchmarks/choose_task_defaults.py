"""Choose the language-model and regression default rules on the development part of their suite, and only there
(RESULTS.md, section 6).

Reads a record of ``benchmarks/suite_tasks.py``, keeps the runs of its development part (``pydoc`` and ``diabetes``
at seeds 0, 1, 2; every other run is dropped before anything is computed) and, per task, replays a grid over the
numbers of the task's default rules (``language_model_rules()``, ``regression_rules()``: their monitors and modes
kept) with ``RuleState.judge_row``:

* a rule with a ``sigmas`` bound: ``sigmas`` 2, 3, 4, 6; ``noise`` ``"stderr"``, ``"checks"``, ``"combined"``;
  ``baseline`` ``"best"``, ``"level"``; ``baseline_checks`` 3; ``patience`` 1, 2, 3; ``min_change`` 0, 0.01, 0.02,
  0.05 (0 only on a regression loss, whose units are the target's);
* a rule with a ``relative`` bound: ``relative`` 0.02, 0.05, 0.1, 0.2; ``baseline`` and ``patience`` as above;
* every rule but the held-out loss rule may be absent.

A rule set's first firing on a run is the earliest of its rules' (rules do not interact before a guard's first
action), so each candidate is replayed once per run and every combination is scored from those epochs
(``choose_defaults.grid_scores``). The selection (the protocol's): the most collapsed development runs caught, then
the smallest median delay, subject to at most 2% false alarms on the development healthy runs and no firing in a
development ``pure_real`` run; ties: fewer false alarms, smaller mean delay, the quieter setting (larger ``sigmas``,
longer ``patience``, larger ``min_change`` or smaller ``relative``, ``baseline="level"``, noise ``"combined"`` then
``"checks"`` then ``"stderr"``; an absent rule is the quietest), then the grid's order.

Usage::

    python benchmarks/choose_task_defaults.py runs/bench/suite_tasks.json [--top 10] [--json PATH]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import choose_defaults  # noqa: E402
import suite  # noqa: E402
import suite_tasks  # noqa: E402
from _common import write_record  # noqa: E402

from collapse_guard.callbacks.rules import Rule  # noqa: E402

SIGMAS, NOISES, BASELINES, PATIENCE = (2.0, 3.0, 4.0, 6.0), ("stderr", "checks", "combined"), ("best", "level"), (1, 2, 3)
MIN_CHANGE, RELATIVE = (0.0, 0.01, 0.02, 0.05), (0.02, 0.05, 0.1, 0.2)
LOSS = "collapse/heldout_real/loss"
#: what makes a setting quieter, per key (larger is quieter); an absent rule gets :data:`ABSENT`
NOISE_RANK = {"stderr": 0, "checks": 1, "combined": 2}
ABSENT = (99.0, 99.0, 99.0, 1.0, 2.0)


def base_rules(kind: str) -> list[Rule]:
    from collapse_guard.callbacks import task_rules

    return {"language_model": task_rules.language_model_rules, "regression": task_rules.regression_rules}[kind]()


def variants(rule: Rule, kind: str) -> list[Optional[Rule]]:
    """The grid of one rule's numbers (``None``: absent, for every rule but the held-out loss rule)."""
    change = (0.0,) if kind == "regression" and rule.monitor == LOSS else MIN_CHANGE
    if rule.sigmas is not None:
        grid = [dict(sigmas=s, noise=n, baseline=b, patience=p, min_change=m, relative=None) for s, n, b, p, m in
                itertools.product(SIGMAS, NOISES, BASELINES, PATIENCE, change)]
    else:
        grid = [dict(relative=r, baseline=b, patience=p, min_change=0.0) for r, b, p in
                itertools.product(RELATIVE, BASELINES, PATIENCE)]
    out: list[Optional[Rule]] = [dataclasses.replace(rule, baseline_checks=3, **g) for g in grid]
    return out + ([None] if rule.monitor != LOSS else [])


def quietness(rule: Optional[Rule]) -> tuple:
    if rule is None:
        return ABSENT
    return (rule.sigmas or 0.0, float(rule.patience), rule.min_change - (rule.relative or 0.0),
            float(rule.baseline == "level"), float(NOISE_RANK[rule.noise]))


def setting(rule: Optional[Rule]) -> str:
    if rule is None:
        return "absent"
    bound = f"s={rule.sigmas:g} {rule.noise}" if rule.sigmas is not None else f"relative={rule.relative:g}"
    return f"{bound} {rule.baseline} p={rule.patience}" + (f" min_change={rule.min_change:g}" if rule.min_change else "")


def choose(runs: list[dict], kind: str, top: int) -> dict:
    """The grid of ``kind``'s rules on ``runs`` (its development runs): the ranked candidates and the chosen set."""
    grids = [variants(rule, kind) for rule in base_rules(kind)]
    grids += [[None]] * (3 - len(grids))  # grid_scores combines three rules; the missing ones never fire
    epochs = [choose_defaults.fire_epochs(runs, g) for g in grids]
    scores = choose_defaults.grid_scores(runs, epochs)
    combos = list(itertools.product(*(range(len(g)) for g in grids)))
    q = [np.array([quietness(rule) for rule in g]) for g in grids]  # per grid: (settings, keys)
    quiet = (q[0][:, None, None, :] + q[1][None, :, None, :] + q[2][None, None, :, :]).reshape(len(combos), -1)
    order = choose_defaults.rank(scores, [quiet[:, j] for j in range(quiet.shape[1])])
    allowed = int(choose_defaults.MAX_FALSE_ALARMS * scores["healthy"] + 1e-9)

    def rules_of(i: int) -> list[Rule]:
        return [grids[k][j] for k, j in enumerate(combos[i]) if grids[k][j] is not None]

    def row(i: int, equal: int) -> dict:
        figures = {k: (None if np.isnan(float(v[i])) else float(v[i])) if np.ndim(v) else v for k, v in scores.items()}
        return {"settings": [setting(grids[k][j]) for k, j in enumerate(combos[i])][:len(base_rules(kind))],
                "equal": equal, **figures, "rules": [choose_defaults.rule_code(r) for r in rules_of(i)]}

    best = [row(i, n) for i, n in choose_defaults.distinct(order, scores, top)]
    chosen = rules_of(int(order[0]))
    check = suite.summarize(runs, lambda r: suite.replay(r["trajectory"], chosen)["epoch"])
    assert (check["caught"], check["false_alarms"]) == (best[0]["caught"], best[0]["false_alarms"]), "grid != replay"
    current = suite.summarize(runs, lambda r: suite.replay(r["trajectory"], base_rules(kind))["epoch"])
    return {"runs": len(runs), "combinations": len(combos), "max_false_alarms": allowed,
            "constraints_met": best[0]["false_alarms"] <= allowed and best[0]["pure_real_fired"] == 0,
            "top": best, "chosen": best[0], "chosen_code": "[\n" + "".join(
                f"    {choose_defaults.rule_code(r)},\n" for r in chosen) + "]", "current_defaults": current}


def print_choice(kind: str, c: dict) -> None:
    names = [r.label for r in base_rules(kind)]
    print(f"\n### {kind}: {c['runs']} development runs, {c['chosen']['collapsed']} collapsed, "
          f"{c['chosen']['healthy']} healthy ({c['chosen']['pure_real']} pure_real); {c['combinations']} rule sets; "
          f"allowed: at most {c['max_false_alarms']} false alarms, no firing in a pure_real run.\n")
    print("| # | " + " | ".join(names) + " | equal | caught | false alarms | median delay | mean delay | fired in "
          "pure_real | fired in warm-up |")
    print("|---" * (len(names) + 8) + "|")
    for k, t in enumerate(c["top"], 1):
        print(f"| {k} | " + " | ".join(t["settings"]) + f" | {t['equal']} | {t['caught']:.0f}/{t['collapsed']} | "
              f"{t['false_alarms']:.0f}/{t['healthy']} | {suite._delay(t['median_delay'])} | "
              f"{suite._delay(t['mean_delay'])} | {t['pure_real_fired']:.0f}/{t['pure_real']} | "
              f"{t['warmup_fired']:.0f}/{c['runs']} |")
    d = c["current_defaults"]
    print(f"\nThe current defaults on the development part: {d['caught']}/{d['collapsed']} caught, "
          f"{d['false_alarms']}/{d['healthy']} false alarms, median delay {suite._delay(d['median_delay'])}, fired in "
          f"pure_real {d['pure_real_fired']}/{d['pure_real']}.")
    print(("\nChosen (development part only):\n" if c["constraints_met"] else
           "\nNO rule set meets the constraints; the best is:\n") + c["chosen_code"])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="JSON record of benchmarks/suite_tasks.py")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--json", default="runs/bench/choose_task_defaults.json", help="where to write ('': nowhere)")
    args = ap.parse_args(argv)
    runs = [r for r in json.loads(Path(args.record).read_text())["runs"] if suite_tasks.part(r) == "development"]
    result = {"record": args.record}
    for kind in suite_tasks.KINDS:
        dev = [r for r in runs if r["kind"] == kind]
        if not dev:
            raise SystemExit(f"choose_task_defaults: the record holds no development run of {kind}")
        result[kind] = choose(dev, kind, args.top)
        print_choice(kind, result[kind])
    write_record(result, args.json)
    return result


if __name__ == "__main__":
    main()
