"""One self-contained HTML page of a report record: no external CSS, JavaScript, fonts or images.

Plots are embedded as ``data:image/png;base64,...`` URIs and the record itself sits at the end of the page, so
the file reads the same offline, attached to a ticket or mailed.
"""
from __future__ import annotations

import base64
import json
from html import escape
from typing import Any, Iterable, Mapping, Optional

from collapse_guard.report.checks import health, monitored_keys, rule_modes, timeline, timeline_columns
from collapse_guard.report.glossary import BAD_DIRECTIONS, legend
from collapse_guard.report.plots import ACTION_COLORS, other_keys
from collapse_guard.report.record import as_float, jsonable
from collapse_guard.report.reference import comparison

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1em .6em;border-radius:.8em;color:#fff;font-weight:600;font-size:.85em}
.muted{color:#777}img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:1em;overflow:auto;
font-size:.8em}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}dd{margin:0}
tr.fired td{background:#fbe3d6}tr.violated td{background:#fff4dc}details{margin:.6em 0}summary{cursor:pointer}
"""
STATE_COLORS = {"ok": "#009E73", "completed": "#009E73", "failed": "#D55E00", "interrupted": "#E69F00", **ACTION_COLORS,
                "ok (warned)": "#009E73", "ok (injected)": "#009E73", "ok (stopped)": "#009E73", "fired": "#E69F00",
                "cooling": "#E69F00", "warned": ACTION_COLORS["warn"], "injected": ACTION_COLORS["inject"],
                "stopped": ACTION_COLORS["stop"], "ok (quarantined)": "#009E73",
                "quarantined": ACTION_COLORS["quarantine"]}


def fmt(value: Any, digits: int = 4) -> str:
    """A recorded value as text: numbers rounded, ``None`` as an em dash, a list or an object as strict JSON."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) or value in ("nan", "inf", "-inf"):
        number = as_float(value)
        return f"{number:.{digits}f}" if abs(number) < 1e6 else f"{number:.{digits}g}"
    if isinstance(value, (dict, list)):
        return json.dumps(jsonable(value), allow_nan=False) if value else "—"
    return str(value)


def _cell(value: Any, numeric: bool = False) -> str:
    return f'<td class="num">{escape(fmt(value))}</td>' if numeric else f"<td>{escape(fmt(value))}</td>"


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], numeric: Iterable[int] = (),
          classes: Iterable[str] = ()) -> str:
    """An HTML table; every value escaped; the columns in ``numeric`` right-aligned; ``classes``: a CSS class per
    row (``"fired"``, ``"violated"`` or ``""``)."""
    numeric, classes = set(numeric), list(classes)
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        (f'<tr class="{escape(classes[r])}">' if r < len(classes) and classes[r] else "<tr>")
        + "".join(_cell(v, i in numeric) for i, v in enumerate(row)) + "</tr>" for r, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def short(key: Any) -> str:
    """A metric key without its ``collapse/`` prefix.

    Args:
        key: a key (anything: shown as text).

    Returns:
        The key, shorter where it had the prefix.

    Example::

        short("collapse/heldout_real/acc")   # 'heldout_real/acc'
    """
    key = str(key)
    return key[len("collapse/"):] if key.startswith("collapse/") else key


def judged_text(entry: Optional[dict], mode: Any = "max", compact: bool = False) -> str:
    """What a rule judged at a check, in a few characters: ``"0.9306 < 0.9309 fired"`` (value, relation to the bound
    in force, ``fired``), ``"0.9583 (warming up)"`` without a bound; a family rule's shown member first
    (``"3: 0.8500 < 0.8700"``); ``""`` when the rule did not judge at that check. ``compact``: three digits, no
    spaces, ``!`` for fired (``"0.931<0.931!"``), for the terminal.

    Args:
        entry: a rule's entry of a check (:func:`~collapse_guard.report.checks.timeline`'s ``rules``), or ``None``.
        mode: the rule's mode, ``"max"`` or ``"min"``.
        compact: the terminal's short form.

    Returns:
        The text.

    Example::

        judged_text({"value": 0.9306, "bound": 0.9309, "violated": True, "fired": True})   # '0.9306 < 0.9309 fired'
    """
    if not entry:
        return ""
    value, bound = entry.get("value"), entry.get("bound")
    digits, gap, fired = (3, "", "!") if compact else (4, " ", " fired")
    if bound is None:
        text = f"{fmt(value, digits)}{gap}(warming up)" if not compact else f"{fmt(value, digits)} (warm)"
    else:
        worse = as_float(value) < as_float(bound) if mode == "max" else as_float(value) > as_float(bound)
        if entry.get("violated") is True:
            relation = "<" if mode == "max" else ">"
        else:  # within the bound, or beyond it by less than the rule's margin
            relation = "≈" if worse else ("≥" if mode == "max" else "≤")
        text = f"{fmt(value, digits)}{gap}{relation}{gap}{fmt(bound, digits)}"
    member = entry.get("member")
    if member is not None and entry.get("members"):
        text = f"{member}:{gap}{text}"
    return text + (fired if entry.get("fired") is True else "")


