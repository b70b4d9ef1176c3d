"""One self-contained HTML page of a report record: no external CSS, JavaScript, fonts or images.

Plots are embedded as ``data:image/png;base64,...`` URIs and the record itself sits at the end of the page, so
the file reads the same offline, attached to a ticket or mailed.
"""
from __future__ import annotations

import base64
import json
from html import escape
from typing import Any, Iterable, Mapping, Optional

from collapse_guard.report.plots import ACTION_COLORS
from collapse_guard.report.record import as_float, jsonable

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1em .6em;border-radius:.8em;color:#fff;font-weight:600;font-size:.85em}
.muted{color:#777}img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:1em;overflow:auto;
font-size:.8em}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}dd{margin:0}
"""
STATE_COLORS = {"ok": "#009E73", "completed": "#009E73", "failed": "#D55E00", "interrupted": "#E69F00", **ACTION_COLORS}


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


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], numeric: Iterable[int] = ()) -> str:
    """An HTML table; every value escaped; the columns in ``numeric`` right-aligned."""
    numeric = set(numeric)
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(_cell(v, i in numeric) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
        ("guard state", badge(final["guard_state"]) if final.get("guard_state") else "no CollapseGuard"),
        ("guard events", escape(fmt(final.get("events")))),
        ("stopped by guard", escape(fmt(final.get("stopped_by_guard")))),
        ("last epoch", escape(fmt(final.get("epoch")))),
        ("global step", escape(fmt(run.get("global_step")))),
        ("real fraction, last epoch", escape(fmt(final.get("real_fraction")))),
        ("real fraction, cumulative", escape(fmt(final.get("real_fraction_cumulative")))),
        ("created", escape(fmt(record.get("created")))),
    ]
    if record.get("error"):
        items.insert(1, ("error", f"<code>{escape(record['error'])}</code>"))
    return "<dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _events(record: dict) -> str:
    rows = [
        (e["epoch"], e["rule"], e["action"], e["value"], e["threshold"], e["reason"])
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


def _indicators(record: dict) -> str:
    history = (record.get("indicators") or {}).get("history") or []
    if not history:
        return '<p class="muted">No HeldOutRealCheck values.</p>'
    first, last = history[0], history[-1]
    keys = (record.get("indicators") or {}).get("keys", [])
    rows = [(k, first.get(k), last.get(k)) for k in keys]
    return (
        f"<p>{len(history)} checks, epochs {escape(fmt(first['epoch']))} to {escape(fmt(last['epoch']))}.</p>"
        + table(["indicator", f"first check (epoch {first['epoch']})", f"last check (epoch {last['epoch']})"],
                rows, numeric=(1, 2))
    )


def render_html(record: dict, images: Mapping[str, Optional[bytes]]) -> str:
    """The report page of ``record``, with the PNG bytes of each plot (``None``: not drawn) embedded.

    Args:
        record: a report record (:func:`~collapse_guard.report.record.build_record` or ``report.json``).
        images: ``{"real_fraction": png, "indicators": png}``.
    """
    raw = escape(json.dumps(jsonable(record), indent=1, allow_nan=False))  # NaN read back: "nan", as written
    sections = [
        ("Overview", _overview(record)),
        ("Guard events", _events(record)),
        ("Real fraction", image(images.get("real_fraction"), "real fraction over training")),
        ("Indicators", image(images.get("indicators"), "collapse indicators over training") + _indicators(record)),
        ("Guard rules: baselines and bounds at the end", _rules(record)),
        ("Training data provenance", _provenance(record)),
        ("Record", f"<details><summary>report.json (schema version {escape(fmt(record.get('schema_version')))})"
                   f"</summary><pre>{raw}</pre></details>"),
    ]
    body = "".join(f"<h2>{escape(title)}</h2>{content}" for title, content in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>collapse_guard report</title><style>{STYLE}</style></head>"
        f"<body><h1>collapse_guard report</h1>{body}</body></html>\n"
    )
