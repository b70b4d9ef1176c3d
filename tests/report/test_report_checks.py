"""The report's per-check view (issue 18): the bound in force at each check, the timeline, the health beside the
last action, the monitored and the folded panels, the indicator glossary, and a reference run."""
from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from collapse_guard import CollapseGuard, CollapseReport, HeldOutRealCheck, RatioMonitor, Rule
from collapse_guard.callbacks.check_log import CheckLog
from collapse_guard.callbacks.rule_state import RuleState
from collapse_guard.cli import main
from collapse_guard.report import checks, load_record
from collapse_guard.report.glossary import INDICATORS, bad_direction, describe, legend
from collapse_guard.report.html import render_html
from collapse_guard.report.plots import (
    BOUND_COLORS, REFERENCE_COLOR, figure_indicators, figure_other_indicators, monitored_keys,
)
from collapse_guard.report.reference import comparison
from collapse_guard.report.summary import headline, plain_summary, print_summary

from cg_testing import TinyMLP, make_mixed, make_trainer

README = Path(__file__).resolve().parents[2] / "README.md"
RULES = (
    Rule("collapse/heldout_real/acc", threshold=1.01, name="acc_floor"),  # fires at every check
    Rule("collapse/heldout_real/worst_class_recall", relative=0.5, patience=2),  # a bound that moves with the best
    Rule("collapse/heldout_real/acc", sigmas=2.0, name="acc_noise"),  # a bound that moves with the standard error
    Rule("collapse/heldout_real/class_recall/*", sigmas=3, noise="combined", baseline="level", patience=2),
)


