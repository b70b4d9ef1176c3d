"""Multi-source attribution benchmark (issue 17; protocol: RESULTS.md, section 9), run by
``python benchmarks/detection.py --multi-source``.

Per dataset (``_datasets.DATASETS``) and seed, six fits of the suite's configuration (``detection.CONFIG``: 14
epochs of 1920 samples, the real fraction ``_common.schedule()``: 0.9 for epochs 0-3, falling to 0 at epoch 8):

* four harmful mixes, ``good`` + one harmful source at equal weights: ``label_noise``, ``mode_loss``, ``offset``
  (the suite's scenario sources) and ``replace`` (the last generation, 30, of the suite's replace chain);
* the healthy control ``good`` + ``good2`` (another good generator of the same family, seed + 100);
* ``real_only``: real data only, reserve included, as many samples (``detection.real_only_run``).

Each two-source fit runs ``[RatioMonitor(), HeldOutRealCheck(), SourceAudit(), SourceCheck(), CollapseGuard()]``
(defaults; ``observe=True``: the guard's action ``"warn"`` and a datamodule whose ``quarantine`` only records, so
nothing acts) with a probe recording at every epoch every logged ``collapse/`` value, the real test accuracy and
the epoch's samples per source. A source is *named* when a guard event of action ``"quarantine"`` lists it in
``sources`` (observe mode: when the guard called ``quarantine`` with it).

Scoring (:func:`score`) per part (:func:`part`): harmful named / harmful runs, runs naming a good source / two-source
runs, quarantines in the control, guarded minus real-only final test accuracy, synthetic share of the fit, each
source's share of the last epoch, the audit's set-up flags; :func:`replay_names` replays any attribution rules on
the logged trajectories (``RuleState.judge_row``, the code the guard runs).
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import _datasets  # noqa: E402
from _common import SYNTHETIC_SIZE, fit_groups, machine_info, median, quiet, schedule  # noqa: E402

from collapse_guard.data import SyntheticSource  # noqa: E402

HARMFUL = ("label_noise", "mode_loss", "offset", "replace")
CONTROL = "good2"
SCENARIOS = HARMFUL + (CONTROL, "real_only")
#: the development part (looked at while designing the attribution rules) and the untouched part (RESULTS.md, 9)
DEV_DATASETS, DEV_SEEDS = ("digits", "wine", "text", "digits4x4"), (0, 1)
UNTOUCHED_SEEDS, NEVER_LOOKED = (6, 7, 8), ("breast_cancer", "chatterbot", "iris")


def part(dataset: str, seed: int) -> str:
    """``"development"``, ``"untouched"`` or ``"other"`` (RESULTS.md, section 9)."""
    if dataset in DEV_DATASETS and seed in DEV_SEEDS:
        return "development"
    if seed in UNTOUCHED_SEEDS or dataset in NEVER_LOOKED:
        return "untouched"
    return "other"


# -- the sources ------------------------------------------------------------------------------------------------
def _only(sources: dict) -> SyntheticSource:
    """The one source of a scenario builder's result; for a chain, its last generation."""
    return max(sources.values(), key=lambda s: s.generation)


def good2(dataset: str, data, seed: int) -> SyntheticSource:
    """Another good generator of the dataset's family, fitted on the same real training data with seed + 100."""
    s = seed + 100
    if dataset in ("digits", "digits4x4"):
        splits = data.splits if dataset == "digits4x4" else data
        source = _common.synth_good(splits, s)["gen1"]  # GMM(4, 30), random_state seed + 100, sampled with + 101
        if dataset == "digits4x4":
            source = SyntheticSource(_datasets.pool(source.data), generator=f"{source.generator}, pooled 4x4")
        return source
    if dataset == "text":
        import _text

        x, y = _text.replace_chain(data.split, s, 1)[0]  # generation 1 of the per-topic 3-gram chain, seed + 100
        return SyntheticSource(_text.tensors(x, y), generator=f"char {_text.ORDER}-gram per topic (seed + 100)")
    if dataset == "chatterbot":
        gen = _datasets.CHATTERBOT
        x, y = _datasets.LineNGrams().fit(*_datasets._text_train(data)).sample(SYNTHETIC_SIZE,
                                                                               np.random.default_rng(s + 1))
        return gen.source(x, y, f"{gen.name} (seed + 100)")
    gen = _datasets.TABULAR
    x, y = _datasets._tabular_gmm(s).fit(*data.split["train"]).sample(SYNTHETIC_SIZE, rng=s + 1)
    return gen.source(x, y, f"{gen.name} (seed + 100)")


