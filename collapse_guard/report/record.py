"""The report record: plain, JSON-ready data gathered from a fit's collapse_guard callbacks and data.

Nothing here imports Lightning or the callbacks: each ``*_section`` function reads one object (duck-typed) and
returns plain data, so the record is tested and rebuilt without a Trainer. :func:`build_record` puts the sections
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
        "state": "ok" | "warn" | "inject" | "stop", "injections": 0, "cooldown_left": 0,
        "config": {"action", "inject_fraction", "real_fraction_step", "max_injections", "cooldown", "strict",
                   "restore_best"},
        "rules": [{"name", "monitor", "mode", "threshold", "relative", "sigmas", "stderr", "baseline",
                   "baseline_checks", "min_change", "min_delta", "patience", "action", "non_finite",
                   "state": {"checks", "first_values", "best", "wait", "last_stderr"},   # RuleState.state_dict()
                   "baseline_value": float | null,                        # RuleState.baseline()
                   "bound": float | null}],                # RuleState.bound(last_stderr)
        "events": [{"epoch", "global_step", "rule", "monitor", "value", "threshold", "action", "reason"}]}],
      "injections": [{"epoch", "samples", "real_fraction_floor", "reserve_remaining", "reason"}],
      "provenance": null | <the provenance manifest, below>,
      "final": {"epoch", "global_step", "real_fraction", "real_fraction_cumulative", "guard_state",
                "events", "stopped_by_guard", "metrics": {"collapse/...": value}}
    }

The provenance manifest (also written alone as ``provenance.json``)::

    {
      "schema_version": 1, "kind": "collapse_guard.provenance",
      "seed": 0, "samples_total": 1920, "real_share": 0.53,
      "sources": [{"name", "kind": "real" | "synthetic", "generator", "generation", "params",
                   "size", "training_pool", "samples", "share", "heldout_copies"}],
      "heldout": {"real": 360, "synthetic": 60},
      "injections": [...], "contamination": {...}
    }

``samples`` is the number of training samples drawn from the source over the whole fit (all ranks), ``share`` its
part of ``samples_total`` (the shares sum to 1; ``null`` before any batch). Real sources have generation 0.
JSON has no NaN or infinity: non-finite numbers are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``
(read them back with :func:`as_float`).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import numbers
from typing import Any, Mapping, Optional, Sequence

from collapse_guard.data.streams import StreamDataset

SCHEMA_VERSION = 1
REPORT_KIND = "collapse_guard.report"
PROVENANCE_KIND = "collapse_guard.provenance"

#: tensors and arrays with at most this many elements are recorded as lists; larger ones by shape and dtype
MAX_ARRAY_ELEMENTS = 64

#: the guard states, mildest first (the report's guard state is the strongest of its guards')
GUARD_STATES = ("ok", "warn", "inject", "stop")

RULE_FIELDS = (
    "monitor", "mode", "threshold", "relative", "sigmas", "stderr", "baseline", "baseline_checks", "min_change",
    "min_delta", "patience", "action", "non_finite",
)
GUARD_CONFIG = ("action", "inject_fraction", "real_fraction_step", "max_injections", "cooldown", "strict",
                "restore_best")


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
    """A recorded number back as a float (``"nan"``, ``"inf"``, ``"-inf"`` and ``None`` included: ``None`` is NaN)."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# -- one section per source of data ---------------------------------------------------------------------------
def ratio_section(monitor: Any) -> Optional[dict]:
    """The real-fraction history of a ``RatioMonitor`` (``None`` without one), with each source's share."""
    if monitor is None:
        return None
    history, sources = [], []
    for row in getattr(monitor, "history", []):
        samples = dict(row.get("samples", {}))
        total = sum(samples.values())
        sources += [s for s in samples if s not in sources]
        history.append({**row, "shares": {s: (n / total if total else None) for s, n in samples.items()}})
    return {"sources": sources, "history": history}


def indicator_section(check: Any) -> Optional[dict]:
    """The indicators of every check of a ``HeldOutRealCheck`` (``None`` without one)."""
    if check is None:
        return None
    history = [dict(row) for row in getattr(check, "history", [])]
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in ("epoch", "global_step") and k not in keys]
    return {"every_n_epochs": getattr(check, "every_n_epochs", None), "keys": keys, "history": history}


