"""The report's "Synthetic sources" section: each source's share over training, its own indicators at the last check
and their trend, the audit before training, and the quarantines.

Read from the record: the share of every source per epoch (``ratio.history[].shares``, a ``RatioMonitor``'s), the
values of every ``SourceCheck`` check (``source_indicators``: ``collapse/source/<indicator>/<source>``), a
``SourceAudit``'s audit (``provenance.audit``) and the quarantines of synthetic sources (``provenance.quarantines``;
the rule of a guard event that quarantined them). The section is left out of a run without a synthetic source, or
with nothing of one to show. Each part is a table of text cells (:data:`SourceTable`), printed by the terminal
summary (:mod:`~collapse_guard.report.summary`) and drawn as HTML by :func:`sources_html`.
"""
from __future__ import annotations

from html import escape
from typing import Any, Optional

from collapse_guard.report.glossary import BAD_DIRECTIONS, bad_direction
from collapse_guard.report.html import fmt, table
from collapse_guard.report.record import as_float

#: one table: ``(title, [(column, justify)], [(cells, rich style or None)])``; the summary's ``Table`` too
SourceTable = tuple[str, list[tuple[str, str]], list[tuple[list[str], Optional[str]]]]
PREFIX = "collapse/source/"
#: the terminal's share table shows every epoch up to this many; beyond, the first, the last and the quarantines
SHARE_ROWS = 12
#: the audit's measures, in column order (``coverage_vs_best`` only when some source has it)
AUDIT_COLUMNS = ("class_tv", "precision", "recall", "density", "coverage", "coverage_vs_best")
#: row style -> HTML row class
ROW_CLASSES = {"yellow": "violated", "red": "fired"}


def _quarantines(record: dict) -> list[dict]:
    return [q for q in (record.get("provenance") or {}).get("quarantines") or [] if isinstance(q, dict)]


def _audit(record: dict) -> dict:
    return (record.get("provenance") or {}).get("audit") or {}


def _checks(record: dict) -> list[dict]:
    """The ``SourceCheck`` checks, in epoch order."""
    rows = (record.get("source_indicators") or {}).get("history") or []
    return sorted(rows, key=lambda r: as_float(r.get("epoch")))


def indicator_keys(record: dict) -> dict[str, dict[str, str]]:
    """``{source: {indicator: key}}`` of every ``collapse/source/<indicator>/<source>`` key the checks hold, in
    first-logged order.

    Args:
        record: a report record.

    Returns:
        The keys by source and indicator name (``{}`` without a ``SourceCheck``).

    Example::

        indicator_keys(record)["gen2"]["grad_cosine"]   # 'collapse/source/grad_cosine/gen2'
    """
    out: dict[str, dict[str, str]] = {}
    for row in _checks(record):
        for key in row:
            if key.startswith(PREFIX) and "/" in key[len(PREFIX):]:
                name, source = key[len(PREFIX):].split("/", 1)
                out.setdefault(source, {})[name] = key
    return out


def synthetic_sources(record: dict) -> list[str]:
    """The names of the run's synthetic sources: those of the provenance (or, without one, the ratio's sources other
    than ``real`` and ``reserve``), then any other the audit, the checks or a quarantine names.

    Args:
        record: a report record.

    Returns:
        The names, each once, in that order (``[]`` for a run on real data only).

    Example::

        synthetic_sources(record)   # ['gen1', 'gen2']
    """
    provenance = record.get("provenance") or {}
    if provenance.get("sources"):
        names = [s["name"] for s in provenance["sources"] if s.get("kind") != "real"]
    else:
        names = [s for s in (record.get("ratio") or {}).get("sources", []) if s not in ("real", "reserve")]
    names += list(_audit(record).get("sources") or {}) + list(indicator_keys(record))
    names += [s for q in _quarantines(record) for s in q.get("sources") or []]
    return list(dict.fromkeys(names))


def _quarantine_epochs(record: dict) -> dict[Any, list[str]]:
    out: dict[Any, list[str]] = {}
    for q in _quarantines(record):
        out.setdefault(q.get("epoch"), []).extend(q.get("sources") or [])
    return out


