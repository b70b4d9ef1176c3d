"""Installing collapse_guard leaves Lightning's defaults alone: ``rich`` (whose presence makes Lightning pick
``RichProgressBar``) is no dependency of the package; the report's summary prints as plain text without it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from collapse_guard.report import summary

from test_report_hostile import MARKUP, record_with

ROOT = Path(__file__).resolve().parents[2]


def test_rich_is_no_dependency():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("rich")]
    assert any(d.startswith("rich") for d in project["optional-dependencies"]["report"])


def test_summary_without_rich_is_plain_text(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rich" else real_find_spec(name, *a))
    summary.print_summary(record_with(MARKUP, MARKUP), files={"report.html": Path("/tmp/x/report.html")})
    out = capsys.readouterr().out
    assert out.startswith("collapse_guard report: ")
    for title in ("Training data", "Guard rules", "Guard events"):
        assert f"\n{title}\n" in out
    assert out.count(MARKUP) >= 3 and "report.html: /tmp/x/report.html" in out


def test_plain_and_rich_summaries_hold_the_same_cells():
    """Every cell of every table reaches both renderings (the plain one is not a shortened copy)."""
    pytest.importorskip("rich")
    import io

    from rich.console import Console

    record = record_with("gen3", "acc_rule")
    plain = summary.plain_summary(record)
    console = Console(file=io.StringIO(), width=240, color_system=None)
    summary.print_summary(record, console=console)
    rich_text = console.file.getvalue()
    cells = [c for _, _, rows in summary.tables(record) for row, _ in rows for c in row if c]
    assert cells and all(c in plain and c in rich_text for c in cells)
