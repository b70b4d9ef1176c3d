"""The layout of a schema-1 report (``collapse_guard/report/schema.py``) against wrongly typed records (issue 16).

A real record, written by ``CollapseReport`` after a short fit, is mutated at every leaf and every container: the
value replaced by one of each other JSON type, or its key deleted. Every mutation is either refused by
``check_record`` naming the path it broke, or taken by every renderer: the schema alone refuses what the renderers
cannot take. A sample goes through ``collapse-guard report`` itself: exit 2 naming the file and the path, or exit 0.
"""
from __future__ import annotations

import copy
import io
import json
import math
import numbers
import time
import warnings
from pathlib import Path

import pytest
import torch
from rich.console import Console

from collapse_guard import CollapseGuard, CollapseReport, HeldOutRealCheck, RatioMonitor, Rule, SyntheticSource
from collapse_guard._compat import Callback
from collapse_guard.callbacks.source_audit import SourceAudit
from collapse_guard.callbacks.source_check import SourceCheck
from collapse_guard.cli import main
from collapse_guard.report import checks, load_record, load_reference
from collapse_guard.report import plots
from collapse_guard.report.files import write_json
from collapse_guard.report.html import render_html
from collapse_guard.report.reference import comparison
from collapse_guard.report.record import check_record
from collapse_guard.report.schema import PROVENANCE, REPORT, Arr, Obj, check_layout, format_path
from collapse_guard.report.summary import plain_summary, print_summary

from cg_testing import SYNTH_BASE, TinyMLP, id_dataset, make_mixed, make_trainer

HOSTILE = "[/b]$x^$<i>&"
#: one value of each JSON type, integers and numbers with a fractional part apart
VALUES = (None, True, 7, 0.5, HOSTILE, [1], {"k": 1})
DELETE = "<the key deleted>"
#: the indicators kept in the mutated record: monitored and not, a value and its standard error, a family member
KEPT = ("collapse/heldout_real/acc", "collapse/heldout_real/acc_stderr", "collapse/heldout_real/class_recall/0",
        "collapse/gap/acc")


class QuarantineG2(Callback):
    """Quarantines ``g2`` at the end of epoch 1: the record's provenance then has a quarantine."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            trainer.datamodule.quarantine("g2", weight=0.5, reason="a test")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """``report.json`` of a 3-epoch fit with a guard of every kind of rule (threshold, relative, sigmas, family)
    that injects (its per-check log included), a RatioMonitor, a HeldOutRealCheck and a MixedDataModule with
    provenance (a SourceAudit's audit, a quarantine), a SourceCheck; with itself as its reference run (as
    ``CollapseReport(reference=...)`` keeps one), so that the
    record has every optional field."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dm = make_mixed(real_fraction=0.5, synth_sizes={})
    dm.synthetic = {"g1": SyntheticSource(id_dataset(60, SYNTH_BASE, label=0), generator="GMM(k=2)", generation=3,
                                          params={"temperature": 0.7, "mix": [0.5, 0.5]}),
                    "g2": id_dataset(40, 2 * SYNTH_BASE, label=0)}
    guard = CollapseGuard(rules=[
        Rule("collapse/heldout_real/acc", threshold=1.01, name="acc_floor"),
        Rule("collapse/heldout_real/worst_class_recall", relative=0.5, patience=2),
        Rule("collapse/heldout_real/acc", sigmas=50.0, min_change=0.05, patience=2, name="acc_noise"),
        Rule("collapse/heldout_real/class_recall/*", sigmas=3, noise="combined", baseline="level", patience=2),
    ], action="inject", verbose=False)
    out = tmp_path_factory.mktemp("schema") / "report"
    report = CollapseReport(dirpath=out, summary=False, plots=False)
    trainer = make_trainer(max_epochs=3, callbacks=[report, RatioMonitor(), HeldOutRealCheck(), guard, QuarantineG2(),
                                                    SourceAudit(max_samples=24), SourceCheck(samples=8, batches=2)])
    with warnings.catch_warnings():  # g1 and g2 hold one class: the audit says so
        warnings.filterwarnings("ignore", message="SourceAudit: synthetic source")
        trainer.fit(TinyMLP(), datamodule=dm)
    assert report.result.ok and len(report.record["guards"][0]["events"]) >= 2
    record = load_record(out)
    write_json(out / "report.json", {**record, "reference": load_reference(out)})
    return out / "report.json"


