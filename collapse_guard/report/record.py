"""The report record: plain, JSON-ready data gathered from a fit's collapse_guard callbacks and data.

Nothing here imports Lightning, the callbacks or the data module: each ``*_section`` function turns the record
one object gives of itself (``summary()``, ``history``, ``provenance()``) into the schema's plain data, so the record
is tested and rebuilt without a Trainer. :func:`build_record` puts the sections
together. Layout (``SCHEMA_VERSION`` 1; ``null`` marks a part whose callback or data the fit did not have)::

    {
      "schema_version": 1, "kind": "collapse_guard.report",
      "created": "2025-01-01T12:00:00+00:00",          # UTC, ISO 8601
      "status": "completed" | "failed" | "interrupted",
      "error": null | "ValueError: ...",                 # the exception that ended a failed fit
      "run": {"current_epoch", "global_step", "max_epochs", "world_size", "should_stop", "dirpath"},
      "ratio": null | {                                  # RatioMonitor
        "sources": ["real", "reserve", "gen1", ...],
        "history": [{"epoch", "real_fraction", "real_fraction_cumulative", "real_fraction_target",
                     "samples": {source: n}, "shares": {source: share}}, ...]},
      "indicators": null | {                             # HeldOutRealCheck
        "every_n_epochs": 1, "keys": ["collapse/heldout_real/acc", ...],
        "history": [{"epoch", "global_step", "collapse/...": value, ...}, ...]},
      "guards": [{                                       # every CollapseGuard of the Trainer ([] when none)
        "state": "ok" | "warn" | "quarantine" | "inject" | "stop", "injections": 0, "cooldown_left": 0,
        "config": {"action", "inject_fraction", "real_fraction_step", "max_injections", "cooldown", "strict",
                   "restore_best"},
        "rules": [{"name", "monitor", "mode", "threshold", "relative", "sigmas", "stderr", "baseline",
                   "baseline_checks", "min_change", "min_delta", "patience", "action", "non_finite",  # min_delta: Rule.margin
                   "noise",                              # "stderr" | "checks" | "combined" | "detrended"
                   "accumulate", "allowance", "smoothing",              # only when the rule accumulates
                   "state": {"checks", "first_values", "best", "wait", "last_stderr", "values"},  # RuleState.state_dict()
                   "members": {member: {...the same...}},                 # family rules ("prefix/*") only
                   "baseline_value": float | null,                        # RuleState.baseline()
                   "bound": float | null}],                # RuleState.bound(last_stderr)
        "events": [{"epoch", "global_step", "rule", "monitor", "value", "threshold", "action", "reason", "rules",
                    "sources"}],                         # sources: a quarantine's synthetic sources
                                                         # threshold: GuardEvent.bound, the bound in force
        "checks": [{"epoch", "global_step", "action", "state", "word",   # optional: the guard's CheckLog, per check
                    "rules": [{"rule", "monitor", "value", "bound", "violated", "fired",  # bound: in force then
                               "member", "members": {member: {"value", "bound", "violated", "fired"}}}]}]}],
      "injections": [{"epoch", "samples", "real_fraction_floor", "reserve_remaining", "reason"}],
      "provenance": null | <the provenance manifest, below>,
      "final": {"epoch", "global_step", "real_fraction", "real_fraction_cumulative", "guard_state",
                "events", "stopped_by_guard", "metrics": {"collapse/...": value},
                "guard_health"},                         # optional: the guard's word at its last check
      "reference": null | {"path", "created", "status", "ratio", "indicators", "final"},  # optional: a reference
                                                         # run's record, in part (report.reference)
      "source_indicators": null | {                      # optional: a SourceCheck's values at each of its checks
        "every_n_epochs": 1, "keys": ["collapse/source/acc_gap/gen1", ...],
        "history": [{"epoch", "global_step", "collapse/source/...": value, ...}, ...]}
    }

``guard_state`` is the last action a guard took (it stays ``"inject"``); ``guard_health`` where the indicators
stood at the last check (``"ok (injected)"``: back within their bounds since). Records written before ``checks``,
``guard_health`` and ``reference`` existed lack them and still render.

The provenance manifest (also written alone as ``provenance.json``)::

    {
      "schema_version": 1, "kind": "collapse_guard.provenance",
      "seed": 0, "samples_total": 1920, "real_share": 0.53,
      "sources": [{"name", "kind": "real" | "synthetic", "generator", "generation", "params",
                   "size", "training_pool", "samples", "share", "heldout_copies"}],
      "heldout": {"real": 360, "synthetic": 60},
      "injections": [...], "contamination": {...},
      "audit": {"samples", "k", "real": {...}, "sources": {name: {...}}},   # optional: a SourceAudit's audit
      "quarantines": [{"epoch", "sources", "weight", "reason", "shares_before", "shares_after",
                       "real_fraction_before", "real_fraction_after"}]   # optional: MixedDataModule.quarantine
    }

``samples`` is the number of training samples drawn from the source over the whole fit (all ranks), ``share`` its
part of ``samples_total`` (the shares sum to 1; ``null`` before any batch). Real sources have generation 0.
JSON has no NaN or infinity: non-finite numbers are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``
(read them back with :func:`as_float`).

The same layout, as data that :func:`check_record` holds a record read back to (the JSON type of every field, which
fields the renderers need): :data:`collapse_guard.report.schema.REPORT`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import numbers
from typing import Any, Mapping, Optional, Sequence

from collapse_guard.report.schema import check_layout, json_type

SCHEMA_VERSION = 1
REPORT_KIND = "collapse_guard.report"
PROVENANCE_KIND = "collapse_guard.provenance"

#: tensors and arrays with at most this many elements are recorded as lists; larger ones by shape and dtype
MAX_ARRAY_ELEMENTS = 64

#: the guard states, mildest first (the report's guard state is the strongest of its guards')
GUARD_STATES = ("ok", "warn", "quarantine", "inject", "stop")

#: schema 1 keeps the key names it was published with: a rule's ``margin`` is written as ``min_delta``, an event's
#: ``bound`` (the bound in force) as ``threshold``
RULE_NAMES, EVENT_NAMES = {"margin": "min_delta"}, {"bound": "threshold"}


# -- JSON-ready values ----------------------------------------------------------------------------------------
def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data: non-finite floats as ``"nan"``/``"inf"``/``"-inf"``, tensors and arrays as lists
    (or ``"<Tensor shape=(...) dtype=...>"`` when larger than :data:`MAX_ARRAY_ELEMENTS`), mapping keys as
    strings, dataclasses as dicts, anything else as its ``repr`` (a class or function by its qualified name)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [jsonable(v) for v in items]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "tolist") and hasattr(obj, "shape"):  # torch.Tensor, numpy array or scalar
        size = int(math.prod(obj.shape))
        if size <= MAX_ARRAY_ELEMENTS:
            return jsonable(obj.tolist())
        return f"<{type(obj).__name__} shape={tuple(obj.shape)} dtype={getattr(obj, 'dtype', '?')}>"
    if isinstance(obj, type) or callable(obj):
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}".lstrip(".")
    return repr(obj)


def as_float(value: Any) -> float:
    """A recorded number back as a float (``"nan"``, ``"inf"``, ``"-inf"`` and ``None`` included: ``None`` and
    anything that is not a number are NaN; an integer too large for a float is infinite)."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        return math.nan


