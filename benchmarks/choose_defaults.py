"""Choose the default rules on the development part of the detection suite, and only there (RESULTS.md, section 5).

Reads a record of ``benchmarks/suite.py``, keeps the runs of its development part (digits, digits4x4, text at seeds
0, 1, 2; every other run is dropped before anything is computed) and replays a grid of rule sets on their logged
indicators with ``RuleState.judge_row`` (the code the guard runs):

* held-out accuracy ``Rule("collapse/heldout_real/acc", ...)`` and the per-class family rule
  ``Rule("collapse/heldout_real/class_recall/*", ...)``, each on its own: ``sigmas`` 2, 2.5, 3, 3.5, 4; ``patience``
  1, 2, 3; ``noise`` ``"stderr"`` or ``"combined"``; ``baseline`` ``"best"`` or ``"level"``; ``baseline_checks`` 3;
* the effective-classes rule on ``collapse/heldout_real/eff_classes_ratio``: ``sigmas`` 2, 3, 4 with
  ``noise="checks"``, ``min_change`` 0.03, 0.05, 0.1, ``baseline="level"``, ``baseline_checks`` 3, ``patience`` 1 or
  2; or absent;
* ``heldout_loss_rule()`` always (it fires only on a loss that is not finite).

Rules do not interact before a guard's first action, so a rule set's first firing on a run is the earliest of its
rules' first firings: each candidate rule is replayed once per run, and every combination of the grid (60 x 60 x
19) is scored from those epochs.

The selection rule (written before any run): the most collapsed development runs caught, then the smallest median
delay, subject to at most 2% false alarms on the development part's healthy runs and no firing in any development
``pure_real`` run. Ties after that (stated here, not in the protocol): fewer false alarms, then the smaller mean
delay, then the quieter setting (:func:`quietness`: larger ``sigmas``, longer ``patience``, ``noise="combined"``,
``baseline="level"``), then the grid's order.

Usage::

    python benchmarks/choose_defaults.py runs/bench/suite.json [--top 10] [--json runs/bench/choose_defaults.json]
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

import suite  # noqa: E402
from _common import WARMUP_EPOCHS, write_record  # noqa: E402

from collapse_guard import default_rules  # noqa: E402
from collapse_guard.callbacks.rules import Rule, heldout_loss_rule  # noqa: E402

ACC, CLASS, EFF = ("collapse/heldout_real/acc", "collapse/heldout_real/class_recall/*",
                   "collapse/heldout_real/eff_classes_ratio")
NAMES = {ACC: "heldout_real_acc", CLASS: "class", EFF: "eff_classes"}
SIGMAS, PATIENCE, NOISES, BASELINES = (2.0, 2.5, 3.0, 3.5, 4.0), (1, 2, 3), ("stderr", "combined"), ("best", "level")
EFF_SIGMAS, EFF_MIN_CHANGE, EFF_PATIENCE = (2.0, 3.0, 4.0), (0.03, 0.05, 0.1), (1, 2)
MAX_FALSE_ALARMS = 0.02


def noise_rules(monitor: str) -> list[Rule]:
    return [Rule(monitor, sigmas=s, noise=n, baseline=b, baseline_checks=3, patience=p, name=NAMES[monitor])
            for s, p, n, b in itertools.product(SIGMAS, PATIENCE, NOISES, BASELINES)]


def eff_rules() -> list[Optional[Rule]]:
    return [Rule(EFF, sigmas=s, noise="checks", min_change=m, baseline="level", baseline_checks=3, patience=p,
                 name=NAMES[EFF]) for s, m, p in itertools.product(EFF_SIGMAS, EFF_MIN_CHANGE, EFF_PATIENCE)] + [None]


def development_runs(record: dict) -> list[dict]:
    """The development part's runs; refuses a record without them. Nothing else of the record is kept."""
    runs = [r for r in record["runs"] if suite.part(r) == "development"]
    if not runs:
        raise SystemExit("choose_defaults: the record holds no development run (digits, digits4x4, text at seeds 0-2)")
    return runs


def fire_epochs(runs: list[dict], rules: list[Optional[Rule]]) -> np.ndarray:
    """``(len(rules), len(runs))`` first firing epochs, ``inf`` for never (and for an absent rule)."""
    out = np.full((len(rules), len(runs)), np.inf)
    for i, rule in enumerate(rules):
        if rule is None:
            continue
        for j, r in enumerate(runs):
            epoch = suite.first_fire(r["trajectory"], rule)
            out[i, j] = np.inf if epoch is None else epoch
    return out


