"""The terminal summary of a report record: tables of the data mix, the rules and the guard events.

With ``rich`` installed (``pip install collapse-guard[report]``) they print as ``rich`` tables; without it, as plain
text. ``rich`` is optional on purpose: with ``rich`` importable Lightning makes ``RichProgressBar`` its default
progress bar, and installing this package must not change the user's Lightning defaults.

Every string from the record (source and rule names, generators, paths) reaches ``rich`` escaped, so a name like
``[/bold]`` prints as itself instead of being read as markup.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Optional

from collapse_guard.report.checks import health, monitored_keys, rule_modes, timeline, timeline_columns
from collapse_guard.report.html import action_text, comparison_cells, fmt, judged_text, short
from collapse_guard.report.reference import comparison
from collapse_guard.report.sources import SourceTable as Table  # (title, [(column, justify)], [(cells, style)])
from collapse_guard.report.sources import source_tables

#: the terminal timeline shows every check up to this many; beyond, the first, the last and those where something
#: happened (a value beyond its bound, a rule fired, an action, a change of word)
TIMELINE_ROWS = 12


def cells(*values: Any) -> list[str]:
    """Each value as table text (:func:`fmt`)."""
    return [fmt(v) for v in values]


def headline(record: dict) -> list[tuple[str, Optional[str]]]:
    """The first line(s) of the summary as ``(text, rich style)`` parts: status, last epoch, real fraction, guard."""
    final = record.get("final", {})
    status = record.get("status", "?")
    parts = [
        ("collapse_guard report: ", "bold"),
        (status, "bold green" if status == "completed" else "bold red"),
        (f" — last epoch {fmt(final.get('epoch'))}, real fraction {fmt(final.get('real_fraction'), 3)} "
         f"(cumulative {fmt(final.get('real_fraction_cumulative'), 3)}), ", None),
        ("guard " + (final.get("guard_state") or "absent"),
         "bold" if final.get("guard_state") in (None, "ok") else "bold yellow"),
        (" (last action)" if final.get("guard_state") else "", None),
    ]
    word = health(record)
    if word is not None:
        parts += [(", health at the last check: ", None), (word, "bold green" if word.startswith("ok") else "bold yellow")]
    parts.append((f", {fmt(final.get('events'))} event(s)", None))
    if record.get("error"):
        parts.append((f"\nerror: {record['error']}", "red"))
    return parts


def tables(record: dict) -> list[Table]:
    """The tables of the summary, as plain data: the sources, the rules, the events (those the record has)."""
    out: list[Table] = []
    prov = record.get("provenance")
    if prov:
        rows = [(cells(s["name"], s["kind"], s.get("generator"), s.get("generation"), s.get("samples"))
                 + [fmt(s.get("share"), 3)], "green" if s["kind"] == "real" else None) for s in prov["sources"]]
        out.append(("Training data", [("source", "left"), ("kind", "left"), ("generator", "left"), ("gen", "right"),
                                      ("samples", "right"), ("share", "right")], rows))
    out += source_tables(record, compact=True)
    rules = [(g, r) for g in record.get("guards", []) for r in g.get("rules", [])]
    if rules:
        last = ((record.get("indicators") or {}).get("history") or [{}])[-1]
        metrics = record.get("final", {}).get("metrics", {})
        rows = []
        for guard, r in rules:
            fired = sum(e["rule"] == r["name"] for e in guard.get("events", []))
            value = last.get(r["monitor"], metrics.get(r["monitor"]))
            label = short(r["monitor"]) if r["name"] == r["monitor"] else f"{r['name']} ({short(r['monitor'])})"
            rows.append((cells(label, value, r.get("bound"), f"{r.get('state', {}).get('wait', 0)}/{r['patience']}",
                               fired), "yellow" if fired else None))
        out.append(("Guard rules", [("rule (monitor)", "left"), ("last value", "right"), ("bound", "right"),
                                    ("wait", "right"), ("fired", "right")], rows))
    out += timeline_table(record)
    events = [e for g in record.get("guards", []) for e in g.get("events", [])]
    if events:
        rows = [(cells(e["epoch"], e["rule"], action_text(e), e["value"], e["threshold"]),
                 "red" if e["action"] == "stop" else "yellow") for e in events]
        out.append(("Guard events", [("epoch", "right"), ("rule", "left"), ("action", "left"), ("value", "right"),
                                     ("bound", "right")], rows))
    compared = comparison(record, monitored_keys(record))
    if compared:
        rows = [(cells(*c), "yellow" if c[-1] == "worse" else None) for c in comparison_cells(compared)]
        out.append((f"Against the reference run {record['reference'].get('path')}",
                    [("indicator", "left"), ("this run", "right"), ("reference", "right"), ("difference", "right"),
                     ("bad when it", "left"), ("this run", "left")], rows))
    return out


def _column(name: str, monitor: str) -> str:
    """A rule's timeline column: its name, or for a rule named by its monitor the key's last part
    (``worst_class_recall``, ``class_recall/*``)."""
    if name != monitor:
        return name
    parts = monitor.split("/")
    return "/".join(parts[-2:]) if monitor.endswith("/*") else parts[-1]


def timeline_table(record: dict) -> list[Table]:
    """The compact timeline (``[]`` without per-check records): per check, epoch, real fraction, each rule's value
    against its bound in force, the rules that fired, the action and the guard's word; beyond
    :data:`TIMELINE_ROWS` checks, only the first, the last and those where something happened.

    Args:
        record: a report record.

    Returns:
        ``[(title, [(column, justify)], [(cells, style)])]``: one :data:`Table`, or none.

    Example::

        (title, columns, rows), = timeline_table(record)   # title says how many quiet checks were left out
    """
    rows = timeline(record)
    if not rows:
        return []
    columns = timeline_columns(record)
    modes = rule_modes(record)
    shown, previous = [], None
    for i, row in enumerate(rows):
        eventful = row["fired"] or row["action"] != "—" or row["word"] != previous or any(
            e.get("violated") is True for e in row["rules"].values())
        previous = row["word"]
        if len(rows) <= TIMELINE_ROWS or i in (0, len(rows) - 1) or eventful:
            shown.append(row)
    out = []
    for row in shown:
        style = "yellow" if row["fired"] else None
        out.append((cells(row["epoch"]) + [fmt(row["real_fraction"], 2)]
                    + [judged_text(row["rules"].get((g, name)), modes.get((g, name)), compact=True)
                       for g, name, _ in columns]
                    + [row["action"], fmt(row["word"])], style))
    title = "Timeline: each rule's value vs its bound in force at the check (<, >: beyond it; !: fired)" + (
        f"; {len(rows) - len(shown)} quiet checks left out (all in report.html)" if len(shown) < len(rows) else "")
    return [(title, [("epoch", "right"), ("real", "right")] + [(_column(name, m), "right") for _, name, m in columns]
             + [("action", "left"), ("guard", "left")], out)]


def summary_tables(record: dict) -> list[Any]:
    """The ``rich`` renderables of the summary (needs ``rich``): a headline, the sources, the rules, the events."""
    from rich.markup import escape
    from rich.table import Table as RichTable
    from rich.text import Text

    out: list[Any] = [Text.assemble(*[(text, style or "") for text, style in headline(record)])]
    for title, columns, rows in tables(record):
        table = RichTable(title=escape(title), title_justify="left")
        for name, justify in columns:  # rule names and paths are the user's: escaped, never markup
            table.add_column(escape(name), justify=justify)
        for column in table.columns:  # a narrow terminal folds a cell, never cuts it
            column.overflow = "fold"
        for row, style in rows:
            table.add_row(*[escape(c) for c in row], style=style)
        out.append(table)
    return out


def plain_summary(record: dict) -> str:
    """The summary as plain text: the headline, then each table with its columns aligned."""
    lines = ["".join(text for text, _ in headline(record))]
    for title, columns, rows in tables(record):
        grid = [[name for name, _ in columns]] + [row for row, _ in rows]
        widths = [max(len(r[i]) for r in grid) for i in range(len(columns))]
        lines += ["", title]
        for row in grid:
            lines.append("  ".join(c.ljust(w) if j == "left" else c.rjust(w)
                                   for c, w, (_, j) in zip(row, widths, columns)).rstrip())
    return "\n".join(lines)


def print_summary(record: dict, console: Optional[Any] = None, files: Optional[dict] = None) -> None:
    """Print the summary to ``console`` (default: a ``rich.console.Console`` on standard output with ``rich``
    installed, else plain text on standard output), then the files written, when given."""
    if console is None and importlib.util.find_spec("rich") is None:
        print(plain_summary(record))
        for name, path in (files or {}).items():
            if path is not None:
                print(f"  {name}: {path}")
        return
    from rich.console import Console

    console = console or Console()
    for renderable in summary_tables(record):
        console.print(renderable)
    for name, path in (files or {}).items():
        if path is not None:
            console.print(f"  {name}: {path}", markup=False, highlight=False, soft_wrap=True)
