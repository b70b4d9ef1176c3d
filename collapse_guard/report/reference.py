"""A reference run beside a report (e.g. the same fit on real data only): read, embedded, compared.

The reference is another run's ``report.json``, read with the same checks as any record
(:func:`~collapse_guard.report.files.load_record`). What the plots and tables need of it (its indicators per check,
its real fraction per epoch, its final state) is embedded in the record under ``reference``
(:func:`reference_section`), so ``collapse-guard report`` re-renders the comparison from ``report.json`` alone.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from collapse_guard.report.files import PathLike, find_report, load_record
from collapse_guard.report.glossary import bad_direction
from collapse_guard.report.record import as_float


def reference_section(reference: dict, path: str) -> dict:
    """The part of a reference run's record a report keeps: ``{"path", "created", "status", "ratio",
    "indicators", "final"}`` (its own reference, guards and provenance are left out).

    Args:
        reference: the reference run's record (checked: :func:`~collapse_guard.report.files.load_record`).
        path: where it was read from, for the record.

    Returns:
        The part, JSON-ready as the record it came from.

    Example::

        record["reference"] = reference_section(load_record("runs/real_only"), "runs/real_only/report.json")
    """
    return {"path": str(path), "created": reference.get("created"), "status": reference.get("status"),
            "ratio": reference.get("ratio"), "indicators": reference.get("indicators"),
            "final": reference.get("final", {})}


def load_reference(path: PathLike) -> dict:
    """Read the reference run at ``path`` (its report folder, run folder or ``report.json``) as
    :func:`reference_section`.

    Args:
        path: anything :func:`~collapse_guard.report.files.find_report` takes.

    Raises:
        ValueError: naming the reference and what is wrong: not found, not readable, not a report, or a field
            missing or of the wrong type (the message of ``load_record``, which names the file and the field).

    Example::

        record["reference"] = load_reference("runs/real_only/collapse_report")
    """
    try:
        found = find_report(path)
        return reference_section(load_record(found), str(found))
    except (OSError, ValueError) as err:
        raise ValueError(f"the reference run {str(path)!r} cannot be read: {err}") from err


def last_values(record: Optional[dict]) -> dict[str, Any]:
    """``{key: value}`` of every indicator at the last check that logged it (``final.metrics`` for a key no check
    logged).

    Args:
        record: a report record, or its ``reference`` part; ``None`` or ``{}``: no values.

    Returns:
        The last value of each ``collapse/...`` key.

    Example::

        last_values(record["reference"]).get("collapse/heldout_real/acc")
    """
    if not record:
        return {}
    values = dict((record.get("final") or {}).get("metrics") or {})
    for row in (record.get("indicators") or {}).get("history") or []:
        values.update({k: v for k, v in row.items() if k.startswith("collapse/")})
    return values


def worse(key: str, this: Any, ref: Any) -> Optional[bool]:
    """Whether ``this`` run's value of ``key`` is worse than the reference's by the key's bad direction (``None``:
    no direction, or a value that is not a finite number).

    Args:
        key: a logged key (its direction: :func:`~collapse_guard.report.glossary.bad_direction`).
        this: this run's value.
        ref: the reference run's value.

    Returns:
        ``True`` when worse, ``False`` when not, ``None`` when it cannot say.

    Example::

        worse("collapse/heldout_real/acc", 0.81, 0.86)   # True: accuracy falls when collapsing
    """
    direction, a, b = bad_direction(key), as_float(this), as_float(ref)
    if direction not in ("falls", "rises") or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a < b if direction == "falls" else a > b


def comparison(record: dict, keys: Optional[list[str]] = None) -> list[dict]:
    """The final value of each indicator, this run against the reference: ``[{"key", "this", "reference",
    "difference", "bad", "worse"}]`` for ``keys`` (default: every key both runs logged that has a bad direction),
    in that order; ``[]`` without a reference.

    Example::

        [(c["key"], c["this"], c["reference"], c["worse"]) for c in comparison(record)]
    """
    reference = record.get("reference")
    if not reference:
        return []
    mine, theirs = last_values(record), last_values(reference)
    if keys is None:
        keys = [k for k in mine if k in theirs and bad_direction(k) is not None]
    rows = []
    for key in keys:
        if key not in mine and key not in theirs:
            continue
        this, ref = mine.get(key), theirs.get(key)
        difference = as_float(this) - as_float(ref)
        rows.append({"key": key, "this": this, "reference": ref,
                     "difference": difference if math.isfinite(difference) else None,
                     "bad": bad_direction(key), "worse": worse(key, this, ref)})
    return rows