def grid_scores(runs: list[dict], acc: np.ndarray, cls: np.ndarray, eff: np.ndarray) -> dict:
    """Per combination (acc x class x eff, flattened): caught, false alarms, median and mean delay, firings in
    ``pure_real`` runs and in the warm-up."""
    first = np.minimum(np.minimum(acc[:, None, None, :], cls[None, :, None, :]), eff[None, None, :, :])
    first = first.reshape(-1, len(runs))
    fired = np.isfinite(first)
    onset = np.array([np.nan if r["onset"] is None else r["onset"] for r in runs])
    collapsed = ~np.isnan(onset)
    pure = np.array([r["scenario"] == "pure_real" for r in runs])
    delays = np.where(fired[:, collapsed], first[:, collapsed] - onset[collapsed], np.nan)
    caught = fired[:, collapsed].sum(1)
    with np.errstate(all="ignore"):
        median = np.where(caught > 0, np.nanmedian(np.where(caught[:, None] > 0, delays, 0.0), axis=1), np.nan)
        mean = np.where(caught > 0, np.nansum(delays, axis=1) / np.maximum(caught, 1), np.nan)
    return {"caught": caught, "false_alarms": fired[:, ~collapsed].sum(1), "median_delay": median,
            "mean_delay": mean, "pure_real_fired": fired[:, pure].sum(1),
            "warmup_fired": (first < WARMUP_EPOCHS).sum(1), "collapsed": int(collapsed.sum()),
            "healthy": int((~collapsed).sum()), "pure_real": int(pure.sum())}


def quietness(accs: list[Rule], classes: list[Rule], effs: list[Optional[Rule]], combos: list) -> list[np.ndarray]:
    """The tie-breaking keys of the combinations, most important first, each larger for the quieter setting: the
    accuracy and class rules' summed ``sigmas``, summed ``patience``, ``noise="combined"`` and ``baseline="level"``
    counts; the effective-classes rule's ``sigmas``, ``min_change`` and ``patience`` (absent: -1)."""
    pairs = [(accs[a], classes[c], effs[e]) for a, c, e in combos]
    eff = [(e.sigmas, e.min_change, e.patience) if e is not None else (-1, -1, -1) for _, _, e in pairs]
    return [np.array([a.sigmas + c.sigmas for a, c, _ in pairs]),
            np.array([a.patience + c.patience for a, c, _ in pairs]),
            np.array([(a.noise == "combined") + (c.noise == "combined") for a, c, _ in pairs]),
            np.array([(a.baseline == "level") + (c.baseline == "level") for a, c, _ in pairs]),
            *(np.array([x[k] for x in eff]) for k in range(3))]


def rank(scores: dict, quiet: list[np.ndarray]) -> np.ndarray:
    """Combination indices, best first: within the constraints first, then by the selection rule and ties."""
    allowed = ((scores["false_alarms"] <= MAX_FALSE_ALARMS * scores["healthy"] + 1e-9)
               & (scores["pure_real_fired"] == 0))
    big = 1e9
    keys = [np.arange(len(allowed))] + [-q for q in reversed(quiet)] + [
        np.nan_to_num(scores["mean_delay"], nan=big), scores["false_alarms"],
        np.nan_to_num(scores["median_delay"], nan=big), -scores["caught"], ~allowed]
    return np.lexsort(keys)