def small(record: dict) -> dict:
    """``record`` with fewer indicators, one member per family rule and one source's contamination, audit and
    per-source indicators (the same layout, fewer mutations), and what a fit of map-style data without a quarantining
    guard lacks: a streaming source, an event naming sources, an audit's ``coverage_vs_best``."""
    record = copy.deepcopy(record)
    indicators = record["indicators"]
    indicators["keys"] = [k for k in indicators["keys"] if k in KEPT]
    indicators["history"] = [{k: v for k, v in row.items() if k in ("epoch", "global_step", *KEPT)}
                             for row in indicators["history"]]
    record["final"]["metrics"] = {k: v for k, v in record["final"]["metrics"].items() if k in KEPT}
    reference = record["reference"]  # one check and one epoch of the reference run, its final metrics kept
    reference["indicators"] = copy.deepcopy({**indicators, "history": indicators["history"][-1:]})  # no aliasing
    reference["ratio"]["history"] = reference["ratio"]["history"][-1:]
    reference["final"]["metrics"] = dict(record["final"]["metrics"])
    guard = record["guards"][0]  # two checks of the per-check log, one member of the family rule's
    guard["checks"] = guard["checks"][:2]
    for check in guard["checks"]:
        for entry in check["rules"]:
            if "members" in entry:
                entry["members"] = dict(list(entry["members"].items())[:1])
    for rule in record["guards"][0]["rules"]:
        for part in (rule, rule["state"]):
            if "members" in part:
                part["members"] = dict(list(part["members"].items())[:1])
    contamination = record["provenance"]["contamination"]
    contamination["sources"] = dict(list(contamination["sources"].items())[:1])
    record["provenance"]["sources"][-1].update(streaming=True, size=None, training_pool=None)
    event = record["guards"][0]["events"][0]
    event["sources"] = event.get("sources") or ["g2"]
    audit = record["provenance"]["audit"]
    audit["sources"] = {name: {**entry, "coverage_vs_best": entry.get("coverage_vs_best", 1.0)}
                        for name, entry in list(audit["sources"].items())[:1]}
    checks = record["source_indicators"]
    checks["keys"] = [k for k in checks["keys"] if k.endswith("/g1")][:3]
    checks["history"] = [{k: v for k, v in row.items() if k in ("epoch", "global_step", *checks["keys"])}
                         for row in checks["history"][:2]]
    return record


# -- mutations ------------------------------------------------------------------------------------------------
def json_kind(value) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, numbers.Integral) or isinstance(value, float) and value.is_integer():
        return "integer"
    return type(value).__name__


def nodes(record) -> list[tuple]:
    """The path of every value in ``record`` (the record itself left out), in document order."""
    out, stack = [], [((), record)]
    while stack:
        path, value = stack.pop()
        out.append(path)
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend(reversed([(path + (k,), v) for k, v in children]))
    return out[1:]


def at(record, path: tuple):
    for part in path:
        record = record[part]
    return record


def mutations(record):
    """``(path, new value or DELETE, mutated copy)``: every value replaced by each value of another JSON type, and
    every key of an object deleted."""
    for path in nodes(record):
        value, parent = at(record, path), at(record, path[:-1])
        news = [v for v in VALUES if json_kind(v) != json_kind(value)] + ([DELETE] if isinstance(parent, dict) else [])
        for new in news:
            mutated = copy.deepcopy(record)
            if new is DELETE:
                del at(mutated, path[:-1])[path[-1]]
            else:
                at(mutated, path[:-1])[path[-1]] = copy.deepcopy(new)
            yield path, new, mutated