def share_table(record: dict, compact: bool = False) -> list[SourceTable]:
    """(a) Each source's share of the epoch's training samples, one row per epoch, the quarantines noted; ``[]``
    without a ratio history. ``compact``: beyond :data:`SHARE_ROWS` epochs, only the first, the last and those of a
    quarantine and the epoch after.

    Args:
        record: a report record.
        compact: the terminal's shorter table.

    Returns:
        ``[(title, [(column, justify)], [(cells, style)])]`` (:data:`SourceTable`), one table or none.

    Example::

        (title, columns, rows), = share_table(record)   # rows: one per epoch
    """
    ratio = record.get("ratio") or {}
    rows = sorted(ratio.get("history") or [], key=lambda r: as_float(r.get("epoch")))
    if not rows:
        return []
    sources, quarantined = list(ratio.get("sources") or []), _quarantine_epochs(record)
    after = {as_float(e) + 1 for e in quarantined if e is not None}
    out = []
    for i, row in enumerate(rows):
        epoch, shares = row.get("epoch"), row.get("shares") or {}
        if compact and len(rows) > SHARE_ROWS and i not in (0, len(rows) - 1) and epoch not in quarantined \
                and as_float(epoch) not in after:
            continue
        note = "quarantined " + ", ".join(quarantined[epoch]) + " (from the next epoch)" if epoch in quarantined else ""
        out.append(([fmt(epoch)] + [fmt(shares.get(s), 3) for s in sources] + [fmt(row.get("real_fraction"), 3), note],
                    "yellow" if note else None))
    left = len(rows) - len(out)
    title = "Synthetic sources: each source's share of the epoch's training samples" + (
        f"; {left} epochs left out (all in report.html)" if left else "")
    return [(title, [("epoch", "right")] + [(s, "right") for s in sources] + [("real fraction", "right"),
                                                                              ("quarantine", "left")], out)]


def _trend(first: Any, last: Any, key: str, stderr: Any = None) -> tuple[str, bool]:
    """The change since the first check as text (``"+0.120"``) and whether it went the bad way (by more than twice
    the standard error at the last check, when there is one)."""
    change = as_float(last) - as_float(first)
    if change != change:  # NaN
        return "", False
    direction = bad_direction(key)
    noise = 2 * as_float(stderr) if stderr is not None else 0.0
    worse = (direction == "falls" and change < -noise) or (direction == "rises" and change > noise)
    return f"{change:+.3f}", bool(worse)


def indicator_table(record: dict) -> list[SourceTable]:
    """(b) Per synthetic source, each of its ``SourceCheck`` indicators at the last check with its change since the
    first (``grad_cosine`` with its standard error), and the indicators that moved the bad way (by the glossary's
    direction; by more than twice the standard error for one that has it); ``[]`` without checks.

    Args:
        record: a report record.

    Returns:
        ``[(title, [(column, justify)], [(cells, style)])]`` (:data:`SourceTable`), one table or none.

    Example::

        [cells[0] for cells, _ in indicator_table(record)[0][2]]   # the sources
    """
    checks, keys = _checks(record), indicator_keys(record)
    if not checks or not keys:
        return []
    names = list(dict.fromkeys(n for by_name in keys.values() for n in by_name if not n.endswith("_stderr")))
    quarantined = {s for q in _quarantines(record) for s in q.get("sources") or []}
    rows = []
    for source, by_name in keys.items():
        cells, worse = [source], []
        for name in names:
            key = by_name.get(name)
            seen = [r for r in checks if key in r]
            if key is None or not seen:
                cells.append("—")
                continue
            text = fmt(seen[-1][key], 3)
            stderr = seen[-1].get(by_name.get(name + "_stderr"))
            if stderr is not None:
                text += f" ± {fmt(stderr, 3)}"
            if len(seen) > 1:
                change, bad = _trend(seen[0][key], seen[-1][key], key, stderr)
                text += f" ({change})" if change else ""
                worse += [f"{name} {BAD_DIRECTIONS[bad_direction(key)]}"] if bad else []
            cells.append(text)
        rows.append((cells + [", ".join(worse) or "—"], "yellow" if source in quarantined else None))
    first, last = checks[0].get("epoch"), checks[-1].get("epoch")
    title = (f"Synthetic sources: indicators at the last check (epoch {fmt(last)}), change since the first (epoch "
             f"{fmt(first)}) in brackets, {len(checks)} checks")
    return [(title, [("source", "left")] + [(n, "right") for n in names] + [("moved the bad way", "left")], rows)]