def fit(out: Path, rules, max_epochs: int, reference=None) -> SimpleNamespace:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    guard = CollapseGuard(rules=list(rules), action="inject", verbose=False)
    check = HeldOutRealCheck()
    report = CollapseReport(dirpath=out, summary=False, reference=reference)
    trainer = make_trainer(max_epochs=max_epochs, callbacks=[report, RatioMonitor(), check, guard])
    trainer.fit(TinyMLP(), datamodule=make_mixed(real_fraction=0.5))
    assert report.result.ok, report.result.errors
    return SimpleNamespace(out=out, guard=guard, check=check, report=report, record=load_record(out))


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A guard that injects twice then stops (``acc_floor`` no model meets), with rules whose bounds move."""
    return fit(tmp_path_factory.mktemp("stopped") / "report", RULES, max_epochs=6)


@pytest.fixture(scope="module")
def recovered(tmp_path_factory, stopped):
    """A guard that injects at the first check, after which accuracy is back above its floor; the stopped run as
    its reference."""
    return fit(tmp_path_factory.mktemp("recovered") / "report", [Rule("collapse/heldout_real/acc", threshold=0.95)],
               max_epochs=4, reference=stopped.out)


# -- the bound in force at each check -------------------------------------------------------------------------
def test_the_bound_of_each_check_is_the_one_its_verdict_was_judged_against(stopped):
    """Replayed with fresh rule states on the logged indicators (member by member for the family), every rule's
    bound at every check is the recorded one; the bounds of the relative and sigmas rules move between checks."""
    (guard,) = stopped.record["guards"]
    history = stopped.record["indicators"]["history"]
    assert [c["epoch"] for c in guard["checks"]] == [r["epoch"] for r in history]
    for i, rule in enumerate(RULES):
        entries = [next(e for e in c["rules"] if e["rule"] == rule.label) for c in guard["checks"]]
        if rule.is_family:
            for name in entries[-1]["members"]:
                state = RuleState(rule.member(name))
                for entry, row in zip(entries, history):
                    verdict = state.judge(row[rule.member_key(name)], row.get(rule.member_stderr_key(name)))
                    recorded = entry["members"][name]
                    assert recorded["value"] == pytest.approx(verdict.value)
                    assert recorded["bound"] == pytest.approx(verdict.bound, rel=1e-5)
                    assert recorded["violated"] == verdict.violated
            continue
        state = RuleState(rule)
        for entry, row in zip(entries, history):
            verdict = state.judge_row(row)
            assert (entry["value"], entry["violated"]) == (pytest.approx(verdict.value), verdict.violated)
            assert entry["bound"] == pytest.approx(verdict.bound, rel=1e-5)
        bounds = [e["bound"] for e in entries if e["bound"] is not None]
        assert bounds, rule.label
        if rule.threshold is not None:  # a fixed threshold: one bound at every check
            assert len(set(bounds)) == 1, (rule.label, bounds)
        else:
            assert len(set(bounds)) > 1, (rule.label, bounds)  # it moved: the end-of-fit bound was not in force
    # every event's bound is the one its rule had at that check
    for event in guard["events"]:
        check = next(c for c in guard["checks"] if c["epoch"] == event["epoch"])
        entry = next(e for e in check["rules"] if e["rule"] == event["rule"])
        assert entry["fired"] and entry["bound"] == pytest.approx(event["threshold"])


def test_the_plot_draws_each_rules_bound_per_check(stopped):
    steps = checks.bound_steps(stopped.record)
    fig = figure_indicators(stopped.record)
    panel = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("heldout_real/worst_class_recall"))
    lines = [line for line in panel.get_lines() if line.get_drawstyle() == "steps-mid"]
    (step,) = steps["collapse/heldout_real/worst_class_recall"]
    assert len(lines) == 1 and list(lines[0].get_xdata()) == step["epoch"]
    assert list(lines[0].get_ydata()) == pytest.approx(step["bound"], nan_ok=True)
    acc = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("heldout_real/acc"))
    assert len([line for line in acc.get_lines() if line.get_drawstyle() == "steps-mid"]) == 2  # two rules
    assert {line.get_color() for line in acc.get_lines() if line.get_drawstyle() == "steps-mid"} == set(BOUND_COLORS[:2])
    member = next(ax for ax in fig.axes if ax.get_title(loc="left").startswith("heldout_real/class_recall/0"))
    assert any(line.get_drawstyle() == "steps-mid" for line in member.get_lines())  # a family member's own bound


def test_the_check_log_is_checkpointed_and_older_states_load(stopped):
    guard = stopped.guard
    state = guard.state_dict()
    assert state["checks"] == guard.summary()["checks"] and len(state["checks"]) == len(stopped.check.history)
    fresh = CollapseGuard(rules=list(RULES), action="inject")
    fresh.load_state_dict(copy.deepcopy(state))
    assert fresh.check_log.rows == state["checks"]
    older = {k: v for k, v in state.items() if k != "checks"}  # saved before the log existed
    fresh.load_state_dict(older)
    assert fresh.check_log.rows == [] and fresh.state == guard.state


def test_the_check_log_notes_a_moving_bound_without_a_trainer():
    log, state = CheckLog(), RuleState(Rule("acc", relative=0.1))
    decision = SimpleNamespace(fired=(), cooling=False)
    for epoch, value in enumerate([0.5, 0.9, 0.85, 0.7]):
        log.judge(state, {"acc": value})
        log.close(SimpleNamespace(current_epoch=epoch, global_step=10 * epoch), "ok", decision, "ok")
    assert [r["rules"][0]["bound"] for r in log.rows] == pytest.approx([None, 0.45, 0.81, 0.81], abs=1e-12)
    assert [r["rules"][0]["violated"] for r in log.rows] == [False, False, False, True]
    log.close(SimpleNamespace(current_epoch=4, global_step=40), "ok", decision, "ok")  # nothing judged: no row
    assert len(log.rows) == 4


# -- the timeline and the health ------------------------------------------------------------------------------
def test_the_timeline_has_a_row_per_check(stopped):
    record = stopped.record
    rows = checks.timeline(record)
    events = {e["epoch"]: e for e in record["guards"][0]["events"]}
    ratio = {r["epoch"]: r["real_fraction"] for r in record["ratio"]["history"]}
    assert [r["epoch"] for r in rows] == [c["epoch"] for c in record["guards"][0]["checks"]]
    for row in rows:
        assert row["real_fraction"] == ratio[row["epoch"]]
        assert row["action"] == (events[row["epoch"]]["action"] if row["epoch"] in events else "—")
        assert "acc_floor" in row["fired"]  # no model reaches 1.01
        assert row["word"] == ({"inject": "injected", "stop": "stopped"}[row["action"]] if row["action"] != "—"
                               else "cooling")
    assert [c[1] for c in checks.timeline_columns(record)] == [r.label for r in RULES]
    page = render_html(record, {})
    timeline = page.split("<h2>Timeline: every check</h2>")[1].split("<h2>")[0]
    assert timeline.count("<tr") == len(rows) + 1 and "1.0100 fired" in timeline and "cooling" in timeline
    text = plain_summary(record)
    assert "Timeline" in text and "<1.010!" in text and "cooling" in text


def test_health_at_the_last_check_beside_the_last_action(recovered):
    record = recovered.record
    (guard,) = record["guards"]
    assert [c["word"] for c in guard["checks"]][:2] == ["injected", "ok (injected)"]
    assert record["final"]["guard_state"] == "inject" == guard["state"]  # the last action, sticky
    assert record["final"]["guard_health"] == "ok (injected)" == checks.health(record)
    line = "".join(text for text, _ in headline(record))
    assert "guard inject (last action), health at the last check: ok (injected)" in line
    page = render_html(record, {})
    assert re.search(r"<dt>last action \(guard state\)</dt><dd><span[^>]*>inject</span>", page)
    assert re.search(r"<dt>health at the last check</dt><dd><span[^>]*>ok \(injected\)</span>", page)


# -- panels: monitored first, the others folded ---------------------------------------------------------------
def test_monitored_panels_first_and_the_others_folded(stopped):
    record = stopped.record
    monitored = monitored_keys(record)
    assert monitored[:2] == ["collapse/heldout_real/acc", "collapse/heldout_real/worst_class_recall"]
    assert {f"collapse/heldout_real/class_recall/{c}" for c in range(3)} <= set(monitored)
    titles = [ax.get_title(loc="left") for ax in figure_indicators(record).axes if ax.get_visible()]
    assert [t.split("  ")[0] for t in titles] == [k[len("collapse/"):] for k in monitored]
    assert titles[0] == "heldout_real/acc  ↓ bad"
    others = [ax.get_title(loc="left").split("  ")[0] for ax in figure_other_indicators(record).axes
              if ax.get_visible()]
    assert "heldout_real/loss" in others and not set(others) & set(titles)
    page = (stopped.out / "report.html").read_text()
    indicators = page.split("<h2>Indicators</h2>")[1].split("<h2>")[0]
    head, folded = indicators.split("<details>")
    assert head.count("<img") == 1 and folded.count("<img") == 1
    assert "accuracy on held-out real data" in head and "↓ falls" in head  # the legend of the monitored ones
    assert "mean loss on held-out real data" in folded and "↑ rises" in folded


def test_a_record_written_before_the_checks_still_renders(stopped, tmp_path, capsys):
    record = copy.deepcopy(stopped.record)
    for guard in record["guards"]:
        del guard["checks"]
    del record["final"]["guard_health"], record["reference"]
    (tmp_path / "report.json").write_text(json.dumps(record))
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Timeline" not in out and "health" not in out and "Guard events" in out
    fig = figure_indicators(record)  # the bound at the end, dotted, as before
    assert any(line.get_linestyle() == ":" for ax in fig.axes for line in ax.get_lines())
    assert "No per-check record" in (tmp_path / "report.html").read_text()


# -- the glossary ----------------------------------------------------------------------------------------------
def _readme_keys() -> list[tuple[str, str]]:
    """``(key, "when collapsing" cell)`` of every key of the README's "Logged metrics" table (braces expanded,
    ``.../x`` read against the row's first key, ``<source>`` and ``...`` as a member: ``real``, ``recall``)."""
    section = README.read_text(encoding="utf-8").split("## Logged metrics")[1].split("\n## ")[0]
    out = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `collapse/") or len(cells) < 5:
            continue
        first = None
        for key in re.findall(r"`([^`]+)`", cells[0]):
            if key.startswith(".../"):
                key = first.rsplit("/", 1)[0] + key[3:]
            first = first or key
            key = key.replace("<source>", "real").replace("...", "recall")  # generated/...: a feature key
            match = re.match(r"(.*)\{(.*)\}$", key)
            out += [(match[1] + k, cells[4]) for k in match[2].split(",")] if match else [(key, cells[4])]
    return out


def test_every_readme_metric_is_in_the_glossary_with_its_direction():
    keys = _readme_keys()
    assert len(keys) > 40
    for key, collapsing in keys:
        found = describe(key)
        assert found is not None and found.measures, key
        if key.endswith("_stderr"):  # a standard error, in the row of its value: no direction of its own
            assert bad_direction(key) is None, key
        elif collapsing in ("falls", "rises", "fall", "rise"):  # a row of one direction: the same in code
            assert bad_direction(key) == collapsing.rstrip("s") + "s", key
        elif collapsing in ("—", "context", "context, not a verdict"):
            assert bad_direction(key) is None, key
    assert len({i.key for i in INDICATORS}) == len(INDICATORS)  # one definition per key


def test_the_glossary_describes_members_twins_and_nothing_else():
    assert describe("collapse/heldout_real/class_recall/7").bad == "falls"
    assert describe("collapse/heldout_synthetic/acc").bad is None  # context
    assert describe("collapse/generated/coverage").bad == "falls"
    assert describe("collapse/share/gen1").key == "collapse/share/*"
    assert describe("val_loss") is None and describe("collapse/heldout_real/nope") is None
    (family, members), = legend(["collapse/heldout_real/class_recall/0", "collapse/heldout_real/class_recall/1"])
    assert family.key == "collapse/heldout_real/class_recall/*" and len(members) == 2


# -- the reference run -----------------------------------------------------------------------------------------
def test_the_reference_is_kept_overlaid_and_compared(recovered, stopped):
    record = recovered.record
    reference = record["reference"]
    assert reference["path"] == str(stopped.out / "report.json")
    assert reference["indicators"] == stopped.record["indicators"] and reference["final"] == stopped.record["final"]
    fig = figure_indicators(record)
    (ref_line,) = [line for line in fig.axes[0].get_lines() if line.get_color() == REFERENCE_COLOR]
    assert list(ref_line.get_ydata()) == pytest.approx(
        [r["collapse/heldout_real/acc"] for r in stopped.record["indicators"]["history"]])
    rows = {c["key"]: c for c in comparison(record)}
    acc = rows["collapse/heldout_real/acc"]
    assert acc["this"] == record["indicators"]["history"][-1]["collapse/heldout_real/acc"]
    assert acc["reference"] == stopped.record["indicators"]["history"][-1]["collapse/heldout_real/acc"]
    assert acc["worse"] == (acc["this"] < acc["reference"]) and rows["collapse/heldout_real/loss"]["bad"] == "rises"
    page = (recovered.out / "report.html").read_text()
    assert "<h2>Comparison with the reference run</h2>" in page and "reference heldout_real/acc" in page
    console = Console(file=io.StringIO(), width=200)
    print_summary(record, console=console)
    assert "Against the reference run" in console.file.getvalue()


def test_the_command_line_compares_with_a_reference(recovered, tmp_path, capsys):
    worse = copy.deepcopy(recovered.record)
    for row in worse["indicators"]["history"]:
        row["collapse/heldout_real/acc"] = row["collapse/heldout_real/acc"] / 2  # a reference it beats
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "report.json").write_text(json.dumps(worse))
    code = main(["report", str(recovered.out), "--reference", str(tmp_path / "ref"), "--out", str(tmp_path / "out"),
                 "--no-summary"])
    assert code == 0, capsys.readouterr().err
    page = (tmp_path / "out" / "report.html").read_text()
    assert str(tmp_path / "ref" / "report.json") in page and "not worse" in page
    assert (recovered.out / "report.json").read_text() == json.dumps(recovered.report.record, indent=2) + "\n"


def test_a_bad_reference_is_an_error_naming_it_before_training(recovered, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=r"CollapseReport\(reference=...\): the reference run '.*nowhere' cannot"):
        CollapseReport(reference=missing)
    broken = copy.deepcopy(recovered.record)
    broken["indicators"]["history"][1]["epoch"] = "one"
    (tmp_path / "report.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"report.json: indicators.history\[1\].epoch is a string"):
        CollapseReport(reference=tmp_path)
    assert main(["report", str(recovered.out), "--reference", str(tmp_path), "--no-summary"]) == 2
    err = capsys.readouterr().err
    assert "the reference run" in err and "indicators.history[1].epoch" in err and "Traceback" not in err