def build(dataset: str, scenario: str, data, seed: int) -> Optional[dict]:
    """The synthetic sources of ``scenario`` (name -> source), ``None`` for ``real_only``."""
    if scenario == "real_only":
        return None
    build_one = _datasets.builders(dataset)
    good = _only(build_one["good_generator"](data, seed))
    other = good2(dataset, data, seed) if scenario == CONTROL else _only(build_one[scenario](data, seed))
    return {"good": good, scenario: other}


# -- the fits ---------------------------------------------------------------------------------------------------
def _observing_datamodule():
    from collapse_guard import MixedDataModule

    class ObservedQuarantine(MixedDataModule):
        """A ``MixedDataModule`` whose :meth:`quarantine` records the call (epoch, sources, reason) and changes
        nothing: the observe fit."""

        def quarantine(self, sources, weight: float = 0.0, reason: str = "") -> dict:
            names = [sources] if isinstance(sources, str) else list(sources)
            record = {"epoch": self._epoch(), "sources": names, "weight": float(weight), "reason": reason,
                      "observed": True}
            self.__dict__.setdefault("observed_quarantines", []).append(record)
            return record

    return ObservedQuarantine


def _named(events: list[dict], quarantines: list[dict], sources: list[str], observe: bool = False) -> list[str]:
    """The sources named: listed in a quarantine event's ``sources``, or quarantined by the datamodule. Observing
    (the guard's action ``"warn"``, under which the attribution rules warn too), also the sources that a fired rule's
    member names (``GuardEvent.rules``: ``"missing classes mode_loss"``)."""
    named = {s for e in events if e.get("action") == "quarantine" for s in (e.get("sources") or ())}
    named |= {s for q in quarantines for s in q.get("sources", ())}
    if observe:
        named |= {member_source(rule, sources) for e in events for rule in e.get("rules", ())} - {None}
    return [s for s in sources if s in named]


def _first_named(events: list[dict], quarantines: list[dict], sources: list[str], observe: bool) -> Optional[int]:
    epochs = [q["epoch"] for q in quarantines if q.get("epoch") is not None]
    epochs += [e["epoch"] for e in events if _named([e], [], sources, observe)]
    return min(epochs, default=None)


def _event(e) -> dict:
    state = e.state_dict() if hasattr(e, "state_dict") else dict(vars(e))
    state["sources"] = list(getattr(e, "sources", None) or ())
    state["rules"] = list(state.get("rules") or ())
    return state