# -- reading a record back ------------------------------------------------------------------------------------
#: a record nested deeper than this is refused on reading (a schema-1 record is about 6 levels deep; the
#: parameters of a source, as the user gave them, add a few)
MAX_DEPTH = 100


def nesting_depth(obj: Any) -> int:
    """How deeply lists and dicts nest in ``obj`` (a scalar: 0), found without recursion."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        value, level = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            depth = max(depth, level)
            stack.extend((child, level + 1) for child in children)
    return depth


def check_record(record: Any) -> None:
    """Check that ``record`` (read back from JSON) is a report of a version this collapse_guard reads and has its
    layout, so that every renderer takes it: its ``kind``, a ``schema_version`` (exactly an integer: not ``1.0``,
    not a boolean) from 1 to :data:`SCHEMA_VERSION`, at most :data:`MAX_DEPTH` levels of nesting, and every field
    of the type that :data:`~collapse_guard.report.schema.REPORT` gives it
    (:func:`~collapse_guard.report.schema.check_layout`: numbers may be ``NaN``/``Infinity`` or
    ``"nan"``/``"inf"``/``"-inf"``; unknown keys are allowed).

    Args:
        record: the parsed JSON of a ``report.json``.

    Raises:
        ValueError: naming what is wrong and where: the kind, the version, the depth, or the first field that is
            missing or of the wrong type (``guards[0].events[2].epoch is a string; a report has an integer
            there.``).

    Example::

        check_record(json.loads(path.read_text(encoding="utf-8")))   # what load_record does
    """
    if not isinstance(record, dict) or record.get("kind") != REPORT_KIND:
        raise ValueError(f"it is not a collapse_guard report (its 'kind' is not {REPORT_KIND!r}).")
    version = record.get("schema_version")
    if type(version) is not int or version < 1:  # exactly an integer: 1.0 and True are not versions
        raise ValueError(
            f"its 'schema_version' is {version!r} ({json_type(version)}); a report has an integer from 1 to "
            f"{SCHEMA_VERSION} there. Write it again with CollapseReport or `collapse-guard demo`."
        )
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"it has schema_version {version!r}; this collapse_guard reads versions up to {SCHEMA_VERSION}: "
            "upgrade collapse_guard to render it."
        )
    depth = nesting_depth(record)
    if depth > MAX_DEPTH:
        raise ValueError(f"it nests {depth} levels deep; a report nests at most {MAX_DEPTH}.")
    check_layout(record)


# -- one section per source of data ---------------------------------------------------------------------------
def ratio_section(monitor: Any) -> Optional[dict]:
    """The real-fraction history of a ``RatioMonitor`` (``None`` without one), with each source's share: its
    ``summary()``."""
    return None if monitor is None else monitor.summary()


def indicator_section(check: Any) -> Optional[dict]:
    """The indicators of every check of a ``HeldOutRealCheck`` (``None`` without one): its ``summary()``."""
    return None if check is None else check.summary()


def source_indicator_section(history: Optional[Sequence[Mapping[str, Any]]], every_n_epochs: Any = None
                             ) -> Optional[dict]:
    """The values of every check of a ``SourceCheck`` (``collapse/source/<indicator>/<source>``), in the layout of
    :func:`indicator_section`'s: ``None`` without a ``SourceCheck`` (``history`` ``None``).

    Args:
        history: one mapping per check: ``epoch``, ``global_step`` and the values.
        every_n_epochs: the check's interval.

    Returns:
        ``{"every_n_epochs", "keys" (in first-logged order), "history"}``, or ``None``.

    Example::

        source_indicator_section([{"epoch": 0, "global_step": 8, "collapse/source/acc/gen1": 0.9}], 1)["keys"]
    """
    if history is None:
        return None
    rows = [dict(row) for row in history]
    keys = list(dict.fromkeys(k for row in rows for k in row if k not in ("epoch", "global_step")))
    return {"every_n_epochs": every_n_epochs, "keys": keys, "history": rows}


def _renamed(record: Mapping[str, Any], names: Mapping[str, str]) -> dict:
    return {names.get(k, k): v for k, v in record.items()}


def guard_section(guard: Any) -> dict:
    """A ``CollapseGuard``'s ``summary()``: state, settings, rules (with baselines and bounds) and events with their
    reasons, under the schema's key names."""
    summary = dict(guard.summary())
    summary["rules"] = [_renamed(r, RULE_NAMES) for r in summary["rules"]]
    summary["events"] = [_renamed(e, EVENT_NAMES) for e in summary["events"]]
    return summary