def refusal_names(path: tuple, new, message: str) -> bool:
    """Whether ``message`` names what the mutation at ``path`` broke: the key deleted (in its parent), the value
    replaced or, when the new value's own items are what is wrong, a path inside it."""
    if path in (("kind",), ("schema_version",)):
        return "not a collapse_guard report" in message or "'schema_version'" in message
    if new is DELETE:
        return message.startswith(f"{format_path(path[:-1])} has no {path[-1]!r};")
    here = format_path(path)
    return message.startswith((here + " ", here + "[", here + "."))


def renders(record: dict) -> None:
    """Everything the renderers read of ``record``: the page, the summary tables, the data of the plots; and that
    what the plots hand to matplotlib is numbers (epochs, values) and text (labels)."""
    render_html(record, {})
    plain_summary(record)
    series = plots.real_fraction_series(record)
    if series is not None:
        assert all(isinstance(e, numbers.Real) and not isinstance(e, bool) for e in series["epoch"])
        assert all(isinstance(s, str) for s in series["shares"])
    for key, data in plots.indicator_series(record).items():
        assert isinstance(key, str) and all(isinstance(e, numbers.Real) and not isinstance(e, bool)
                                            for e in data["epoch"])
    for m in plots.event_markers(record):
        assert m["epoch"] is None or isinstance(m["epoch"], numbers.Real) and not isinstance(m["epoch"], bool)
        assert isinstance(m["action"], str) and isinstance(m["value"], float)
    plots.rule_bounds(record)
    for key, steps in checks.bound_steps(record).items():  # the bounds in force at each check
        assert isinstance(key, str)
        for step in steps:
            assert all(isinstance(e, numbers.Real) and not isinstance(e, bool) for e in step["epoch"])
            assert all(isinstance(v, float) for v in step["bound"] + step["value"])
    checks.timeline(record)
    assert checks.health(record) is None or isinstance(checks.health(record), str)
    comparison(record, checks.monitored_keys(record))
    for key in plots.indicator_series(record):
        plots.panel_title(key)
        if record.get("reference"):
            plots.key_series(record["reference"], key)
    assert all(isinstance(s["name"], str) for s in (record["provenance"] or {}).get("sources", []))


def cli(tmp_path: Path, record, *options: str) -> tuple[int, str]:
    path = tmp_path / "in" / "report.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(record))
    code = main(["report", str(path), "--out", str(tmp_path / "out"), *options])
    return code, str(path)


# -- tests ----------------------------------------------------------------------------------------------------
def test_records_written_by_collapse_report_pass(written):
    record = load_record(written)
    check_record(small(record))
    check_layout(record["provenance"], PROVENANCE)  # provenance.json alone: its own layout
    check_layout(json.loads((written.parent / "provenance.json").read_text()), PROVENANCE)


def test_the_mutated_record_has_every_field_of_the_layout(written):
    """So that the mutations below reach every field the schema names (in one item of an array at least)."""
    seen, named, stack = set(), set(), [(small(load_record(written)), REPORT, "")]
    while stack:
        value, spec, where = stack.pop()
        for alternative in spec if type(spec) is tuple else (spec,):
            if isinstance(alternative, Obj) and isinstance(value, dict):
                named |= {f"{where}.{k}" for k in alternative.fields}
                seen |= {f"{where}.{k}" for k in value}
                stack += [(v, alternative.fields.get(k, alternative.rest), f"{where}.{k}" if k in alternative.fields
                           else f"{where}.*") for k, v in value.items()]
            elif isinstance(alternative, Arr) and isinstance(value, list):
                stack += [(v, alternative.items, f"{where}[]") for v in value]
    # a family rule's members are written under RuleState.summary()'s own names: margin, not min_delta
    assert named - seen == {".guards[].rules[].members.*.min_delta"}