def guarded_fit(dataset: str, scenario: str, seed: int, task, data, sources: dict, cfg: dict,
                observe: bool = False) -> dict:
    """One two-source fit with the attribution producers and the default guard (acting, or observing)."""
    import torch
    from pytorch_lightning import Trainer

    import detection
    from collapse_guard import (CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor, SourceAudit,
                                SourceCheck)

    torch.manual_seed(seed)
    cls = _observing_datamodule() if observe else MixedDataModule
    dm = cls(real=task.real_dm(data, cfg["batch_size"]), synthetic=sources, real_fraction=schedule(), holdout="val",
             reserve=cfg["reserve"], samples_per_epoch=cfg["samples_per_epoch"], seed=seed,
             synthetic_weights={name: 1.0 for name in sources})
    audit, check = SourceAudit(), SourceCheck()
    guard = CollapseGuard(action="warn", verbose=False) if observe else CollapseGuard(verbose=False)
    probe = detection.Probe(task.test(data), cfg, drift=False, backend="", seed=seed)
    ratio = RatioMonitor()  # its history: each epoch's samples per source
    trainer = Trainer(callbacks=[ratio, HeldOutRealCheck(), audit, check, probe, guard],
                      **_common.trainer_kwargs(cfg["epochs"]))
    t0 = time.perf_counter()
    trainer.fit(task.model(), datamodule=dm)
    names = list(sources)
    events = [_event(e) for e in guard.events]
    quarantines = [dict(q) for q in (dm.__dict__.get("observed_quarantines", []) if observe else dm.quarantines)]
    named = _named(events, quarantines, names, observe)
    harmful = scenario if scenario in HARMFUL else None
    total = dm.samples_by_source()
    epochs = [row["samples"] for row in ratio.history]
    last = epochs[-1]
    n_last = max(1, sum(last.values()))
    report = audit.report or {"sources": {}}
    rows = probe.rows
    for row, counts in zip(rows, epochs):
        row["samples"] = dict(counts)
        row.pop("heldout_correct", None)
    return {
        "dataset": dataset, "scenario": scenario, "seed": seed, "part": part(dataset, seed),
        "mode": "observe" if observe else "act", "sources": names, "harmful": harmful,
        "generators": {n: s.generator for n, s in sources.items()},
        "named": named, "harmful_named": harmful in named if harmful else None,
        "wrong_named": [n for n in named if n != harmful],
        "first_quarantine": _first_named(events, quarantines, names, observe),
        "events": events, "quarantines": quarantines, "injections": [dict(i) for i in dm.injections],
        "epochs_run": len(rows), "max_epochs": cfg["epochs"], "final_test_acc": rows[-1]["test_acc"],
        "synthetic_share": sum(total.get(n, 0) for n in names) / max(1, sum(total.values())),
        "samples_by_source": total,
        "last_epoch_shares": {k: v / n_last for k, v in last.items()},
        "audit": report,
        "audit_missing": {n: list(report["sources"].get(n, {}).get("missing_classes") or []) for n in names},
        "audit_copies": {n: report["sources"].get(n, {}).get("heldout_copies") for n in names},
        "seconds": time.perf_counter() - t0,
        "trajectory": rows,
    }


def fit_group(dataset: str, seed: int, cfg: dict, scenarios=SCENARIOS, observe: bool = False) -> list[dict]:
    """Every scenario of ``dataset`` at ``seed`` (one worker's task; one torch thread)."""
    import torch

    import detection

    quiet()
    torch.set_num_threads(1)
    task = _datasets.task(dataset)
    data = task.make(seed)
    runs = []
    real_only = detection.real_only_run(seed, task, data, cfg)["final_test_acc"]  # every fit is compared with it
    for scenario in scenarios:
        if scenario == "real_only":
            runs.append({"dataset": dataset, "scenario": "real_only", "seed": seed, "part": part(dataset, seed),
                         "final_test_acc": real_only, "real_only_acc": real_only})
            continue
        for mode in ((False, True) if observe else (False,)):
            r = guarded_fit(dataset, scenario, seed, task, data, build(dataset, scenario, data, seed), cfg, mode)
            r["real_only_acc"] = real_only
            runs.append(r)
    return runs


def run(groups: list[tuple[str, int]], cfg: dict, jobs: int = 1, scenarios=SCENARIOS, observe: bool = False) -> dict:
    """Fit every (dataset, seed) group in up to ``jobs`` worker processes."""
    t0 = time.perf_counter()
    runs = fit_groups(groups, fit_group, (cfg, scenarios, observe), jobs, lambda result: ", ".join(
        f"{r['scenario']}{'(obs)' if r.get('mode') == 'observe' else ''} named {r['named'] or '-'}"
        for r in result if r["scenario"] != "real_only"))
    order = {d: i for i, d in enumerate(_datasets.DATASETS)}
    runs.sort(key=lambda r: (order[r["dataset"]], r["seed"], SCENARIOS.index(r["scenario"]), r.get("mode", "")))
    return {"config": cfg, "groups": groups, "scenarios": list(scenarios), "observe": observe, "runs": runs,
            "seconds": time.perf_counter() - t0, "jobs": jobs, "machine": machine_info()}