def check_table(record: dict) -> list[SourceTable]:
    """Every ``SourceCheck`` check, one row per check and source: its value of each indicator (the trend of
    :func:`indicator_table`, in full; the HTML page folds it); ``[]`` without checks.

    Args:
        record: a report record.

    Returns:
        ``[(title, [(column, justify)], [(cells, style)])]`` (:data:`SourceTable`), one table or none.

    Example::

        len(check_table(record)[0][2])   # checks x sources
    """
    checks, keys = _checks(record), indicator_keys(record)
    names = list(dict.fromkeys(n for by_name in keys.values() for n in by_name))
    rows = [([fmt(row.get("epoch")), source] + [fmt(row.get(by_name.get(n)), 3) for n in names], None)
            for row in checks for source, by_name in keys.items()]
    if not rows:
        return []
    return [(f"Synthetic sources: every check ({len(checks)})",
             [("epoch", "right"), ("source", "left")] + [(n, "right") for n in names], rows)]


def audit_table(record: dict) -> list[SourceTable]:
    """(c) The audit before training: the real-vs-real baseline, then each source (samples read, missing classes,
    class marginal TV, k-NN precision / recall / density / coverage, coverage over the best source's, copies of
    held-out real samples), a source with missing classes or copies flagged; ``[]`` without an audit.

    Args:
        record: a report record.

    Returns:
        ``[(title, [(column, justify)], [(cells, style)])]`` (:data:`SourceTable`), one table or none.

    Example::

        [cells[0] for cells, style in audit_table(record)[0][2] if style == "red"]   # flagged sources
    """
    audit = _audit(record)
    entries = audit.get("sources") or {}
    if not entries:
        return []
    measures = [m for m in AUDIT_COLUMNS if m != "coverage_vs_best"
                or any(isinstance(e, dict) and e.get(m) is not None for e in entries.values())]
    real = audit.get("real") or {}
    classes = f": {fmt(real.get('classes'))} classes" if real.get("classes") is not None else ""
    rows = [(["real (baseline)", fmt(real.get("samples")), "—"] + [fmt(real.get(m), 3) for m in measures]
             + ["—", "—"], "green")]
    for source, entry in entries.items():
        entry = entry if isinstance(entry, dict) else {}
        missing, copies = entry.get("missing_classes"), entry.get("heldout_copies")
        copied = isinstance(copies, (int, float)) and copies > 0
        flags = ([f"lacks classes {fmt(missing)}"] if missing else []) + (
            [f"{fmt(copies)} copies of held-out real samples"] if copied else [])
        rows.append(([source, fmt(entry.get("samples")), fmt(missing)] + [fmt(entry.get(m), 3) for m in measures]
                     + [fmt(copies), "; ".join(flags) or "—"], "red" if flags else None))
    k = f"; k-NN measures with k = {fmt(audit.get('k'))}" if audit.get("k") is not None else ""
    title = f"Synthetic sources: audit before training (against the real training data{classes}{k})"
    columns = [("source", "left"), ("samples", "right"), ("missing classes", "left")] + [
        (m.replace("_", " "), "right") for m in measures] + [("held-out copies", "right"), ("flags", "left")]
    return [(title, columns, rows)]


def _shares_text(before: Any, after: Any) -> str:
    before, after = before if isinstance(before, dict) else {}, after if isinstance(after, dict) else {}
    names = dict.fromkeys([*before, *after])
    return ", ".join(f"{s} {fmt(before.get(s), 3)} → {fmt(after.get(s), 3)}" for s in names)