def test_every_mutation_is_refused_naming_its_path_or_renders(written, tmp_path, capsys):
    start = time.perf_counter()
    base = small(load_record(written))
    refused, accepted = [], []
    for path, new, mutated in mutations(base):
        try:
            check_record(mutated)
        except ValueError as err:
            assert refusal_names(path, new, str(err)), (format_path(path), new, str(err))
            refused.append((path, new, mutated, str(err)))
            continue
        try:
            renders(mutated)
        except Exception as err:  # noqa: BLE001 - the schema took a record that a renderer cannot
            pytest.fail(f"{format_path(path)} = {new!r} passes check_record but does not render: {err!r}")
        accepted.append((path, new, mutated))
    assert len(refused) > 1000 and len(accepted) > 300, (len(refused), len(accepted))

    # the command line itself, on a sample of both: exit 2 naming the file and the path, or exit 0
    capsys.readouterr()
    for path, new, mutated, message in refused[::97]:
        code, file = cli(tmp_path, mutated, "--no-plots")
        err = capsys.readouterr().err
        assert code == 2 and f"{file}: {message}" in err and "Traceback" not in err, (format_path(path), err)
    for path, new, mutated in accepted[::53]:
        assert cli(tmp_path, mutated, "--no-plots")[0] == 0, (format_path(path), new, capsys.readouterr())
    # and the rich summary and the plots of the accepted mutations of what the plots read
    drawn = [m for path, new, m in accepted if path[0] in ("ratio", "indicators", "guards", "reference")
             and path[-1] in ("epoch", "action", "monitor", "value", "threshold", "bound", "shares", "history", "mode",
                              "checks", "members", "rule", "fired", "violated")]
    for mutated in drawn[::max(1, len(drawn) // 3)]:
        assert cli(tmp_path, mutated)[0] == 0, capsys.readouterr()
    for path, new, mutated in accepted[::40]:
        print_summary(mutated, console=Console(file=io.StringIO(), width=160))
    print(f"{len(refused) + len(accepted)} mutations: {len(refused)} refused, {len(accepted)} rendered, "
          f"{time.perf_counter() - start:.1f} s")


@pytest.mark.parametrize("value", [None, True, 7, 0.5, "report", [], [1]])
def test_cli_refuses_any_other_json_document(tmp_path, capsys, value):
    code, file = cli(tmp_path, value)
    err = capsys.readouterr().err
    assert code == 2 and file in err and "not a collapse_guard report" in err and "Traceback" not in err


def test_non_finite_numbers_and_integral_floats_are_taken(written, tmp_path, capsys):
    """NaN and Infinity as Python's json writes them for floats, ``"nan"`` as CollapseReport writes them, and an
    integer written as ``2.0``: loaded and rendered (the page and the manifest written as strict JSON)."""
    record = small(load_record(written))
    record["final"].update(real_fraction=math.nan, real_fraction_cumulative=math.inf, epoch=2.0)
    record["ratio"]["history"][0]["real_fraction"] = -math.inf
    record["indicators"]["history"][-1]["collapse/heldout_real/acc"] = "nan"
    record["guards"][0]["events"][0]["value"] = math.nan
    record["provenance"]["sources"][0]["share"] = math.nan
    record["provenance"]["sources"][1]["params"] = {"t": math.nan}
    record["indicators"]["history"][0]["epoch"] = -10 ** 30  # large, but a float holds it
    record["ratio"]["history"][-1]["shares"]["real"] = 10 ** 300
    path = tmp_path / "report.json"
    path.write_text(json.dumps(record))  # allow_nan: NaN, Infinity, -Infinity
    assert "NaN" in path.read_text() and "Infinity" in path.read_text()
    assert main(["report", str(path)]) == 0, capsys.readouterr()
    page = (tmp_path / "report.html").read_text()
    assert ": NaN" not in page and ": Infinity" not in page and ": -Infinity" not in page  # the record, strict
    assert json.loads((tmp_path / "provenance.json").read_text())["sources"][0]["share"] == "nan"


def test_an_integer_no_float_holds_is_refused(written):
    record = small(load_record(written))
    record["ratio"]["history"][0]["epoch"] = 10 ** 400
    with pytest.raises(ValueError, match=r"ratio.history\[0\].epoch is an integer beyond ±1.8e\+308; a report has an "
                                         "integer there"):
        check_record(record)


def test_a_wrongly_typed_deep_field_exits_2_naming_file_and_path(written, tmp_path, capsys):
    record = small(load_record(written))
    record["guards"][0]["events"][1]["epoch"] = "2"
    code, file = cli(tmp_path, record)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{file}: guards[0].events[1].epoch is a string; a report has an integer there." in err
