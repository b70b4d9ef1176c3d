"""The report and ``collapse-guard report`` against hostile names and files (issue 16): rich markup and mathtext
in names print and draw as written, HTML stays escaped, and a report.json that is unreadable, too deep or of the
wrong shape exits 2 naming the file and the key, never with a traceback."""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import matplotlib
import matplotlib.image
import pytest
from rich.console import Console

from collapse_guard.cli import main
from collapse_guard.report import load_record
from collapse_guard.report.html import render_html
from collapse_guard.report.plots import figure_indicators, figure_real_fraction, save_plot
from collapse_guard.report.summary import print_summary

MARKUP = "[/bold]"
MATH = r"$\frac{a}{$"  # unbalanced mathtext: matplotlib raises on it when read as math
SCRIPT = "<script>alert(1)</script>"


def record_with(source: str, rule: str) -> dict:
    """A schema-1 record as CollapseReport writes it, with a synthetic source named ``source`` and a guard rule
    (and its event) named ``rule`` on the indicator ``collapse/<rule>``."""
    key = f"collapse/{rule}"
    shares = [{"real": 0.5, source: 0.5}, {"real": 0.7, source: 0.3}]
    return {
        "schema_version": 1, "kind": "collapse_guard.report", "created": "2025-01-01T12:00:00+00:00",
        "status": "completed", "error": None,
        "run": {"current_epoch": 1, "global_step": 4, "max_epochs": 2, "world_size": 1, "should_stop": False,
                "dirpath": None},
        "ratio": {"sources": ["real", source], "history": [
            {"epoch": e, "real_fraction": s["real"], "real_fraction_cumulative": 0.6, "real_fraction_target": 0.5,
             "samples": {k: 10 * v for k, v in s.items()}, "shares": s} for e, s in enumerate(shares)]},
        "indicators": {"every_n_epochs": 1, "keys": [key],
                       "history": [{"epoch": 0, "global_step": 2, key: 0.9}, {"epoch": 1, "global_step": 4, key: 0.4}]},
        "guards": [{
            "state": "inject", "injections": 1, "cooldown_left": 0, "config": {"action": "inject"},
            "rules": [{"name": rule, "monitor": key, "mode": "min", "threshold": 0.5, "patience": 1,
                       "state": {"wait": 0}, "bound": 0.5}],
            "events": [{"epoch": 1, "global_step": 4, "rule": rule, "monitor": key, "value": 0.4, "threshold": 0.5,
                        "action": "inject", "reason": f"{rule} below 0.5"}],
        }],
        "injections": [],
        "provenance": {"schema_version": 1, "kind": "collapse_guard.provenance", "seed": 0, "samples_total": 40,
                       "real_share": 0.6, "heldout": {"real": 10, "synthetic": 0}, "injections": [],
                       "sources": [{"name": "real", "kind": "real", "generator": None, "generation": 0, "samples": 24,
                                    "share": 0.6},
                                   {"name": source, "kind": "synthetic", "generator": source, "generation": 1,
                                    "samples": 16, "share": 0.4}]},
        "final": {"epoch": 1, "global_step": 4, "real_fraction": 0.7, "real_fraction_cumulative": 0.6,
                  "guard_state": "inject", "events": 1, "stopped_by_guard": False, "metrics": {key: 0.4}},
    }


def write(tmp_path: Path, record) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(record))
    return path


# -- names that are markup, mathtext or HTML ------------------------------------------------------------------
@pytest.mark.parametrize("name", [MARKUP, "[red]x[/red]", "a\\", "[link=file:///etc]x[/link]"])
def test_summary_prints_markup_names_as_written(name):
    console = Console(file=io.StringIO(), width=240, color_system=None)
    print_summary(record_with(name, name), console=console, files={"report.html": Path(f"/tmp/{name}/x")})
    out = console.file.getvalue()
    assert out.count(name) >= 4, out  # source, generator, rule, event, file path: each as written


