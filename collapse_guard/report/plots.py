"""Plots of a report record: the real fraction over training, the monitored indicators (each rule's bound in force
at each check), the other indicators; guard events marked, a reference run overlaid when the record has one.

The data behind each plot comes from a pure function of the record (:func:`event_markers`,
:func:`real_fraction_series`, :func:`indicator_series`, :func:`~collapse_guard.report.checks.bound_steps`); the
figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``, rendered by the Agg canvas), never
``pyplot``, so drawing changes no global backend or state of the user's process and works without a display. Every
label that comes from the record (source names, indicator keys, rule names, actions) is drawn as plain text: its
``$`` escaped (:func:`plain`), so a name like ``$x^$`` is not read as mathtext, and the plots are drawn and saved
with ``text.usetex`` off, so no name is read as LaTeX.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Optional

from collapse_guard.report.checks import bound_steps, end_bounds, monitored_keys
from collapse_guard.report.files import INDICATORS_OTHER_PNG, INDICATORS_PNG, REAL_FRACTION_PNG, write_atomic
from collapse_guard.report.glossary import BAD_DIRECTIONS, bad_direction
from collapse_guard.report.record import as_float

#: colour of each guard action (Okabe-Ito: readable with colour-vision deficiencies)
ACTION_COLORS = {"warn": "#E69F00", "quarantine": "#882255", "inject": "#0072B2", "stop": "#D55E00"}
#: ``gid`` of every artist that marks a guard event (tests and tools find the markers by it)
EVENT_GID = "guard-event"
#: ``gid`` of the lines that mark a quarantine of synthetic sources on the share panel
QUARANTINE_GID = "quarantine"
REAL_COLORS = ["#009E73", "#7FD1B9"]
SYNTHETIC_COLORS = ["#CC79A7", "#999999", "#56B4E9", "#F0E442", "#8C6BB1", "#BBBBBB"]
DPI = 100


def plain(text: Any) -> str:
    """``text`` as a matplotlib label drawn as written: every ``$`` escaped, so no part is read as mathtext."""
    return str(text).replace("$", r"\$")


# -- the data of the plots ------------------------------------------------------------------------------------
def event_markers(record: dict) -> list[dict]:
    """Every guard event to mark, in epoch order: ``{"epoch", "action", "rule", "monitor", "value", "threshold",
    "guard"}`` (``guard``: index of the guard in ``record["guards"]``)."""
    markers = []
    for g, guard in enumerate(record.get("guards") or []):
        for e in guard.get("events", []):
            markers.append({
                "epoch": e.get("epoch"),
                "action": e.get("action"),
                "rule": e.get("rule"),
                "monitor": e.get("monitor"),
                "value": as_float(e.get("value")),
                "threshold": as_float(e.get("threshold")),
                "guard": g,
            })
    return sorted(markers, key=lambda m: (m["epoch"] if m["epoch"] is not None else -1, m["guard"]))


def real_fraction_series(record: dict) -> Optional[dict]:
    """``{"epoch", "real_fraction", "real_fraction_cumulative", "real_fraction_target": [...], "shares": {source:
    [...]}}`` from the ratio history, or ``None`` without one."""
    ratio = record.get("ratio")
    if not ratio or not ratio.get("history"):
        return None
    rows = ratio["history"]
    series: dict[str, Any] = {"epoch": [r["epoch"] for r in rows]}
    for key in ("real_fraction", "real_fraction_cumulative", "real_fraction_target"):
        series[key] = [as_float(r.get(key)) for r in rows]
    series["shares"] = {s: [as_float(r.get("shares", {}).get(s, 0.0)) for r in rows] for s in ratio["sources"]}
    return series


#: panel order of the indicator plot after the monitored keys: by key prefix
GROUP_ORDER = ("collapse/heldout_real/", "collapse/gap/", "collapse/heldout_synthetic/", "collapse/features/",
               "collapse/generated/")


def _group(key: str) -> int:
    return next((i for i, prefix in enumerate(GROUP_ORDER) if key.startswith(prefix)), len(GROUP_ORDER))


def key_series(section: dict, key: str) -> Optional[dict]:
    """``{"epoch": [...], "value": [...]}`` of ``key`` in a record (or a reference run's part of one): from the
    indicator history, a ``collapse/real_fraction*`` or ``collapse/share/*`` key from the ratio history; ``None``
    when neither has it.

    Args:
        section: a report record, or its ``reference`` part.
        key: a logged key.

    Returns:
        The epochs and the values (as floats), or ``None``.

    Example::

        key_series(record, "collapse/share/gen1")["value"]   # from the ratio history when no check logged it
    """
    rows = (section.get("indicators") or {}).get("history", [])
    points = [(r["epoch"], as_float(r[key])) for r in rows if key in r]
    ratio_rows = (section.get("ratio") or {}).get("history", [])
    if not points and key.startswith("collapse/share/"):
        name = key[len("collapse/share/"):]
        points = [(r["epoch"], as_float(r.get("shares", {})[name])) for r in ratio_rows if name in r.get("shares", {})]
    elif not points and key.startswith("collapse/real_fraction"):
        field = key[len("collapse/"):]
        points = [(r["epoch"], as_float(r[field])) for r in ratio_rows if field in r]
    return {"epoch": [p[0] for p in points], "value": [p[1] for p in points]} if points else None


def indicator_series(record: dict, keys: Optional[list[str]] = None) -> dict[str, dict]:
    """``{key: {"epoch": [...], "value": [...]}}`` of ``keys`` (default: every indicator: the keys guard rules
    read first, :func:`~collapse_guard.report.checks.monitored_keys`, then the others grouped (held-out real, gap,
    held-out synthetic, features, generated) in the order they were logged). A key without values is left out."""
    if keys is None:
        monitored = monitored_keys(record)
        logged = (record.get("indicators") or {}).get("keys", [])
        keys = monitored + sorted((k for k in logged if k not in monitored), key=_group)  # stable sort
    out = {}
    for key in keys:
        series = key_series(record, key)
        if series is not None:
            out[key] = series
    return out


def other_keys(record: dict) -> list[str]:
    """The indicators no guard rule reads, grouped as in :func:`indicator_series`.

    Args:
        record: a report record.

    Returns:
        The keys that have values, in panel order.

    Example::

        figure_indicators(record, other_keys(record))
    """
    monitored = set(monitored_keys(record))
    return [k for k in indicator_series(record) if k not in monitored]


#: the bounds each rule had in force at the end (what a record written before per-check bounds holds)
rule_bounds = end_bounds


# -- drawing ---------------------------------------------------------------------------------------------------
def _new_figure(width: float, height: float):
    # margins are set by hand (``subplots_adjust``): a constrained layout costs several extra draws of the figure
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


def _mark_events(ax, markers: list[dict], label: bool) -> None:
    """A vertical line per (epoch, action) with a guard event; its action named at the top when ``label``."""
    seen = set()
    for m in markers:
        if m["epoch"] is None or (m["epoch"], m["action"]) in seen:
            continue
        seen.add((m["epoch"], m["action"]))
        color = ACTION_COLORS.get(m["action"], "#444444")
        ax.axvline(m["epoch"], color=color, linestyle="--", linewidth=1.3, alpha=0.9, gid=EVENT_GID, zorder=1)
        if label:
            ax.annotate(
                plain(m["action"]), xy=(m["epoch"], 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                textcoords="offset points", ha="left", va="top", fontsize=8, color=color, gid=EVENT_GID,
            )


def _action_legend(fig, markers: list[dict]) -> None:
    from matplotlib.lines import Line2D

    actions = [a for a in ACTION_COLORS if any(m["action"] == a for m in markers)]
    if actions:
        handles = [Line2D([], [], color=ACTION_COLORS[a], linestyle="--", label=f"guard: {a}") for a in actions]
        fig.legend(handles=handles, loc="lower center", ncols=len(handles), fontsize=8, frameon=False)


def _source_colors(sources: list[str], kinds: dict[str, str]) -> list[str]:
    colors, real_i, synth_i = [], 0, 0
    for s in sources:
        if kinds.get(s, "real" if s in ("real", "reserve") else "synthetic") == "real":
            colors.append(REAL_COLORS[real_i % len(REAL_COLORS)])
            real_i += 1
        else:
            colors.append(SYNTHETIC_COLORS[synth_i % len(SYNTHETIC_COLORS)])
            synth_i += 1
    return colors


def figure_real_fraction(record: dict):
    """The real fraction per epoch (with its target and cumulative value) above each source's share of the
    epoch's samples; guard events as dashed vertical lines. ``None`` when the record has no ratio history."""
    series = real_fraction_series(record)
    if series is None:
        return None
    markers = event_markers(record)
    epochs = series["epoch"]
    width, height = 8.5, 6.0
    fig = _new_figure(width, height)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    fig.subplots_adjust(left=0.8 / width, right=1 - 1.2 / width, top=1 - 0.35 / height, bottom=0.85 / height,
                        hspace=0.08)
    top.plot(epochs, series["real_fraction"], marker="o", color="#009E73", linewidth=2, label="real fraction (epoch)")
    top.plot(epochs, series["real_fraction_target"], linestyle="--", color="#555555", label="target")
    top.plot(epochs, series["real_fraction_cumulative"], linestyle=":", color="#000000", label="cumulative")
    reference = key_series(record["reference"], "collapse/real_fraction") if record.get("reference") else None
    if reference is not None:
        top.plot(reference["epoch"], reference["value"], linestyle="--", color=REFERENCE_COLOR, label="reference run")
    top.set_ylim(-0.03, 1.08)
    top.set_ylabel("real share of training samples")
    top.set_title("Real fraction trained on", loc="left", fontsize=11)
    top.grid(alpha=0.3)
    top.legend(loc="lower left", fontsize=8)
    _mark_events(top, markers, label=True)

    provenance = record.get("provenance") or {}
    kinds = {s["name"]: s["kind"] for s in provenance.get("sources", [])}
    sources = [s for s in series["shares"] if any(v > 0 for v in series["shares"][s] if math.isfinite(v))]
    if sources:
        areas = bottom.stackplot(
            epochs, [series["shares"][s] for s in sources], colors=_source_colors(sources, kinds), alpha=0.85,
            step=None,
        )
        # labels given to the legend itself: matplotlib would leave out a name starting with "_"
        bottom.legend(areas, [plain(s) for s in sources], loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
                      frameon=False)
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("share per source")
    bottom.set_xlabel("epoch")
    bottom.grid(alpha=0.3)
    _mark_events(bottom, markers, label=False)
    for q in provenance.get("quarantines") or []:  # acting from the next epoch: drawn between the two
        x = as_float(q.get("epoch")) + 0.5
        if math.isfinite(x):
            bottom.axvline(x, color=ACTION_COLORS["quarantine"], linestyle=":", linewidth=1.5, gid=QUARANTINE_GID)
            bottom.annotate(plain("quarantined " + ", ".join(q.get("sources") or [])), xy=(x, 1.0), fontsize=7,
                            xycoords=("data", "axes fraction"), xytext=(2, -2), textcoords="offset points",
                            ha="left", va="top", color=ACTION_COLORS["quarantine"], gid=QUARANTINE_GID)
    from matplotlib.ticker import MaxNLocator

    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    _action_legend(fig, markers)
    return fig


#: colours of the bound lines of the rules on one indicator (a second and third rule on the same key)
BOUND_COLORS = ("#777777", "#56B4E9", "#CC79A7")
REFERENCE_COLOR = "#E69F00"


def panel_title(key: str) -> str:
    """A panel's title: the key without ``collapse/``, its bad direction as an arrow (``heldout_real/acc  ↓ bad``),
    ``$`` escaped.

    Args:
        key: a logged key.

    Returns:
        The title text.

    Example::

        panel_title("collapse/heldout_real/acc")   # 'heldout_real/acc  ↓ bad'
    """
    title = plain(key[len("collapse/"):] if key.startswith("collapse/") else key)
    direction = bad_direction(key)
    return f"{title}  {BAD_DIRECTIONS[direction]} bad" if direction else title


def _draw_bounds(ax, steps: list[dict]) -> set:
    """Each rule's bound in force at each check as a step line (level around each check); the values beyond it as
    open circles, those that fired as crosses (in the colour of the action taken; grey when none was, in a
    cooldown). Returns the kinds of marks drawn, for the legend."""
    drawn = set()
    for i, step in enumerate(steps):
        color = BOUND_COLORS[i % len(BOUND_COLORS)]
        ax.plot(step["epoch"], step["bound"], drawstyle="steps-mid", color=color, linewidth=1.3, linestyle="-",
                alpha=0.9, zorder=2, label="_bound")
        drawn.add("bound")
        for epoch, value, violated, fired, action in zip(step["epoch"], step["value"], step["violated"],
                                                          step["fired"], step["action"]):
            if not math.isfinite(value):
                continue
            if fired:
                acted = action in ACTION_COLORS
                ax.plot([epoch], [value], marker="X", markersize=9 if acted else 7, linestyle="none", zorder=5,
                        color=ACTION_COLORS.get(action, "#777777"), gid=EVENT_GID if acted else None)
                drawn.add("fired" if acted else "cooling")
            elif violated:
                ax.plot([epoch], [value], marker="o", markersize=7, linestyle="none", markerfacecolor="none",
                        markeredgecolor="#D55E00", zorder=4)
                drawn.add("violated")
    if len(steps) > 1:  # which line is which rule
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=BOUND_COLORS[i % len(BOUND_COLORS)]) for i in range(len(steps))]
        ax.legend(handles, [plain(s["rule"]) for s in steps], fontsize=6, loc="best", frameon=False)
    return drawn


def _legend(fig, markers: list[dict], drawn: set) -> None:
    """The figure's legend: the marks drawn (``drawn``) and the guard actions of ``markers``."""
    from matplotlib.lines import Line2D

    kinds = {
        "value": Line2D([], [], color="#333333", marker=".", label="value at each check"),
        "reference": Line2D([], [], color=REFERENCE_COLOR, linestyle="--", label="reference run"),
        "bound": Line2D([], [], color=BOUND_COLORS[0], drawstyle="steps-mid", label="bound in force at each check"),
        "end_bound": Line2D([], [], color=BOUND_COLORS[0], linestyle=":", label="bound at the end (older record)"),
        "violated": Line2D([], [], color="#D55E00", marker="o", markerfacecolor="none", linestyle="none",
                           label="beyond the bound"),
        "fired": Line2D([], [], color="#333333", marker="X", linestyle="none", label="rule fired: action taken"),
        "cooling": Line2D([], [], color="#777777", marker="X", linestyle="none", label="fired in a cooldown"),
    }
    handles = [h for k, h in kinds.items() if k in drawn]
    actions = [a for a in ACTION_COLORS if any(m["action"] == a for m in markers)]
    handles += [Line2D([], [], color=ACTION_COLORS[a], linestyle="--", label=f"guard: {a}") for a in actions]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncols=min(len(handles), 5), fontsize=8, frameon=False)


def figure_indicators(record: dict, keys: Optional[list[str]] = None, columns: int = 3,
                      title: str = "Monitored collapse indicators per check"):
    """One panel per indicator of ``keys`` (default: those a guard rule reads; every indicator in a record
    without a rule): its value at each check; each rule's bound in force at each check as a step line, the values
    beyond it circled and those that fired crossed (a record written before per-check bounds: the bound at the end,
    dotted, and the values of the events); the reference run's values dashed; guard events as dashed vertical lines;
    the bad direction in the title. ``None`` when none of ``keys`` has a value."""
    if keys is None:
        keys = monitored_keys(record) or None
    series = indicator_series(record, keys)
    if not series:
        return None
    from matplotlib.ticker import MaxNLocator

    markers = event_markers(record)
    steps, ends = bound_steps(record), end_bounds(record)
    reference = record.get("reference") or None
    n = len(series)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    width, height = max(3.9 * cols, 7.5), 2.5 * rows + 1.4
    fig = _new_figure(width, height)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=0.55 / width, right=1 - 0.15 / width, top=1 - 0.6 / height, bottom=0.95 / height,
                        hspace=0.6, wspace=0.3)
    drawn = {"value"}
    for ax, (key, data) in zip(axes.flat, series.items()):
        ax.plot(data["epoch"], data["value"], marker=".", color="#333333", linewidth=1.4, zorder=3)
        ref = key_series(reference, key) if reference else None
        if ref is not None:
            ax.plot(ref["epoch"], ref["value"], color=REFERENCE_COLOR, linestyle="--", linewidth=1.2, zorder=2)
            drawn.add("reference")
        ax.set_title(panel_title(key), fontsize=9, loc="left")
        if key in steps:
            drawn |= _draw_bounds(ax, steps[key])
        else:
            for b in ends.get(key, []):
                ax.axhline(b["bound"], color=BOUND_COLORS[0], linestyle=":", linewidth=1.2)
                drawn.add("end_bound")
            for m in markers:
                if m["monitor"] == key and math.isfinite(m["value"]):
                    ax.plot([m["epoch"]], [m["value"]], marker="X", markersize=9, linestyle="none",
                            color=ACTION_COLORS.get(m["action"], "#444444"), gid=EVENT_GID, zorder=5)
                    drawn.add("fired")
        _mark_events(ax, markers, label=False)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{plain(title)}  (↓ bad: a fall is collapse; ↑ bad: a rise is)", fontsize=10, y=1 - 0.2 / height,
                 va="top")
    _legend(fig, markers, drawn)
    return fig


def figure_other_indicators(record: dict):
    """:func:`figure_indicators` of the indicators no guard rule reads (four columns); ``None`` without a rule
    (then :file:`indicators.png` holds them all) or without such indicators.

    Args:
        record: a report record.

    Returns:
        A ``matplotlib.figure.Figure``, or ``None``.

    Example::

        fig = figure_other_indicators(record)
        if fig is not None:
            save_figure(fig, Path("indicators_other.png"))
    """
    if not monitored_keys(record):
        return None
    return figure_indicators(record, other_keys(record) or [], columns=4,
                             title="Other collapse indicators per check (no rule reads them)")


def save_figure(fig, path: Path) -> Path:
    """Render ``fig`` to a PNG at ``path`` with the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return write_atomic(path, buffer.getvalue())


#: the plots of a report: ``(name, file name, figure function)``
PLOTS = (
    ("real_fraction", REAL_FRACTION_PNG, figure_real_fraction),
    ("indicators", INDICATORS_PNG, figure_indicators),
    ("indicators_other", INDICATORS_OTHER_PNG, figure_other_indicators),
)


def save_plot(record: dict, dirpath: Path, name: str) -> Optional[Path]:
    """Draw the plot ``name`` (see :data:`PLOTS`) of ``record`` into ``dirpath``; ``None`` when the record has no
    data for it (an older file of that name is then removed, so it cannot be mistaken for this run's). Drawn and
    saved with ``text.usetex`` off: the record's names are plain text, never LaTeX."""
    from matplotlib import rc_context

    _, filename, draw = next(p for p in PLOTS if p[0] == name)
    path = Path(dirpath) / filename
    with rc_context({"text.usetex": False}):
        fig = draw(record)
        if fig is None:
            path.unlink(missing_ok=True)
            return None
        return save_figure(fig, path)