# -- the scores -------------------------------------------------------------------------------------------------
def _frac(n: int, d: int) -> str:
    return f"{n}/{d}" + (f" ({100 * n / d:.0f}%)" if d else "")


def summarize(runs: list[dict]) -> dict:
    """The goal figures over acting two-source runs."""
    two = [r for r in runs if r["scenario"] != "real_only" and r.get("mode") == "act"]
    harmful = [r for r in two if r["harmful"]]
    control = [r for r in two if r["scenario"] == CONTROL]
    gaps = [r["final_test_acc"] - r["real_only_acc"] for r in two]
    mode_loss = [r for r in harmful if r["scenario"] == "mode_loss"]
    done = [r for r in harmful if r["harmful_named"] and r["last_epoch_shares"].get(r["harmful"], 0) <= 0.05
            and r["last_epoch_shares"].get("good", 0) >= 0.20 and r["synthetic_share"] >= 0.5
            and r["final_test_acc"] - r["real_only_acc"] >= -0.01]
    return {
        "two_source_runs": len(two), "harmful_runs": len(harmful), "control_runs": len(control),
        "harmful_named": sum(bool(r["harmful_named"]) for r in harmful),
        "wrong_named": sum(bool(r["wrong_named"]) for r in two),
        "control_quarantined": sum(bool(r["quarantines"]) for r in control),
        "mean_gap": float(np.mean(gaps)) if gaps else None,
        "within_1_point": sum(g >= -0.01 for g in gaps),
        "synthetic_share_min": min((r["synthetic_share"] for r in two), default=None),
        "synthetic_share_mean": float(np.mean([r["synthetic_share"] for r in two])) if two else None,
        "synthetic_at_least_half": sum(r["synthetic_share"] >= 0.5 for r in two),
        "harmful_last_share_mean": float(np.mean([r["last_epoch_shares"].get(r["harmful"], 0) for r in harmful]))
        if harmful else None,
        "good_last_share_mean": float(np.mean([r["last_epoch_shares"].get("good", 0) for r in harmful]))
        if harmful else None,
        "mode_loss_runs": len(mode_loss),
        "harmful_flagged": sum(bool(r["audit_missing"].get(r["harmful"])) for r in harmful),
        "mode_loss_flagged": sum(bool(r["audit_missing"].get("mode_loss")) for r in mode_loss),
        "audit_flags_good": sum(bool(r["audit_missing"].get(n)) for r in two for n in r["sources"] if n in ("good", CONTROL)),
        "copies": sum(bool(v) for r in two for v in r["audit_copies"].values()),
        "median_first_quarantine": median([r["first_quarantine"] for r in harmful if r["harmful_named"]]),
        "injections": sum(bool(r["injections"]) for r in two),
        "stopped": sum(r["epochs_run"] < r["max_epochs"] for r in two),
        "done_when": len(done),
    }


def goals(s: dict) -> list[str]:
    """The issue's goals on a part, met or not, with the distance."""
    def ok(cond):
        return "met" if cond else "NOT met"
    named = s["harmful_named"] / s["harmful_runs"] if s["harmful_runs"] else float("nan")
    wrong = s["wrong_named"] / s["two_source_runs"] if s["two_source_runs"] else float("nan")
    gap = s["mean_gap"] if s["mean_gap"] is not None else float("nan")
    return [
        f"{ok(named >= 0.9)}: harmful source named in >= 90% of harmful runs ({100 * named:.1f}%)",
        f"{ok(wrong <= 0.02)}: a wrong source named in <= 2% of two-source runs ({100 * wrong:.1f}%)",
        f"{ok(gap >= -0.01)}: guarded final real test accuracy within 1 point of real-only, mean "
        f"({100 * gap:+.2f} points; {s['within_1_point']}/{s['two_source_runs']} runs within 1 point)",
        f"{ok(s['synthetic_at_least_half'] == s['two_source_runs'])}: >= 50% synthetic samples "
        f"({s['synthetic_at_least_half']}/{s['two_source_runs']} runs; minimum "
        f"{100 * (s['synthetic_share_min'] or 0):.1f}%)",
        f"{ok(s['control_quarantined'] == 0)}: no quarantine in the two-good control "
        f"({s['control_quarantined']}/{s['control_runs']} control runs quarantined)",
        f"{ok(s['mode_loss_flagged'] == s['mode_loss_runs'])}: the audit flags every source missing classes before "
        f"training ({s['mode_loss_flagged']}/{s['mode_loss_runs']} mode_loss runs; good sources flagged "
        f"{s['audit_flags_good']}; sources with held-out copies {s['copies']})",
    ]