@pytest.mark.parametrize("name", [MATH, "$x^2$", "cost $5 and $6", "_aux", ""])
def test_plots_draw_mathtext_names_as_written(name, tmp_path):
    record = record_with(name, name)
    fig = figure_real_fraction(record)
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert name.replace("$", r"\$") in legend  # escaped: matplotlib draws "\$" as "$"
    fig = figure_indicators(record)
    assert fig.axes[0].get_title(loc="left") == name.replace("$", r"\$")
    with matplotlib.rc_context({"text.usetex": True}):  # the user's setting is not used: names are never LaTeX
        for plot in ("real_fraction", "indicators"):
            path = save_plot(record, tmp_path, plot)
            assert matplotlib.image.imread(path).shape[2] == 4


def test_cli_report_renders_hostile_names(tmp_path, capsys):
    write(tmp_path, record_with(MARKUP, MATH))
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert MARKUP in out and MATH in out
    assert all((tmp_path / f).is_file() for f in ("real_fraction.png", "indicators.png", "report.html"))


def test_html_escapes_script_in_names():
    page = render_html(record_with(SCRIPT, SCRIPT), {})
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# -- files that are not a readable report ---------------------------------------------------------------------
def refused(tmp_path, capsys, *words) -> str:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "report.json") in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_cli_report_refuses_json_too_deep_to_parse(tmp_path, capsys):
    (tmp_path / "report.json").write_text('{"kind": "collapse_guard.report", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(tmp_path, capsys, "nests too deeply")


def test_cli_report_refuses_a_record_nested_too_deep(tmp_path, capsys):
    record = record_with("g1", "acc")
    nested: list = []
    record["provenance"]["sources"][1]["params"] = {"p": nested}
    for _ in range(200):
        nested.append([])
        nested = nested[0]
    write(tmp_path, record)
    refused(tmp_path, capsys, "levels deep")


def test_cli_report_refuses_a_binary_file(tmp_path, capsys):
    (tmp_path / "report.json").write_bytes(b"\xff\xfe\x00\x89PNG\r\n")
    refused(tmp_path, capsys, "not UTF-8")


@pytest.mark.parametrize("value, shown", [(True, "True (a boolean)"), ("1", "'1' (a string)"),
                                          (1.0, "1.0 (a number)"), (0, "0 (an integer)"), (None, "None (null)")])
def test_cli_report_refuses_a_wrongly_typed_schema_version(tmp_path, capsys, value, shown):
    record = record_with("g1", "acc")
    record["schema_version"] = value
    write(tmp_path, record)
    refused(tmp_path, capsys, "'schema_version'", shown)


def test_cli_report_refuses_a_newer_schema(tmp_path, capsys):
    record = record_with("g1", "acc")
    record["schema_version"] = 99
    write(tmp_path, record)
    refused(tmp_path, capsys, "upgrade collapse_guard")


@pytest.mark.parametrize("key", ["final", "guards", "ratio", "run", "status"])
def test_cli_report_refuses_a_missing_section(tmp_path, capsys, key):
    record = record_with("g1", "acc")
    del record[key]
    write(tmp_path, record)
    refused(tmp_path, capsys, f"the record has no {key!r}")


@pytest.mark.parametrize("key, value, shown", [
    ("guards", {}, "an object"), ("final", [], "an array"), ("ratio", "x", "a string"),
    ("injections", None, "null"), ("error", 3, "an integer"), ("provenance", True, "a boolean"),
])
def test_cli_report_refuses_a_wrongly_typed_section(tmp_path, capsys, key, value, shown):
    record = record_with("g1", "acc")
    record[key] = value
    write(tmp_path, record)
    refused(tmp_path, capsys, f"{key} is {shown}; a report has")


def test_cli_report_refuses_a_guard_that_is_not_an_object(tmp_path, capsys):
    record = record_with("g1", "acc")
    record["guards"].append(1)
    write(tmp_path, record)
    refused(tmp_path, capsys, "guards[1] is an integer; a report has an object there")


def test_a_valid_hand_written_record_loads_unchanged(tmp_path):
    record = record_with("g1", "acc")
    assert load_record(write(tmp_path, copy.deepcopy(record))) == record


def test_cli_report_refuses_an_integer_too_long_to_read_naming_the_file(tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text('{"kind": "collapse_guard.report", "schema_version": ' + "9" * 5000 + "}")
    assert main(["report", str(path), "--no-plots", "--no-html", "--no-summary"]) == 2
    assert str(path) in capsys.readouterr().err