def provenance_section(datamodule: Any) -> Optional[dict]:
    """The provenance manifest of a set-up ``MixedDataModule``: its ``provenance()`` (``None`` for another
    datamodule, or before set-up).

    Every source: its name, real or synthetic, generator and parameters as the user gave them, generation (0 for
    real data), size, training pool (``None`` for a streaming source), samples drawn over the fit (all ranks) and
    share of all samples drawn.
    """
    provenance = getattr(datamodule, "provenance", None)
    return provenance() if callable(provenance) else None


def _strongest_state(guards: Sequence[dict]) -> Optional[str]:
    if not guards:
        return None
    return max((g["state"] for g in guards), key=lambda s: GUARD_STATES.index(s) if s in GUARD_STATES else -1)


def final_section(trainer: Any, ratio: Optional[dict], guards: Sequence[dict], provenance: Optional[dict]) -> dict:
    """Where the fit ended: epoch, real fraction (last epoch and cumulative), guard state, last logged values."""
    last = ratio["history"][-1] if ratio and ratio["history"] else {}
    cumulative = last.get("real_fraction_cumulative")
    if cumulative is None and provenance is not None:
        cumulative = provenance["real_share"]
    metrics = getattr(trainer, "callback_metrics", {}) or {}
    return {
        "epoch": last.get("epoch"),
        "global_step": getattr(trainer, "global_step", None),
        "real_fraction": last.get("real_fraction"),
        "real_fraction_cumulative": cumulative,
        "guard_state": _strongest_state(guards),
        "events": sum(len(g["events"]) for g in guards),
        "stopped_by_guard": any(g["state"] == "stop" for g in guards),
        "metrics": {k: float(v) for k, v in sorted(metrics.items()) if k.startswith("collapse/")},
    }


