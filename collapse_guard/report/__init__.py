"""Collapse reports: the JSON record of a fit, its provenance manifest, plots, an HTML page and a terminal summary.

:class:`~collapse_guard.CollapseReport` writes them at the end of a fit; ``collapse-guard report RUN_DIR``
re-renders the plots, the page and the summary from the saved ``report.json``. One job per module: ``record``
(the data), ``schema`` (its layout), ``files`` (layout and JSON I/O), ``checks`` (the guards' checks: bounds per
check, timeline, health), ``reference`` (a reference run), ``glossary`` (what each indicator measures, which way is
bad), ``plots``, ``html``, ``summary``, ``render`` (writes them, each step failure-safe).
"""
from collapse_guard.report.files import (
    DEFAULT_SUBDIR,
    INDICATORS_OTHER_PNG,
    INDICATORS_PNG,
    PROVENANCE_JSON,
    REAL_FRACTION_PNG,
    REPORT_HTML,
    REPORT_JSON,
    find_report,
    load_record,
)
from collapse_guard.report.record import SCHEMA_VERSION, build_record, provenance_section
from collapse_guard.report.reference import load_reference
from collapse_guard.report.render import ReportResult, ReportWarning, render, write_record, write_report

__all__ = [
    "DEFAULT_SUBDIR",
    "INDICATORS_OTHER_PNG",
    "INDICATORS_PNG",
    "PROVENANCE_JSON",
    "REAL_FRACTION_PNG",
    "REPORT_HTML",
    "REPORT_JSON",
    "SCHEMA_VERSION",
    "ReportResult",
    "ReportWarning",
    "build_record",
    "find_report",
    "load_record",
    "load_reference",
    "provenance_section",
    "render",
    "write_record",
    "write_report",
]
