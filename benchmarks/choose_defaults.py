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

**Round 3** (``--round3``; RESULTS.md, section 10, written before the run): the accuracy rule also with
``noise="detrended"`` (90 settings); round 2's paired accuracy rules or none (31); per class round 2's 27 paired
class rules, round 1's class rule, or none (29); and one accumulating rule (:func:`accumulation_rules`: a CUSUM
or an EWMA of the paired accuracy change, a CUSUM of held-out accuracy below its level; or none; 124). No
effective-classes rule. 10,032,840 sets.

Usage::

    python benchmarks/choose_defaults.py runs/bench/suite.json [--top 10] [--json runs/bench/choose_defaults.json]
    python benchmarks/choose_defaults.py runs/bench/suite_round2.json --round3 --json runs/bench/choose_round3.json
    python benchmarks/choose_defaults.py runs/bench/suite_round2.json --added --json ''   # after a choice: below
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
#: round 2's paired indicators (RESULTS.md, section 8): the change from the reference check on the same samples
PAIRED, PAIRED_CLASS = "collapse/heldout_real/acc_change", "collapse/heldout_real/class_recall_change/*"
NAMES = {ACC: "heldout_real_acc", CLASS: "class", EFF: "eff_classes", PAIRED: "acc_change",
         PAIRED_CLASS: "class_change"}
#: round 3 (RESULTS.md, section 10): the accumulating rules' grid
CUSUM_ALLOWANCE, CUSUM_H, ACCUMULATED_MIN_CHANGE = (0.5, 1.0, 1.5, 2.0), (2.0, 3.0, 4.0, 6.0, 8.0), (0.0, 0.01, 0.02)
EWMA_SMOOTHING, EWMA_L = (0.2, 0.3, 0.5), (2.0, 2.5, 3.0, 3.5, 4.0)
LEVEL_CUSUM_ALLOWANCE, LEVEL_CUSUM_H, LEVEL_CUSUM_NOISES = (0.5, 1.0, 1.5), (2.0, 4.0, 6.0), ("stderr", "detrended")
PAIRED_SIGMAS, PAIRED_MIN_CHANGE, PAIRED_PATIENCE = (2.0, 2.5, 3.0, 3.5, 4.0), (0.0, 0.01, 0.02), (1, 2)
PAIRED_CLASS_SIGMAS, PAIRED_CLASS_MIN_CHANGE, PAIRED_CLASS_PATIENCE = (3.0, 4.0, 5.0), (0.1, 0.2, 0.3), (1, 2, 3)
SIGMAS, PATIENCE, NOISES, BASELINES = (2.0, 2.5, 3.0, 3.5, 4.0), (1, 2, 3), ("stderr", "combined"), ("best", "level")
EFF_SIGMAS, EFF_MIN_CHANGE, EFF_PATIENCE = (2.0, 3.0, 4.0), (0.03, 0.05, 0.1), (1, 2)
MAX_FALSE_ALARMS = 0.02


def noise_rules(monitor: str) -> list[Rule]:
    return [Rule(monitor, sigmas=s, noise=n, baseline=b, baseline_checks=3, patience=p, name=NAMES[monitor])
            for s, p, n, b in itertools.product(SIGMAS, PATIENCE, NOISES, BASELINES)]


def round3_noise_rules() -> list[Rule]:
    """Round 3's accuracy rules: round 2's grid with ``noise="detrended"`` as well (90)."""
    return [Rule(ACC, sigmas=s, noise=n, baseline=b, baseline_checks=3, patience=p, name=NAMES[ACC])
            for s, p, n, b in itertools.product(SIGMAS, PATIENCE, NOISES + ("detrended",), BASELINES)]


def round3_class_rules() -> list[Optional[Rule]]:
    """Round 3's class candidates: round 2's paired class rules, round 1's class rule, or none (29)."""
    paired = [r for r in class_rules() if r is not None and r.monitor == PAIRED_CLASS]
    round1 = Rule(CLASS, sigmas=4.0, noise="combined", baseline="level", baseline_checks=3, patience=3,
                  name=NAMES[CLASS])
    return paired + [round1, None]