def rule_record(state: Any) -> dict:
    """A ``RuleState`` as data: the rule's settings, its state, its baseline and the bound in force."""
    rule = state.rule
    record = {"name": getattr(rule, "label", rule.monitor)}
    record.update({f: getattr(rule, f, None) for f in RULE_FIELDS})
    record["stderr"] = getattr(rule, "stderr_key", None)  # the logged key a ``sigmas`` bound reads
    record["state"] = state.state_dict()
    record["baseline_value"] = state.baseline()
    record["bound"] = state.bound(getattr(state, "last_stderr", None))
    return record


def guard_section(guard: Any) -> dict:
    """A ``CollapseGuard``: state, settings, rules (with baselines and bounds) and events with their reasons."""
    return {
        "state": getattr(guard, "state", "ok"),
        "injections": getattr(guard, "injections", 0),
        "cooldown_left": getattr(guard, "cooldown_left", 0),
        "config": {k: getattr(guard, k, None) for k in GUARD_CONFIG},
        "rules": [rule_record(s) for s in getattr(guard, "states", [])],
        "events": [dataclasses.asdict(e) if dataclasses.is_dataclass(e) else dict(e) for e in guard.events],
    }


def _pool_sizes(mixer: Any) -> list[Optional[int]]:
    """Training pool size of each source: real pool, whole reserve, each synthetic source's training part."""
    pools = [getattr(mixer, "base_real_pool", None), getattr(mixer, "reserve_order", None)]
    pools += list(getattr(mixer, "synthetic_pools", []))
    sizes = [len(p) if p is not None else None for p in pools]
    return sizes + [None] * (len(mixer.sources) - len(sizes))


def provenance_section(datamodule: Any) -> Optional[dict]:
    """The provenance manifest of a set-up ``MixedDataModule`` (``None`` for another datamodule, or before set-up).

    Every source: its name, real or synthetic, generator and parameters as the user gave them, generation (0 for
    real data), size, training pool (``None`` for a streaming source), samples drawn over the fit (all ranks) and
    share of all samples drawn.
    """
    mixer = getattr(datamodule, "mixer", None)
    if mixer is None or not hasattr(mixer, "sources"):
        return None
    counts = [int(c) for c in mixer.total_counts.tolist()]
    total = sum(counts)
    contamination = getattr(datamodule, "contamination", None) or {}
    copies = contamination.get("sources", {}) if contamination.get("checked") else {}
    sources = []
    for source, n, pool in zip(mixer.sources, counts, _pool_sizes(mixer)):
        if isinstance(getattr(source, "dataset", None), StreamDataset):
            pool = None  # a stream has no fixed training pool: its slots take the stream's next samples
        entry = dict(source.provenance())
        entry.setdefault("kind", "real" if getattr(source, "is_real", False) else "synthetic")
        if entry["kind"] == "real" and entry.get("generation") is None:
            entry["generation"] = 0
        entry["training_pool"] = pool
        entry["samples"] = n
        entry["share"] = n / total if total else None
        entry["heldout_copies"] = copies.get(source.name, {}).get("duplicates") if copies else None
        sources.append(entry)
    real = sum(n for s, n in zip(sources, counts) if s["kind"] == "real")
    heldout_synthetic = getattr(datamodule, "heldout_synthetic", None)
    heldout_real = getattr(datamodule, "heldout_real", None)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": PROVENANCE_KIND,
        "seed": getattr(mixer, "seed", getattr(datamodule, "seed", None)),
        "samples_total": total,
        "real_share": real / total if total else None,
        "sources": sources,
        "heldout": {
            "real": len(heldout_real) if heldout_real is not None else None,
            "synthetic": len(heldout_synthetic) if heldout_synthetic is not None else 0,
        },
        "injections": [dict(i) for i in getattr(mixer, "injections", [])],
        "contamination": dict(contamination),
    }


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
    mixer = getattr(datamodule, "mixer", None)
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
        "injections": [dict(i) for i in getattr(mixer, "injections", [])] if mixer is not None else [],
        "provenance": provenance,
        "final": final_section(trainer, ratio, guard_records, provenance),
    }
    return jsonable(record)