def _pct(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _pts(x: Optional[float]) -> str:
    return "—" if x is None else f"{100 * x:+.2f}"


HEAD = ("| harmful named | wrong named | control quarantined | guarded − real-only (points, mean) | within 1 point "
        "| synthetic share (min / mean) | last-epoch share harmful / good (mean) | done-when fits "
        "| audit: harmful missing classes |")


def _cells(s: dict) -> str:
    return (f"{_frac(s['harmful_named'], s['harmful_runs'])} | {_frac(s['wrong_named'], s['two_source_runs'])} | "
            f"{s['control_quarantined']}/{s['control_runs']} | {_pts(s['mean_gap'])} | "
            f"{s['within_1_point']}/{s['two_source_runs']} | {_pct(s['synthetic_share_min'])} / "
            f"{_pct(s['synthetic_share_mean'])} | {_pct(s['harmful_last_share_mean'])} / "
            f"{_pct(s['good_last_share_mean'])} | {s['done_when']}/{s['harmful_runs']} | "
            f"{s['harmful_flagged']}/{s['harmful_runs']}")


def score(record: dict) -> dict:
    runs = [r for r in record["runs"] if r["scenario"] != "real_only"]
    out: dict = {"parts": {}}
    for name in dict.fromkeys(r["part"] for r in runs):  # section 9's parts, or the labels of --report-from
        rs = [r for r in runs if r["part"] == name]
        if not rs:
            continue
        out["parts"][name] = {
            "summary": summarize(rs),
            "scenarios": {s: summarize([r for r in rs if r["scenario"] == s]) for s in HARMFUL + (CONTROL,)
                          if any(r["scenario"] == s for r in rs)},
            "datasets": {d: summarize([r for r in rs if r["dataset"] == d])
                         for d in dict.fromkeys(r["dataset"] for r in rs)},
        }
    return out


def _short_rule(e: dict) -> str:
    return e.get("rule", "").replace("collapse/", "")


def report(record: dict, scores: dict) -> str:
    runs = record["runs"]
    lines = [f"Multi-source attribution: {sum(r['scenario'] != 'real_only' for r in runs)} two-source fits and "
             f"{sum(r['scenario'] == 'real_only' for r in runs)} real-only fits over {len(record['groups'])} "
             "(dataset, seed) groups; callbacks RatioMonitor() + HeldOutRealCheck() + SourceAudit() + SourceCheck() "
             "+ CollapseGuard()" + (" (observe fits too: action warn, quarantine recorded only)" if record["observe"]
                                    else "") + ".", ""]
    lines += ["| part " + HEAD, "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {_cells(p['summary'])} |" for name, p in scores["parts"].items()]
    for name, p in scores["parts"].items():
        lines += ["", f"**{name} part**: goals: " + "; ".join(goals(p["summary"])), "",
                  f"{name} part, per scenario:", "", "| scenario " + HEAD, "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| good+{s} | {_cells(x)} |" for s, x in p["scenarios"].items()]
        lines += ["", f"{name} part, per dataset:", "", "| dataset " + HEAD, "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {d} | {_cells(x)} |" for d, x in p["datasets"].items()]
    lines += ["", "Per run (acting fits): named sources, first quarantine epoch, guard actions (epoch:action rule "
              "[sources]), final real test accuracy guarded / real-only, synthetic share, last-epoch shares, audit "
              "missing classes.", "",
              "| dataset | seed | scenario | named | first q. | actions | acc guarded / real-only | synthetic "
              "| last epoch (real+reserve / good / other) | audit missing |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r["scenario"] == "real_only" or r.get("mode") != "act":
            continue
        other = r["sources"][1]
        sh = r["last_epoch_shares"]
        acts = "; ".join(f"{e['epoch']}:{e['action']} {_short_rule(e)}" + (f" {e['sources']}" if e["sources"] else "")
                         for e in r["events"]) or "none"
        missing = ", ".join(f"{n} {v}" for n, v in r["audit_missing"].items() if v) or "none"
        lines.append(f"| {r['dataset']} | {r['seed']} | {r['scenario']} | {', '.join(r['named']) or '—'} | "
                     f"{'—' if r['first_quarantine'] is None else r['first_quarantine']} | {acts} | "
                     f"{r['final_test_acc']:.3f} / {r['real_only_acc']:.3f} | {_pct(r['synthetic_share'])} | "
                     f"{_pct(sh.get('real', 0) + sh.get('reserve', 0))} / {_pct(sh.get('good', 0))} / "
                     f"{_pct(sh.get(other, 0))} | {missing} |")
    obs = [r for r in runs if r.get("mode") == "observe"]
    if obs:
        lines += ["", "Observe fits (nothing acts): the sources the guard would have quarantined, and when.", "",
                  "| dataset | seed | scenario | would name | first epoch |", "|---|---|---|---|---|"]
        lines += [f"| {r['dataset']} | {r['seed']} | {r['scenario']} | {', '.join(r['named']) or '—'} | "
                  f"{'—' if r['first_quarantine'] is None else r['first_quarantine']} |" for r in obs]
    lines += ["", f"wall time {record['seconds']:.0f} s ({record['jobs']} jobs); machine: {record['machine']}"]
    return "\n".join(lines)


# -- replaying attribution rules on the logged indicators ----------------------------------------------------
def replay_names(trajectory: list[dict], rules: list) -> list[tuple[int, str, Optional[str]]]:
    """``(epoch, rule label, member)`` of every firing of ``rules`` judged row by row on a run's trajectory
    (``RuleState.judge_row``; nothing acts, so the rows are those of the fit as it ran)."""
    from collapse_guard.callbacks.rules import RuleState

    states = [RuleState(rule) for rule in rules]
    out = []
    for row in trajectory:
        for rule, state in zip(rules, states):
            verdict = state.judge_row(row)
            if verdict is not None and verdict.fired:
                out.append((row["epoch"], rule.label, verdict.member))
    return out


def member_source(member: Optional[str], sources: list[str]) -> Optional[str]:
    """The source a family rule's member names (the last part of its key, or a whole word of it)."""
    if member is None:
        return None
    for s in sorted(sources, key=len, reverse=True):
        if re.search(rf"(?<![\w]){re.escape(s)}(?![\w])", str(member)):
            return s
    return None


def read_records(spec: str) -> dict:
    """The records of ``--report-from``: comma-separated ``path`` (its runs keep the parts they were scored with) or
    ``LABEL=path`` (every run of that file is one part, ``LABEL``: a part section 9's ``part()`` does not know, such
    as section 9d's seeds 27-29), joined into one record."""
    import json

    runs, groups, seconds, first = [], [], 0.0, None
    for item in (x for x in spec.split(",") if x):
        label, _, path = item.rpartition("=")
        record = json.loads(Path(path).read_text())
        first = first or record
        for r in record["runs"]:
            runs.append(dict(r, part=label) if label else r)
        groups += record.get("groups", [])
        seconds += record.get("seconds", 0.0)
    return {**first, "runs": runs, "groups": groups, "seconds": seconds}


def extra_figures(runs: list[dict]) -> str:
    """What section 9d reads beside the tables, for the acting two-source runs: harmful runs against the control
    of the same dataset and seed, runs more than 1 point below real-only, the quarantines by scenario, epoch and
    rule, other actions, misses, wrong names, runs under 50% synthetic, held-out copies, done-when failures."""
    from collections import Counter

    runs = [r for r in runs if r["scenario"] != "real_only" and r.get("mode", "act") == "act"]
    control = {(r["dataset"], r["seed"]): r["final_test_acc"] for r in runs if r["scenario"] == CONTROL}
    lines = []
    diffs = [r["final_test_acc"] - control[(r["dataset"], r["seed"])] for r in runs
             if r["harmful"] and (r["dataset"], r["seed"]) in control]
    if diffs:
        lines.append(f"harmful - control (same dataset, seed): mean {100 * np.mean(diffs):+.2f}, min "
                     f"{100 * min(diffs):+.2f}, max {100 * max(diffs):+.2f} points")
    below = Counter(r["dataset"] for r in runs if r["final_test_acc"] - r["real_only_acc"] < -0.01)
    lines.append(f"runs more than 1 point below real-only: {sum(below.values())} {dict(below)}")
    quarantines = Counter((r["scenario"], e["epoch"], e["rule"]) for r in runs for e in r["events"]
                          if e["action"] == "quarantine" and r["harmful"] in e["sources"])
    lines += [f"  quarantine of the harmful source {k}: {v}" for k, v in sorted(quarantines.items())]
    lines.append(f"other actions: {dict(Counter(e['action'] for r in runs for e in r['events'] if e['action'] != 'quarantine'))}")
    lines.append(f"harmful not named: {[(r['dataset'], r['seed'], r['scenario']) for r in runs if r['harmful'] and not r['harmful_named']]}")
    lines.append(f"wrong named: {[(r['dataset'], r['seed'], r['scenario'], r['wrong_named']) for r in runs if r['wrong_named']]}")
    lines.append(f"under 50% synthetic: {[(r['dataset'], r['seed'], r['scenario'], round(r['synthetic_share'], 3)) for r in runs if r['synthetic_share'] < 0.5]}")
    lines.append(f"held-out copies: {[(r['dataset'], r['seed'], r['scenario'], r['audit_copies']) for r in runs if any((r.get('audit_copies') or {}).values())]}")
    return "\n".join(lines)


def main(args, write_record) -> dict:
    """``detection.py --multi-source``: fit, print the report, write the record."""
    import detection

    if args.report_from:  # re-score saved records (the observe fits' names re-read from their events)
        record = read_records(args.report_from)
        for r in record["runs"]:
            if r["scenario"] != "real_only":
                observing = r.get("mode") == "observe"
                r["named"] = _named(r["events"], r["quarantines"], r["sources"], observing)
                r["first_quarantine"] = _first_named(r["events"], r["quarantines"], r["sources"], observing)
                r["harmful_named"] = r["harmful"] in r["named"] if r["harmful"] else None
                r["wrong_named"] = [n for n in r["named"] if n != r["harmful"]]
        record["scores"] = score(record)
        print(report(record, record["scores"]))
        print(extra_figures(record["runs"]))
        if args.json:
            write_record(record, args.json)
        return record
    datasets = [d for d in (args.datasets or ",".join(_datasets.DATASETS)).split(",") if d]
    unknown = set(datasets) - set(_datasets.DATASETS)
    if unknown:
        raise SystemExit(f"unknown datasets {sorted(unknown)}; choose from {list(_datasets.DATASETS)}")
    mixes = [m for m in (args.mixes or ",".join(SCENARIOS)).split(",") if m]
    if set(mixes) - set(SCENARIOS):
        raise SystemExit(f"unknown mixes {sorted(set(mixes) - set(SCENARIOS))}; choose from {list(SCENARIOS)}")
    seeds = [int(s) for s in (args.seeds or ",".join(map(str, DEV_SEEDS))).split(",")]
    cfg = dict(detection.CONFIG, epochs=args.epochs, drift_permutations=0)
    record = run([(d, s) for d in datasets for s in seeds], cfg, jobs=args.jobs, scenarios=tuple(mixes),
                 observe=args.observe)
    record["scores"] = score(record)
    print(report(record, record["scores"]))
    write_record(record, "runs/bench/multisource.json" if args.json is None else args.json)
    return record
