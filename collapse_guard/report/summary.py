"""The terminal summary of a report record: ``rich`` tables of the data mix, the rules and the guard events.

Every string from the record (source and rule names, generators, paths) reaches ``rich`` escaped, so a name like
``[/bold]`` prints as itself instead of being read as markup.
"""
from __future__ import annotations

from typing import Any, Optional

from collapse_guard.report.html import fmt


def short(key: str) -> str:
    """A metric key without its ``collapse/`` prefix."""
    return key[len("collapse/"):] if key.startswith("collapse/") else key


def cells(*values: Any) -> list[str]:
    """Each value as table text (:func:`fmt`) with its ``rich`` markup escaped."""
    from rich.markup import escape

    return [escape(fmt(v)) for v in values]


def summary_tables(record: dict) -> list[Any]:
    """The ``rich`` renderables of the summary: a headline, the sources, the rules, the events."""
    from rich.table import Table
    from rich.text import Text

    final = record.get("final", {})
    status = record.get("status", "?")
    headline = Text.assemble(
        ("collapse_guard report: ", "bold"),
        (status, "bold green" if status == "completed" else "bold red"),
        f" — last epoch {fmt(final.get('epoch'))}, real fraction {fmt(final.get('real_fraction'), 3)} "
        f"(cumulative {fmt(final.get('real_fraction_cumulative'), 3)}), ",
        ("guard " + (final.get("guard_state") or "absent"),
         "bold" if final.get("guard_state") in (None, "ok") else "bold yellow"),
        f", {fmt(final.get('events'))} event(s)",
    )
    if record.get("error"):
        headline.append(f"\nerror: {record['error']}", style="red")
    out: list[Any] = [headline]

    prov = record.get("provenance")
    if prov:
        sources = Table(title="Training data", title_justify="left")
        for name, justify in (("source", "left"), ("kind", "left"), ("generator", "left"), ("gen", "right"),
                              ("samples", "right"), ("share", "right")):
            sources.add_column(name, justify=justify)
        for s in prov["sources"]:
            sources.add_row(*cells(s["name"], s["kind"], s.get("generator"), s.get("generation"), s.get("samples")),
                            fmt(s.get("share"), 3),
                            style="green" if s["kind"] == "real" else None)
        out.append(sources)

    rules = [(g, r) for g in record.get("guards", []) for r in g.get("rules", [])]
    if rules:
        last = ((record.get("indicators") or {}).get("history") or [{}])[-1]
        metrics = final.get("metrics", {})
        table = Table(title="Guard rules", title_justify="left")
        for name, justify in (("rule (monitor)", "left"), ("last value", "right"),
                              ("bound", "right"), ("wait", "right"), ("fired", "right")):
            table.add_column(name, justify=justify)
        table.columns[0].overflow = "fold"
        for guard, r in rules:
            fired = sum(e["rule"] == r["name"] for e in guard.get("events", []))
            value = last.get(r["monitor"], metrics.get(r["monitor"]))
            label = short(r["monitor"]) if r["name"] == r["monitor"] else f"{r['name']} ({short(r['monitor'])})"
            table.add_row(*cells(label, value, r.get("bound"), f"{r.get('state', {}).get('wait', 0)}/{r['patience']}",
                                 fired),
                          style="yellow" if fired else None)
        out.append(table)

    events = [e for g in record.get("guards", []) for e in g.get("events", [])]
    if events:
        table = Table(title="Guard events", title_justify="left")
        for name, justify in (("epoch", "right"), ("rule", "left"), ("action", "left"), ("value", "right"),
                              ("bound", "right")):
            table.add_column(name, justify=justify)
        for e in events:
            table.add_row(*cells(e["epoch"], e["rule"], e["action"], e["value"], e["threshold"]),
                          style="red" if e["action"] == "stop" else "yellow")
        out.append(table)
    return out


def print_summary(record: dict, console: Optional[Any] = None, files: Optional[dict] = None) -> None:
    """Print the summary to ``console`` (default: a ``rich.console.Console`` on standard output), then the files
    written, when given."""
    from rich.console import Console

    console = console or Console()
    for renderable in summary_tables(record):
        console.print(renderable)
    for name, path in (files or {}).items():
        if path is not None:
            console.print(f"  {name}: {path}", markup=False, highlight=False, soft_wrap=True)