def distinct(order: np.ndarray, scores: dict, n: int) -> list[tuple[int, int]]:
    """The first ``n`` combinations of ``order`` with distinct figures, each with how many combinations share them."""
    figures = np.stack([np.nan_to_num(scores[k], nan=-1e9) for k in
                        ("caught", "false_alarms", "median_delay", "mean_delay", "pure_real_fired", "warmup_fired")], 1)
    _, group, counts = np.unique(figures, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    out, seen = [], set()
    for i in order:
        if group[i] not in seen:
            seen.add(group[i])
            out.append((int(i), int(counts[group[i]])))
            if len(out) == n:
                break
    return out


def rule_code(rule: Rule) -> str:
    """A rule as the shortest Python call that builds it (the arguments that differ from ``Rule``'s defaults)."""
    if rule == heldout_loss_rule():
        return "heldout_loss_rule()"
    defaults = {f.name: f.default for f in dataclasses.fields(Rule)}
    args = [repr(rule.monitor)] + [f"{k}={getattr(rule, k)!r}" for k in defaults
                                   if k != "monitor" and (k == "mode" or getattr(rule, k) != defaults[k])]
    return f"Rule({', '.join(args)})"


def _setting(rule: Optional[Rule]) -> str:
    if rule is None:
        return "absent"
    text = f"s={rule.sigmas:g} {rule.noise} {rule.baseline} p={rule.patience}"
    return text + (f" min_change={rule.min_change:g}" if rule.min_change else "")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="JSON record of benchmarks/suite.py")
    ap.add_argument("--top", type=int, default=10, help="candidates to print")
    ap.add_argument("--json", default="runs/bench/choose_defaults.json", help="where to write the result ('': nowhere)")
    args = ap.parse_args(argv)
    runs = development_runs(json.loads(Path(args.record).read_text()))
    accs, classes, effs = noise_rules(ACC), noise_rules(CLASS), eff_rules()
    scores = grid_scores(runs, fire_epochs(runs, accs), fire_epochs(runs, classes), fire_epochs(runs, effs))
    combos = list(itertools.product(range(len(accs)), range(len(classes)), range(len(effs))))
    order = rank(scores, quietness(accs, classes, effs, combos))
    allowed = int(MAX_FALSE_ALARMS * scores["healthy"] + 1e-9)
    print(f"Development part: {len(runs)} runs, {scores['collapsed']} collapsed, {scores['healthy']} healthy "
          f"({scores['pure_real']} pure_real); {len(combos)} rule sets; allowed: at most {allowed} false alarms "
          f"(2% of {scores['healthy']}), no firing in a pure_real run.\n")

    def row(i: int) -> dict:
        a, c, e = combos[i]
        return {"acc": _setting(accs[a]), "class": _setting(classes[c]), "eff_classes": _setting(effs[e]),
                **{k: (None if np.isnan(float(v[i])) else float(v[i])) if np.ndim(v) else v
                   for k, v in scores.items()},
                "rules": [rule_code(r) for r in (accs[a], classes[c], effs[e], heldout_loss_rule()) if r is not None]}

    top = [dict(row(i), equal=n) for i, n in distinct(order, scores, args.top)]
    print(f"The best {len(top)} rule sets with distinct figures (each the first of the rule sets sharing its figures, "
          "by the ranking; 'equal': how many share them):\n")
    print("| # | heldout_real_acc | class | eff_classes | equal | caught | false alarms | median delay | mean delay "
          "| fired in pure_real | fired in warm-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, t in enumerate(top, 1):
        print(f"| {k} | {t['acc']} | {t['class']} | {t['eff_classes']} | {t['equal']} | {t['caught']:.0f}/{t['collapsed']} | "
              f"{t['false_alarms']:.0f}/{t['healthy']} | {suite._delay(t['median_delay'])} | "
              f"{suite._delay(t['mean_delay'])} | {t['pure_real_fired']:.0f}/{t['pure_real']} | "
              f"{t['warmup_fired']:.0f}/{len(runs)} |")
    chosen = top[0]
    ok = chosen["false_alarms"] <= allowed and chosen["pure_real_fired"] == 0
    a, c, e = combos[int(order[0])]
    rules = [r for r in (accs[a], classes[c], effs[e], heldout_loss_rule()) if r is not None]
    check = suite.summarize(runs, lambda r: suite.replay(r["trajectory"], rules)["epoch"])
    assert (check["caught"], check["false_alarms"]) == (chosen["caught"], chosen["false_alarms"]), "grid != replay"
    defaults = suite.summarize(runs, lambda r: suite.replay(r["trajectory"], default_rules())["epoch"])
    print(f"\nThe current default rules on the development part: {defaults['caught']}/{defaults['collapsed']} caught, "
          f"{defaults['false_alarms']}/{defaults['healthy']} false alarms, median delay "
          f"{suite._delay(defaults['median_delay'])}, fired in pure_real {defaults['pure_real_fired']}/"
          f"{defaults['pure_real']}.")
    code = "[\n" + "".join(f"    {rule_code(r)},\n" for r in rules) + "]"
    print(("\nChosen (development part only):\n" if ok else "\nNO rule set meets the constraints; the best is:\n")
          + code)
    result = {"record": args.record, "development_runs": len(runs), "combinations": len(combos),
              "max_false_alarms": allowed, "constraints_met": ok, "top": top, "chosen": chosen, "chosen_code": code,
              "chosen_per_dataset": {d: suite.summarize([r for r in runs if r["task"] == d],
                                                        lambda r: suite.replay(r["trajectory"], rules)["epoch"])
                                     for d in suite.DEV_DATASETS},
              "current_defaults": defaults}
    write_record(result, args.json)
    return result


if __name__ == "__main__":
    main()