def direction_text(direction: Optional[str]) -> str:
    """A bad direction in words with its arrow (``"↓ falls"``); ``"—"`` for context.

    Args:
        direction: ``"falls"``, ``"rises"``, ``"moves"`` or ``None``.

    Returns:
        The text.

    Example::

        direction_text(bad_direction("collapse/heldout_real/loss"))   # '↑ rises'
    """
    return f"{BAD_DIRECTIONS[direction]} {direction}" if direction in BAD_DIRECTIONS else "—"


def badge(text: str) -> str:
    return f'<span class="badge" style="background:{STATE_COLORS.get(text, "#555")}">{escape(text)}</span>'


def image(png: Optional[bytes], alt: str) -> str:
    """``png`` as an ``<img>`` with a base64 data URI (no file or network needed to show it)."""
    if png is None:
        return f'<p class="muted">{escape(alt)}: no plot (no data, or plotting failed).</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _overview(record: dict) -> str:
    final, run = record.get("final", {}), record.get("run", {})
    items = [
        ("status", badge(record.get("status", "?"))),
        ("last action (guard state)", badge(final["guard_state"]) if final.get("guard_state") else "no CollapseGuard"),
        ("health at the last check", badge(health(record)) if health(record) else "—"),
        ("guard events", escape(fmt(final.get("events")))),
        ("stopped by guard", escape(fmt(final.get("stopped_by_guard")))),
        ("last epoch", escape(fmt(final.get("epoch")))),
        ("global step", escape(fmt(run.get("global_step")))),
        ("real fraction, last epoch", escape(fmt(final.get("real_fraction")))),
        ("real fraction, cumulative", escape(fmt(final.get("real_fraction_cumulative")))),
        ("created", escape(fmt(record.get("created")))),
    ]
    if record.get("reference"):
        items.append(("reference run", f"<code>{escape(fmt(record['reference'].get('path')))}</code>"))
    if record.get("error"):
        items.insert(1, ("error", f"<code>{escape(record['error'])}</code>"))
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def action_text(event: dict) -> str:
    """An event's action, with the sources a quarantine named: ``"quarantine (gen2, gen3)"``.

    Args:
        event: a guard event of the record.

    Returns:
        The action, with its sources when it names some.

    Example::

        action_text({"action": "quarantine", "sources": ["gen2"]})   # 'quarantine (gen2)'
    """
    sources = event.get("sources") or []
    return f"{event['action']} ({', '.join(sources)})" if sources else event["action"]


def _events(record: dict) -> str:
    rows = [
        (e["epoch"], e["rule"], action_text(e), e["value"], e["threshold"], e["reason"])
        for guard in record.get("guards", []) for e in guard.get("events", [])
    ]
    if not record.get("guards"):
        return '<p class="muted">No CollapseGuard in this fit.</p>'
    if not rows:
        return "<p>The guard took no action.</p>"
    return table(["epoch", "rule", "action", "value", "bound", "reason"], rows, numeric=(0, 3, 4))


def _rules(record: dict) -> str:
    rows = []
    for g, guard in enumerate(record.get("guards", [])):
        for r in guard.get("rules", []):
            kind = ", ".join(
                part for part in (
                    f"threshold {fmt(r['threshold'])}" if r.get("threshold") is not None else "",
                    f"{fmt(as_float(r['relative']) * 100, 1)}% of {fmt(r.get('baseline'))}"
                    if r.get("relative") is not None else "",
                    f"{as_float(r['sigmas']):g} standard errors from {fmt(r.get('baseline'))}"
                    if r.get("sigmas") is not None else "",
                    f"at least {as_float(r['min_change']):g} from it" if r.get("min_change") else "",
                ) if part
            )
            state = r.get("state", {})
            rows.append((
                g, r["name"], r["monitor"], r["mode"], kind, r.get("baseline_value"), r.get("bound"),
                state.get("best"), f"{state.get('wait', 0)}/{r['patience']}",
                r.get("action") or guard.get("config", {}).get("action"),
            ))
    if not rows:
        return '<p class="muted">No rules.</p>'
    return table(
        ["guard", "rule", "monitor", "healthy", "bound from", "baseline", "bound now", "best", "wait", "action"],
        rows, numeric=(0, 5, 6, 7),
    )