def quarantine_table(record: dict) -> list[SourceTable]:
    """(d) Every quarantine: epoch, sources, weight, the guard rule that asked for it (a guard event of action
    ``"quarantine"`` at that epoch naming those sources), the reason, the synthetic shares and the target real
    fraction of the next epoch before -> after; ``[]`` without one.

    Args:
        record: a report record.

    Returns:
        ``[(title, [(column, justify)], [(cells, style)])]`` (:data:`SourceTable`), one table or none.

    Example::

        [cells[:2] for cells, _ in quarantine_table(record)[0][2]]   # e.g. [['1', 'wrong']]
    """
    quarantines = _quarantines(record)
    if not quarantines:
        return []
    rules: dict[tuple, str] = {}
    for guard in record.get("guards") or []:
        for e in guard.get("events", []):
            if e.get("action") == "quarantine":
                rules.setdefault((e.get("epoch"), tuple(sorted(e.get("sources") or []))), e.get("rule"))
    rows = []
    for q in quarantines:
        sources = list(q.get("sources") or [])
        rule = rules.get((q.get("epoch"), tuple(sorted(sources))), "—")
        shares = _shares_text(q.get("shares_before"), q.get("shares_after")) or "—"
        rows.append(([fmt(q.get("epoch")), ", ".join(sources) or "—", fmt(q.get("weight"), 2), rule,
                      fmt(q.get("reason")) or "—", shares,
                      f"{fmt(q.get('real_fraction_before'), 3)} → {fmt(q.get('real_fraction_after'), 3)}"], "yellow"))
    return [("Synthetic sources: quarantines (from the next epoch on)",
             [("epoch", "right"), ("sources", "left"), ("weight", "right"), ("rule", "left"), ("reason", "left"),
              ("synthetic shares before → after", "left"), ("real fraction", "left")], rows)]


def has_section(record: dict) -> bool:
    """Whether the record has a "Synthetic sources" section: a synthetic source with a share above 0 in an epoch,
    an audit, a check of its own or a quarantine.

    Args:
        record: a report record.

    Returns:
        ``False`` for a run on real data only, or one whose synthetic sources gave nothing to show.

    Example::

        has_section(record)   # True with a MixedDataModule of synthetic sources and a RatioMonitor
    """
    names = set(synthetic_sources(record))
    if not names:
        return False
    shares = [as_float(v) for r in (record.get("ratio") or {}).get("history") or []
              for s, v in (r.get("shares") or {}).items() if s in names]
    return any(v > 0 for v in shares) or bool(_audit(record).get("sources") or indicator_keys(record)
                                                 or _quarantines(record))


def source_tables(record: dict, compact: bool = False) -> list[SourceTable]:
    """The tables of the section, in order (shares, indicators, audit, quarantines), those the record has; ``[]``
    when :func:`has_section` is false.

    Args:
        record: a report record.
        compact: the terminal's shorter share table (see :func:`share_table`).

    Returns:
        ``[(title, [(column, justify)], [(cells, style)])]``, every cell text.

    Example::

        [title for title, _, _ in source_tables(record)]
    """
    if not has_section(record):
        return []
    return share_table(record, compact) + indicator_table(record) + audit_table(record) + quarantine_table(record)


def sources_html(record: dict) -> str:
    """The HTML of the section (``""`` without one): its tables, each under its own heading.

    Args:
        record: a report record.

    Returns:
        The section's HTML, without its heading.

    Example::

        page += "<h2>Synthetic sources</h2>" + sources_html(record)
    """
    tables = source_tables(record)
    if not tables:
        return ""
    out = ["<p>Each synthetic source on its own: its share of the training samples (stacked in the real fraction "
           "plot), its indicators at each check of a <code>SourceCheck</code>, its audit before training "
           "(<code>SourceAudit</code>) and its quarantines.</p>"]
    for title, columns, rows in tables:
        out.append(f"<h3>{escape(title.split(': ', 1)[-1])}</h3>" + _html_table(columns, rows))
        if "indicators at the last check" in title:
            for every_title, every_columns, every_rows in check_table(record):
                out.append(f"<details><summary>{escape(every_title.split(': ', 1)[-1])}</summary>"
                           + _html_table(every_columns, every_rows) + "</details>")
    return "".join(out)


def _html_table(columns: list[tuple[str, str]], rows: list[tuple[list[str], Optional[str]]]) -> str:
    numeric = [i for i, (_, justify) in enumerate(columns) if justify == "right"]
    classes = [ROW_CLASSES.get(style or "", "") for _, style in rows]
    return table([c for c, _ in columns], [r for r, _ in rows], numeric=numeric, classes=classes)
