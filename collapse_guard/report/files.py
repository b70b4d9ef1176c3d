"""Where a report lives and how its JSON is written and read back.

A run directory holds::

    report.json        the record (schema in :mod:`collapse_guard.report.record`)
    provenance.json    the provenance manifest alone (also inside report.json)
    real_fraction.png  real fraction and per-source shares over training, guard events marked
    indicators.png     the monitored indicators over the checks: each rule's bound in force at each check, the
                       values beyond it and those that fired, guard events, a reference run when given
    indicators_other.png   the other indicators, the same way (shown folded in the page)
    report.html        one self-contained page: all of the above, readable offline
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Union

REPORT_JSON = "report.json"
PROVENANCE_JSON = "provenance.json"
EVENTS_CSV = "events.csv"
#: the columns of :data:`EVENTS_CSV`, one row per guard event
EVENT_COLUMNS = ("guard", "epoch", "global_step", "action", "rules", "monitor", "value", "bound", "reason")
REAL_FRACTION_PNG = "real_fraction.png"
INDICATORS_PNG = "indicators.png"
INDICATORS_OTHER_PNG = "indicators_other.png"
REPORT_HTML = "report.html"

#: the folder :class:`~collapse_guard.CollapseReport` writes into, under the Trainer's log dir
DEFAULT_SUBDIR = "collapse_report"

PathLike = Union[str, "os.PathLike[str]"]


def write_atomic(path: PathLike, data: Union[str, bytes]) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so a reader (or a crash) never
    sees half a file. The file gets the usual permissions (the process umask), as ``open`` gives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: PathLike, obj: dict) -> Path:
    """``obj`` (already JSON-ready: :func:`~collapse_guard.report.record.jsonable`) as strict JSON."""
    return write_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def events_csv(record: dict) -> str:
    """Every guard event of ``record`` as CSV text, one row per event (:data:`EVENT_COLUMNS`; ``bound`` is schema
    1's ``threshold``, ``rules`` every rule that fired joined by ``;``), for spreadsheets and loggers that keep files.

    Args:
        record: a report record.

    Returns:
        The CSV text: a header row, then one row per event (the header alone without events).

    Example::

        Path("events.csv").write_text(events_csv(record))
    """
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EVENT_COLUMNS)
    for g, guard in enumerate(record.get("guards") or []):
        for event in guard.get("events") or []:
            rules = event.get("rules") or [event.get("rule")]
            writer.writerow([g, event.get("epoch"), event.get("global_step"), event.get("action"),
                             ";".join(str(r) for r in rules), event.get("monitor"), event.get("value"),
                             event.get("threshold"), event.get("reason")])
    return out.getvalue()


def find_report(run_dir: PathLike) -> Path:
    """The ``report.json`` of ``run_dir``: the file itself, ``run_dir/report.json``, or
    ``run_dir/collapse_report/report.json`` (a Trainer's root or log dir).

    Raises:
        FileNotFoundError: when none of these exists.
    """
    run_dir = Path(run_dir)
    candidates = [run_dir] if run_dir.suffix == ".json" else [run_dir / REPORT_JSON, run_dir / DEFAULT_SUBDIR / REPORT_JSON]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no collapse report in {str(run_dir)!r}: looked for {', '.join(str(c) for c in candidates)}. "
        "CollapseReport writes it at the end of a fit (by default into <log dir>/collapse_report/)."
    )


def load_record(run_dir: PathLike) -> dict:
    """The report record saved in ``run_dir`` (see :func:`find_report`).

    Args:
        run_dir: the report folder, the run's log or root folder, or the ``report.json`` file itself.

    Raises:
        FileNotFoundError: when there is no ``report.json``.
        ValueError: naming the file, when it cannot be read, is not UTF-8 text or JSON, nests too deeply, is not a
            collapse_guard report, is of a newer schema than this version reads, or misses a field or holds one of
            the wrong type at any depth (see :func:`~collapse_guard.report.record.check_record`; the message names
            the field's path).

    Example::

        record = load_record("lightning_logs/version_0")      # finds collapse_report/report.json
        print(record["final"]["guard_state"], [e["reason"] for g in record["guards"] for e in g["events"]])
    """
    from collapse_guard.report.record import check_record

    path = find_report(run_dir)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a collapse_guard report: it is not UTF-8 text ({err}).") from err
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({type(err).__name__}: {err.strerror or err}).") from err
    try:
        record = json.loads(text)
    except ValueError as err:  # JSONDecodeError, and an integer of more digits than Python converts
        raise ValueError(f"{path} is not valid JSON ({err}).") from err
    except RecursionError as err:
        raise ValueError(f"{path} is not a collapse_guard report: its JSON nests too deeply to read.") from err
    try:
        check_record(record)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return record