def _provenance(record: dict) -> str:
    prov = record.get("provenance")
    if not prov:
        return '<p class="muted">No MixedDataModule: no provenance.</p>'
    rows = [
        (s["name"], s["kind"], s.get("generator"), s.get("generation"), s.get("params"), s.get("size"),
         s.get("training_pool"), s.get("samples"), s.get("share"), s.get("heldout_copies"))
        for s in prov["sources"]
    ]
    out = table(
        ["source", "kind", "generator", "generation", "parameters", "size", "training pool", "samples drawn",
         "share", "copies of held-out real"],
        rows, numeric=(3, 5, 6, 7, 8, 9),
    )
    held = prov.get("heldout", {})
    out += (
        f"<p>{escape(fmt(prov.get('samples_total')))} training samples drawn, real share "
        f"{escape(fmt(prov.get('real_share')))}; held out: {escape(fmt(held.get('real')))} real, "
        f"{escape(fmt(held.get('synthetic')))} synthetic; seed {escape(fmt(prov.get('seed')))}.</p>"
    )
    injections = prov.get("injections") or []
    if injections:
        out += "<h3>Injections of reserve real data</h3>" + table(
            ["epoch", "samples", "real fraction floor", "reserve left", "reason"],
            [(i.get("epoch"), i.get("samples"), i.get("real_fraction_floor"), i.get("reserve_remaining"),
              i.get("reason")) for i in injections],
            numeric=(0, 1, 2, 3),
        )
    return out


def _timeline(record: dict) -> str:
    rows = timeline(record)
    if not rows:
        return '<p class="muted">No per-check record of the guard (no CollapseGuard, or a report written before it).</p>'
    columns = timeline_columns(record)
    modes = rule_modes(record)
    refs = list(dict.fromkeys(m for _, _, m in columns if m in rows[0]["reference"]))
    several = len(record.get("guards", [])) > 1
    headers = (["epoch", "real fraction"]
               + [f"{'guard ' + str(g) + ': ' if several else ''}{name} ({short(monitor)}): value vs bound"
                  for g, name, monitor in columns]
               + [f"reference {short(k)}" for k in refs] + ["fired", "action", "guard"])
    body, classes = [], []
    for row in rows:
        entries = [row["rules"].get((g, name)) for g, name, _ in columns]
        body.append([row["epoch"], row["real_fraction"]]
                    + [judged_text(e, modes.get((g, name))) for e, (g, name, _) in zip(entries, columns)]
                    + [row["reference"].get(k) for k in refs] + [", ".join(row["fired"]) or "—", row["action"],
                                                                  row["word"]])
        violated = any(e.get("violated") is True for e in entries if e)
        classes.append("fired" if row["fired"] else "violated" if violated else "")
    numeric = range(0, 2 + len(columns) + len(refs))
    return ("<p>Every check: the value each rule judged against the bound in force at that check (&lt; or &gt;: "
            "beyond it; ≈: beyond by less than the rule's margin), the rules that fired, the action taken and the "
            "guard's word for the check (<code>ok (injected)</code>: it injected earlier and the indicators are "
            "back within their bounds).</p>" + table(headers, body, numeric=numeric, classes=classes))


def _legend(keys: list[str], monitored: set) -> str:
    rows = [(i.key.replace("/*", "/<member>"), i.measures, direction_text(i.bad),
             "yes" if any(k in monitored for k in members) else "no")
            for i, members in legend(keys)]
    if not rows:
        return ""
    return table(["indicator", "what it measures", "bad when it", "read by a rule"], rows)


def _first_last(record: dict, keys: list[str]) -> str:
    history = (record.get("indicators") or {}).get("history") or []
    if not history or not keys:
        return ""
    first, last = history[0], history[-1]
    rows = [(k, first.get(k), last.get(k)) for k in keys]
    return (f"<p>{len(history)} checks, epochs {escape(fmt(first['epoch']))} to {escape(fmt(last['epoch']))}.</p>"
            + table(["indicator", f"first check (epoch {fmt(first['epoch'])})",
                     f"last check (epoch {fmt(last['epoch'])})"], rows, numeric=(1, 2)))