def build_record(
    trainer: Any,
    ratio_monitor: Any = None,
    check: Any = None,
    guards: Sequence[Any] = (),
    datamodule: Any = None,
    status: str = "completed",
    error: Optional[BaseException] = None,
    dirpath: Optional[str] = None,
    reference: Optional[dict] = None,
    source_indicators: Optional[dict] = None,
) -> dict:
    """The whole report record (see the module docstring for its layout), JSON-ready.

    Args:
        trainer: the Trainer (read: epoch, step, ``callback_metrics``, world size).
        ratio_monitor: the fit's ``RatioMonitor`` or ``None``.
        check: the fit's ``HeldOutRealCheck`` or ``None``.
        guards: the fit's ``CollapseGuard``\\ s.
        datamodule: the fit's datamodule (provenance when it is a set-up ``MixedDataModule``).
        status: ``"completed"``, ``"failed"`` or ``"interrupted"``.
        error: the exception that ended the fit, if any.
        dirpath: where the report is written, for the record.
        reference: a reference run as :func:`~collapse_guard.report.reference.load_reference` reads it, or ``None``.
        source_indicators: a ``SourceCheck``'s checks (:func:`source_indicator_section`), or ``None``.

    Returns:
        The record, JSON-ready (:func:`jsonable`): ``json.dumps(record, allow_nan=False)`` succeeds.

    Example::

        trainer.fit(model, datamodule=dm)
        record = build_record(trainer, ratio_monitor=ratio, check=check, guards=[guard], datamodule=dm)
        record["provenance"]["sources"][2]["share"]   # the first synthetic source's share of all samples
    """
    ratio = ratio_section(ratio_monitor)
    guard_records = [guard_section(g) for g in guards]
    provenance = provenance_section(datamodule)
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": REPORT_KIND,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "status": status,
        "error": f"{type(error).__name__}: {error}" if error is not None else None,
        "run": {
            "current_epoch": getattr(trainer, "current_epoch", None),
            "global_step": getattr(trainer, "global_step", None),
            "max_epochs": getattr(trainer, "max_epochs", None),
            "world_size": getattr(trainer, "world_size", 1),
            "should_stop": bool(getattr(trainer, "should_stop", False)),
            "dirpath": dirpath,
        },
        "ratio": ratio,
        "indicators": indicator_section(check),
        "guards": guard_records,
        "injections": [dict(i) for i in provenance["injections"]] if provenance is not None else [],
        "provenance": provenance,
        "final": final_section(trainer, ratio, guard_records, provenance),
        "reference": reference,
        "source_indicators": source_indicators,
    }
    from collapse_guard.report.checks import health  # it reads records: imported here, after this module

    record["final"]["guard_health"] = health(record)
    return jsonable(record)
