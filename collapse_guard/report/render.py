"""Write a report record into a run directory: JSON first, then plots, the HTML page and the terminal summary.

Every step is independent: a step that fails (matplotlib missing or raising, a full disk) is reported as a
:class:`ReportWarning` and the others still run, so the JSON record survives a plotting error and a plotting
error never ends a fit.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from collapse_guard.report.files import (
    EVENTS_CSV, PROVENANCE_JSON, REPORT_HTML, REPORT_JSON, events_csv, write_atomic, write_json,
)

ON_ERROR = ("warn", "raise")


class ReportWarning(UserWarning):
    """A part of a collapse report could not be written; the rest was."""


@dataclass
class ReportResult:
    """What a report step wrote (``files``: name -> path, ``None`` for a part without data) and what failed
    (``errors``: step -> ``"Type: message"``)."""

    files: dict[str, Optional[Path]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _step(result: ReportResult, name: str, on_error: str, fn, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - a report must not end the run that it reports on
        if on_error == "raise":
            raise
        result.errors[name] = f"{type(err).__name__}: {err}"
        warnings.warn(
            f"collapse report: could not write the {name} ({type(err).__name__}: {err}); the other parts are written.",
            ReportWarning,
            stacklevel=3,
        )
        return None


def write_record(record: dict, dirpath: Path, on_error: str = "warn", result: Optional[ReportResult] = None) -> ReportResult:
    """Write ``report.json``, ``events.csv`` (one row per guard event) and, when the record has provenance,
    ``provenance.json``.

    Raises:
        ValueError: for an unknown ``on_error``.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
    result = result or ReportResult()
    dirpath = Path(dirpath)
    result.files["report.json"] = _step(result, "JSON record", on_error, write_json, dirpath / REPORT_JSON, record)
    result.files[EVENTS_CSV] = _step(result, "events table", on_error, write_atomic, dirpath / EVENTS_CSV,
                                     events_csv(record))
    if record.get("provenance") is not None:
        result.files["provenance.json"] = _step(
            result, "provenance manifest", on_error, write_json, dirpath / PROVENANCE_JSON, record["provenance"]
        )
    return result


def render(
    record: dict,
    dirpath: Path,
    plots: bool = True,
    html: bool = True,
    summary: bool = True,
    console: Any = None,
    on_error: str = "warn",
    result: Optional[ReportResult] = None,
) -> ReportResult:
    """Draw the plots, write the HTML page and print the summary of ``record`` into ``dirpath``.

    Args:
        record: a report record.
        dirpath: the run directory.
        plots: write ``real_fraction.png``, ``indicators.png`` and ``indicators_other.png`` (each when the record
            has data for it).
        html: write ``report.html`` (with the plots of this call embedded).
        summary: print the ``rich`` summary.
        console: a ``rich.console.Console`` for the summary (default: standard output).
        on_error: ``"warn"`` (a :class:`ReportWarning`, the other steps go on) or ``"raise"``.
        result: a result to add to.

    Returns:
        The files written (``None`` for a plot without data) and the steps that failed.

    Raises:
        ValueError: for an unknown ``on_error``.
        Exception: with ``on_error="raise"``, the first error of a step.

    Example::

        record = load_record("runs/exp1/collapse_report")
        render(record, "runs/exp1/collapse_report", summary=False)   # what `collapse-guard report` does
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
    result = result or ReportResult()
    dirpath = Path(dirpath)
    images: dict[str, Optional[bytes]] = {}
    if plots:
        from collapse_guard.report.plots import PLOTS, save_plot

        for name, filename, _ in PLOTS:
            path = _step(result, f"{name} plot", on_error, save_plot, record, dirpath, name)
            result.files[filename] = path
            images[name] = path.read_bytes() if path is not None else None
    if html:
        from collapse_guard.report.html import render_html

        page = _step(result, "HTML page", on_error, render_html, record, images)
        if page is not None:
            result.files[REPORT_HTML] = _step(result, "HTML page", on_error, write_atomic, dirpath / REPORT_HTML, page)
    if summary:
        from collapse_guard.report.summary import print_summary

        _step(result, "terminal summary", on_error, print_summary, record, console,
              {k: v for k, v in result.files.items() if v is not None})
    return result


def write_report(record: dict, dirpath: Path, **kwargs: Any) -> ReportResult:
    """:func:`write_record` then :func:`render` (same keyword arguments as :func:`render`).

    Raises:
        ValueError: for an unknown ``on_error``.

    Example::

        record = build_record(trainer, ratio_monitor=ratio, check=check, guards=[guard], datamodule=dm)
        write_report(record, "runs/exp1/report", summary=False)
    """
    result = write_record(record, dirpath, on_error=kwargs.get("on_error", "warn"))
    return render(record, dirpath, result=result, **kwargs)