def _indicators(record: dict, images: Mapping[str, Optional[bytes]]) -> str:
    history = (record.get("indicators") or {}).get("history") or []
    keys = list((record.get("indicators") or {}).get("keys", []))
    monitored = monitored_keys(record)
    if not history and not monitored:
        return '<p class="muted">No HeldOutRealCheck values.</p>'
    if not monitored:  # no rule: the one plot holds every indicator
        return (image(images.get("indicators"), "collapse indicators over training") + _legend(keys, set())
                + _first_last(record, keys))
    others = other_keys(record)
    return (
        "<p>The indicators a guard rule reads: each rule's bound in force at each check (a step line), the values "
        "beyond it circled, those on which a rule fired crossed.</p>"
        + image(images.get("indicators"), "monitored collapse indicators over training")
        + _legend(monitored, set(monitored))
        + f"<details><summary>The other indicators ({len(others)}; no rule reads them)</summary>"
        + image(images.get("indicators_other"), "other collapse indicators over training")
        + _legend(others, set()) + _first_last(record, monitored + others) + "</details>"
    )


def comparison_cells(rows: list[dict]) -> list[tuple]:
    """The cells of comparison rows (:func:`~collapse_guard.report.reference.comparison`): indicator, this run,
    reference, difference, bad direction, ``worse`` / ``not worse`` / ``—``.

    Args:
        rows: the rows of :func:`~collapse_guard.report.reference.comparison`.

    Returns:
        One tuple of six cells per row (values as recorded; :func:`fmt` makes them text).

    Example::

        table(["indicator", "this run", "reference", "difference", "bad when it", "this run"],
              comparison_cells(comparison(record)))
    """
    return [(c["key"], c["this"], c["reference"], c["difference"], direction_text(c["bad"]),
             {True: "worse", False: "not worse"}.get(c["worse"], "—")) for c in rows]


def _comparison(record: dict) -> str:
    reference = record.get("reference")
    if not reference:
        return ""
    monitored = monitored_keys(record)
    headers = ["indicator", "this run (last check)", "reference (last check)", "difference", "bad when it",
               "this run"]
    mine = comparison(record, monitored)
    rest = [c for c in comparison(record) if c["key"] not in monitored]
    final, theirs = record.get("final", {}), reference.get("final") or {}
    return (
        f"<p>Reference run <code>{escape(fmt(reference.get('path')))}</code> ({escape(fmt(reference.get('status')))}"
        f", created {escape(fmt(reference.get('created')))}): last epoch {escape(fmt(theirs.get('epoch')))}, "
        f"cumulative real fraction {escape(fmt(theirs.get('real_fraction_cumulative')))} (this run: "
        f"{escape(fmt(final.get('real_fraction_cumulative')))}). Its values are dashed in the plots.</p>"
        + table(headers, comparison_cells(mine), numeric=(1, 2, 3), classes=["fired" if c["worse"] else "" for c in mine])
        + (f"<details><summary>The other indicators ({len(rest)})</summary>"
           + table(headers, comparison_cells(rest), numeric=(1, 2, 3)) + "</details>" if rest else "")
    )


def render_html(record: dict, images: Mapping[str, Optional[bytes]]) -> str:
    """The report page of ``record``, with the PNG bytes of each plot (``None``: not drawn) embedded.

    Args:
        record: a report record (:func:`~collapse_guard.report.record.build_record` or ``report.json``).
        images: ``{"real_fraction": png, "indicators": png, "indicators_other": png}``.
    """
    from collapse_guard.report.sources import sources_html  # it renders with this module's helpers

    raw = escape(json.dumps(jsonable(record), indent=1, allow_nan=False))  # NaN read back: "nan", as written
    sections = [
        ("Overview", _overview(record)),
        ("Guard events", _events(record)),
        ("Timeline: every check", _timeline(record)),
        ("Real fraction", image(images.get("real_fraction"), "real fraction over training")),
        ("Indicators", _indicators(record, images)),
        ("Comparison with the reference run", _comparison(record)),
        ("Synthetic sources", sources_html(record)),
        ("Guard rules: baselines and bounds at the end", _rules(record)),
        ("Training data provenance", _provenance(record)),
        ("Record", f"<details><summary>report.json (schema version {escape(fmt(record.get('schema_version')))})"
                   f"</summary><pre>{raw}</pre></details>"),
    ]
    body = "".join(f"<h2>{escape(title)}</h2>{content}" for title, content in sections if content)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>collapse_guard report</title><style>{STYLE}</style></head>"
        f"<body><h1>collapse_guard report</h1>{body}</body></html>\n"
    )