def accumulation_rules() -> list[Optional[Rule]]:
    """Round 3's accumulating rules (:attr:`Rule.accumulate`): a CUSUM (60) or an EWMA (45) of the paired accuracy
    change in paired standard errors, a CUSUM of held-out accuracy below its level (18), or none (124)."""
    cusum = [Rule(PAIRED, sigmas=h, baseline="zero", min_change=m, baseline_checks=3, accumulate="cusum",
                  allowance=k, name="acc_change_cusum")
             for k, h, m in itertools.product(CUSUM_ALLOWANCE, CUSUM_H, ACCUMULATED_MIN_CHANGE)]
    ewma = [Rule(PAIRED, sigmas=L, baseline="zero", min_change=m, baseline_checks=3, accumulate="ewma",
                 smoothing=lam, name="acc_change_ewma")
            for lam, L, m in itertools.product(EWMA_SMOOTHING, EWMA_L, ACCUMULATED_MIN_CHANGE)]
    level = [Rule(ACC, sigmas=h, noise=n, baseline="level", baseline_checks=3, accumulate="cusum", allowance=k,
                  name="acc_cusum")
             for k, h, n in itertools.product(LEVEL_CUSUM_ALLOWANCE, LEVEL_CUSUM_H, LEVEL_CUSUM_NOISES)]
    return cusum + ewma + level + [None]


def eff_rules() -> list[Optional[Rule]]:
    return [Rule(EFF, sigmas=s, noise="checks", min_change=m, baseline="level", baseline_checks=3, patience=p,
                 name=NAMES[EFF]) for s, m, p in itertools.product(EFF_SIGMAS, EFF_MIN_CHANGE, EFF_PATIENCE)] + [None]


def paired_rules() -> list[Optional[Rule]]:
    """Round 2's rule on the paired accuracy change: below ``-sigmas`` paired standard errors and ``-min_change``."""
    return [Rule(PAIRED, sigmas=s, baseline="zero", min_change=m, baseline_checks=3, patience=p, name=NAMES[PAIRED])
            for s, m, p in itertools.product(PAIRED_SIGMAS, PAIRED_MIN_CHANGE, PAIRED_PATIENCE)] + [None]


def class_rules() -> list[Optional[Rule]]:
    """Round 2's class candidates: round 1's family rule on the recalls (:func:`noise_rules`), the paired family
    rule on each class's recall change, or none."""
    paired = [Rule(PAIRED_CLASS, sigmas=s, baseline="zero", min_change=m, baseline_checks=3, patience=p,
                   name=NAMES[PAIRED_CLASS])
              for s, m, p in itertools.product(PAIRED_CLASS_SIGMAS, PAIRED_CLASS_MIN_CHANGE, PAIRED_CLASS_PATIENCE)]
    return noise_rules(CLASS) + paired + [None]


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


def grid_scores(runs: list[dict], families: list[np.ndarray]) -> dict:
    """Per combination of one rule of each family (``families``: ``(K_f, runs)`` first-firing epochs each, the
    combinations flattened in ``itertools.product`` order): caught, false alarms, median and mean delay, firings
    in ``pure_real`` runs and in the warm-up. Computed one rule of the first family at a time (memory)."""
    onset = np.array([np.nan if r["onset"] is None else r["onset"] for r in runs])
    collapsed = ~np.isnan(onset)
    pure = np.array([r["scenario"] == "pure_real" for r in runs])
    rest = families[1]
    for f in families[2:]:
        rest = np.minimum(rest[:, None, :], f[None, :, :]).reshape(-1, len(runs))
    parts: dict[str, list] = {k: [] for k in ("caught", "false_alarms", "median_delay", "mean_delay",
                                              "pure_real_fired", "warmup_fired")}
    for head in families[0]:
        first = np.minimum(head[None, :], rest)
        fired = np.isfinite(first)
        delays = np.where(fired[:, collapsed], first[:, collapsed] - onset[collapsed], np.nan)
        caught = fired[:, collapsed].sum(1)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                median = np.where(caught > 0, np.nanmedian(delays, axis=1), np.nan)
            mean = np.where(caught > 0, np.nansum(delays, axis=1) / np.maximum(caught, 1), np.nan)
        for k, v in (("caught", caught), ("false_alarms", fired[:, ~collapsed].sum(1)), ("median_delay", median),
                     ("mean_delay", mean), ("pure_real_fired", fired[:, pure].sum(1)),
                     ("warmup_fired", (first < WARMUP_EPOCHS).sum(1))):
            parts[k].append(v)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out.update(collapsed=int(collapsed.sum()), healthy=int((~collapsed).sum()), pure_real=int(pure.sum()))
    return out


def _present(rule: Optional[Rule], attribute: str, absent: float = 0.0) -> float:
    value = getattr(rule, attribute) if rule is not None else absent
    return float(value or 0.0)


def quietness(families: list[list[Optional[Rule]]]) -> list[np.ndarray]:
    """The tie-breaking keys of the combinations, most important first, each larger for the quieter or simpler
    setting: fewer rules (negated count), the summed ``sigmas``, ``patience`` and ``min_change`` of the accuracy,
    paired and class rules, their ``noise="combined"`` and ``baseline="level"`` counts, then the effective-classes
    rule's ``sigmas``, ``min_change`` and ``patience`` (absent: -1)."""
    shape = [len(f) for f in families]

    def per_family(fn) -> list[np.ndarray]:
        return [np.array([fn(r) for r in f], dtype=float) for f in families]

    def total(arrays: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(shape)
        for axis, a in enumerate(arrays):
            out = out + a.reshape([-1 if i == axis else 1 for i in range(len(shape))])
        return out.reshape(-1)

    judged = [i for i, f in enumerate(families) if any(r is not None and r.monitor != EFF for r in f)]
    eff_axis = next((i for i, f in enumerate(families) if any(r is not None and r.monitor == EFF for r in f)), None)

    def only(axes, arrays):
        return [a if i in axes else np.zeros_like(a) for i, a in enumerate(arrays)]

    keys = [-total(per_family(lambda r: r is not None))]
    for attribute in ("sigmas", "patience", "min_change"):
        keys.append(total(only(judged, per_family(lambda r, a=attribute: _present(r, a)))))
    keys.append(total(only(judged, per_family(lambda r: r is not None and r.noise == "combined"))))
    keys.append(total(only(judged, per_family(lambda r: r is not None and r.baseline == "level"))))
    if eff_axis is not None:
        for attribute in ("sigmas", "min_change", "patience"):
            keys.append(total(only([eff_axis], per_family(lambda r, a=attribute: _present(r, a, -1.0)))))
    return keys


def rank(scores: dict, quiet: list[np.ndarray]) -> np.ndarray:
    """Combination indices, best first: within the constraints first, then by the selection rule and ties."""
    allowed = ((scores["false_alarms"] <= MAX_FALSE_ALARMS * scores["healthy"] + 1e-9)
               & (scores["pure_real_fired"] == 0))
    big = 1e9
    keys = [np.arange(len(allowed))] + [-q for q in reversed(quiet)] + [
        np.nan_to_num(scores["mean_delay"], nan=big), scores["false_alarms"],
        np.nan_to_num(scores["median_delay"], nan=big), -scores["caught"], ~allowed]
    return np.lexsort(keys)


def beats(scores: dict, i: int, j: int) -> bool:
    """Whether combination ``i`` beats ``j`` by the selection rule (within the constraints: more caught, then a
    smaller median delay, then fewer false alarms, then a smaller mean delay; the quietness ties do not count)."""
    def key(k: int) -> tuple:
        allowed = (scores["false_alarms"][k] <= MAX_FALSE_ALARMS * scores["healthy"] + 1e-9
                   and scores["pure_real_fired"][k] == 0)
        return (not allowed, -scores["caught"][k], np.nan_to_num(scores["median_delay"][k], nan=1e9),
                scores["false_alarms"][k], np.nan_to_num(scores["mean_delay"][k], nan=1e9))
    return key(i) < key(j)


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
    if rule.accumulate == "cusum":
        text = f"{rule.label}: h={rule.sigmas:g} k={rule.allowance:g} {rule.noise} {rule.baseline}"
    elif rule.accumulate == "ewma":
        text = f"{rule.label}: L={rule.sigmas:g} λ={rule.smoothing:g} {rule.noise} {rule.baseline}"
    elif rule.monitor in (PAIRED, PAIRED_CLASS):
        text = f"{NAMES[rule.monitor]}: {text}"
    return text + (f" min_change={rule.min_change:g}" if rule.min_change else "")


def added_to_defaults(runs: list[dict], extra: list[Rule]) -> list[dict]:
    """Each of ``extra`` added to today's ``default_rules()``, scored on ``runs``: ``{"rule", caught, false alarms,
    delays...}`` per rule (a look after a choice, not a choice: RESULTS.md 10a)."""
    out = []
    for rule in extra:
        rules = default_rules() + [rule]
        s = suite.summarize(runs, lambda r: suite.replay(r["trajectory"], rules)["epoch"])
        out.append(dict(s, rule=rule_code(rule), setting=_setting(rule)))
    return out


def print_added(rows: list[dict], most_alarms: int = 3) -> None:
    """For 0 to ``most_alarms`` false alarms, the added rule catching the most (then the smallest median delay)."""
    print("Today's default rules plus one accumulating rule (RESULTS.md 10a), on the development part:")
    for k in range(most_alarms + 1):
        within = [r for r in rows if r["false_alarms"] <= k and r["pure_real_fired"] == 0]
        if within:
            best = max(within, key=lambda r: (r["caught"], -(r["median_delay"] or 0), -r["false_alarms"]))
            print(f"  at most {k} false alarms: {best['caught']}/{best['collapsed']} caught, {best['false_alarms']}/"
                  f"{best['healthy']} false alarms, median {suite._delay(best['median_delay'])}: {best['setting']}")


class _Combos:
    """The combinations of one rule of each family, in ``itertools.product`` order, without listing them."""

    def __init__(self, shape: tuple) -> None:
        self.shape = shape

    def __len__(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, i: int) -> tuple:
        return tuple(int(k) for k in np.unravel_index(int(i), self.shape))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", help="JSON record of benchmarks/suite.py")
    ap.add_argument("--top", type=int, default=10, help="candidates to print")
    ap.add_argument("--json", default="runs/bench/choose_defaults.json", help="where to write the result ('': nowhere)")
    ap.add_argument("--round3", action="store_true", help="round 3's grid (RESULTS.md, section 10)")
    ap.add_argument("--added", action="store_true", help="score today's defaults plus each accumulating rule of "
                    "round 3's grid, on the development part, instead of choosing")
    args = ap.parse_args(argv)
    runs = development_runs(json.loads(Path(args.record).read_text()))
    if args.added:
        rows = added_to_defaults(runs, [r for r in accumulation_rules() if r is not None])
        print_added(rows)
        write_record({"record": args.record, "added": rows}, args.json)
        return {"added": rows}
    if args.round3:
        families = [round3_noise_rules(), paired_rules(), round3_class_rules(), accumulation_rules()]
        labels = ("acc", "acc_change", "class", "accumulation")
    else:
        families = [noise_rules(ACC), paired_rules(), class_rules(), eff_rules()]
        labels = ("acc", "acc_change", "class", "eff_classes")
    scores = grid_scores(runs, [fire_epochs(runs, f) for f in families])
    shape = tuple(len(f) for f in families)
    combos = _Combos(shape)
    order = rank(scores, quietness(families))
    allowed = int(MAX_FALSE_ALARMS * scores["healthy"] + 1e-9)
    print(f"Development part: {len(runs)} runs, {scores['collapsed']} collapsed, {scores['healthy']} healthy "
          f"({scores['pure_real']} pure_real); {len(combos)} rule sets; allowed: at most {allowed} false alarms "
          f"(2% of {scores['healthy']}), no firing in a pure_real run.\n")

    def rules_of(i: int) -> list[Rule]:
        return [f[k] for f, k in zip(families, combos[i]) if f[k] is not None] + [heldout_loss_rule()]

    def row(i: int) -> dict:
        return {**{name: _setting(f[k]) for name, f, k in zip(labels, families, combos[i])},
                **{k: (None if np.isnan(float(v[i])) else float(v[i])) if np.ndim(v) else v
                   for k, v in scores.items()},
                "rules": [rule_code(r) for r in rules_of(i)]}

    top = [dict(row(i), equal=n) for i, n in distinct(order, scores, args.top)]
    print(f"The best {len(top)} rule sets with distinct figures (each the first of the rule sets sharing its figures, "
          "by the ranking; 'equal': how many share them):\n")
    print("| # | " + " | ".join(labels) + " | equal | caught | false alarms | median delay | mean delay "
          "| fired in pure_real | fired in warm-up |")
    print("|---" * (len(labels) + 8) + "|")
    for k, t in enumerate(top, 1):
        print(f"| {k} | " + " | ".join(t[name] for name in labels) + f" | {t['equal']} | "
              f"{t['caught']:.0f}/{t['collapsed']} | {t['false_alarms']:.0f}/{t['healthy']} | "
              f"{suite._delay(t['median_delay'])} | {suite._delay(t['mean_delay'])} | "
              f"{t['pure_real_fired']:.0f}/{t['pure_real']} | {t['warmup_fired']:.0f}/{len(runs)} |")
    best = int(order[0])
    chosen = top[0]
    ok = chosen["false_alarms"] <= allowed and chosen["pure_real_fired"] == 0
    rules = rules_of(best)
    check = suite.summarize(runs, lambda r: suite.replay(r["trajectory"], rules)["epoch"])
    assert (check["caught"], check["false_alarms"]) == (chosen["caught"], chosen["false_alarms"]), "grid != replay"
    today = default_rules()
    index = {name: {r: i for i, r in enumerate(f)} for name, f in zip(labels, families)}
    present = {labels[next(i for i, f in enumerate(families) if r in f)]: r for r in today if r != heldout_loss_rule()}
    today_combo = tuple(index[name][present.get(name)] for name in labels)
    today_i = int(np.ravel_multi_index(today_combo, shape))
    defaults = suite.summarize(runs, lambda r: suite.replay(r["trajectory"], today)["epoch"])
    assert (defaults["caught"], defaults["false_alarms"]) == (scores["caught"][today_i], scores["false_alarms"][today_i])
    better = beats(scores, best, today_i)
    print(f"\nThe current default rules on the development part: {defaults['caught']}/{defaults['collapsed']} caught, "
          f"{defaults['false_alarms']}/{defaults['healthy']} false alarms, median delay "
          f"{suite._delay(defaults['median_delay'])}, mean delay {suite._delay(float(scores['mean_delay'][today_i]))}, "
          f"fired in pure_real {defaults['pure_real_fired']}/{defaults['pure_real']}; ranked "
          f"{int(np.flatnonzero(order == today_i)[0]) + 1} of {len(combos)}.")
    code = "[\n" + "".join(f"    {rule_code(r)},\n" for r in rules) + "]"
    print(("\nChosen (development part only):\n" if ok else "\nNO rule set meets the constraints; the best is:\n")
          + code)
    print(f"\nIt {'BEATS' if better else 'does NOT beat'} the current default rules by the selection rule"
          + ("." if better else ": keep them."))
    result = {"record": args.record, "development_runs": len(runs), "combinations": len(combos),
              "max_false_alarms": allowed, "constraints_met": ok, "top": top, "chosen": chosen, "chosen_code": code,
              "beats_current_defaults": bool(better),
              "chosen_per_dataset": {d: suite.summarize([r for r in runs if r["task"] == d],
                                                        lambda r: suite.replay(r["trajectory"], rules)["epoch"])
                                     for d in suite.DEV_DATASETS},
              "current_defaults": defaults}
    write_record(result, args.json)
    return result


if __name__ == "__main__":
    main()
