"""The guards' checks in a report record, as plain data: the bound each rule had in force at each check, the
per-check timeline (real fraction, monitored values and their bounds, what fired, what was done, the guard's word),
and the guard's health at the last check beside its last action.

A record's ``guards[i].checks`` is the guard's :class:`~collapse_guard.callbacks.check_log.CheckLog`; a record
written before it existed has none: then the bounds are those in force at the end (:func:`end_bounds`) and the
timeline and health are empty. Nothing here draws or formats.
"""
from __future__ import annotations

import math
from typing import Any, Optional

from collapse_guard.report.record import as_float

#: the guard's words (``CollapseGuard``'s progress-bar word at a check), mildest first: the health of several guards
#: is the worst of theirs
WORDS = ("ok", "ok (warned)", "ok (quarantined)", "ok (injected)", "ok (stopped)", "fired", "cooling", "warned",
         "quarantined", "injected", "stopped")


def _family_prefix(monitor: str) -> Optional[str]:
    return monitor[:-1] if monitor.endswith("/*") else None


def monitored_keys(record: dict) -> list[str]:
    """Every logged key a guard rule reads, in rule order: a rule's monitor, each member of a family rule
    (``prefix/*``) the record's indicators hold (or its checks judged).

    Args:
        record: a report record.

    Returns:
        The keys, each once (``[]`` without a guard).

    Example::

        monitored_keys(record)   # e.g. ['collapse/heldout_real/acc', 'collapse/heldout_real/class_recall/0']
    """
    keys: list[str] = []
    logged = list((record.get("indicators") or {}).get("keys", []))
    for guard in record.get("guards") or []:
        judged = [m for c in guard.get("checks", []) for r in c.get("rules", []) for m in _member_keys(guard, r)]
        for rule in guard.get("rules", []):
            prefix = _family_prefix(rule["monitor"])
            if prefix is None:
                found = [rule["monitor"]]
            else:
                found = [k for k in logged + judged if k.startswith(prefix) and "/" not in k[len(prefix):]]
            keys += found
    return list(dict.fromkeys(keys))


def _rule_monitor(guard: dict, name: str) -> Optional[str]:
    return next((r["monitor"] for r in guard.get("rules", []) if r["name"] == name), None)


def _member_keys(guard: dict, entry: dict) -> list[str]:
    """The logged key of each member of a family rule's check entry (``[]`` for a rule on one key)."""
    members = entry.get("members") or {}
    prefix = _family_prefix(_rule_monitor(guard, entry["rule"]) or "")
    if prefix is None and entry.get("member") is not None and isinstance(entry.get("monitor"), str):
        prefix = entry["monitor"][:len(entry["monitor"]) - len(entry["member"])]  # an older rule name
    return [prefix + name for name in members] if prefix is not None else []


def judged(guard: dict, entry: dict) -> list[tuple[str, dict]]:
    """``(key, {"value", "bound", "violated", "fired"})`` of what a rule's check entry judged: the one key, or each
    member of a family rule.

    Args:
        guard: a guard of the record (``record["guards"][i]``).
        entry: one rule's entry of one of its checks (``guard["checks"][j]["rules"][k]``).

    Returns:
        The pairs (``[]`` for an entry without a monitor).

    Example::

        [key for key, seen in judged(guard, entry) if seen.get("fired")]
    """
    members = entry.get("members") or {}
    if members:
        return list(zip(_member_keys(guard, entry), members.values()))
    monitor = entry.get("monitor")
    return [(monitor, entry)] if isinstance(monitor, str) else []


def bound_steps(record: dict) -> dict[str, list[dict]]:
    """``{key: [{"rule", "mode", "epoch": [...], "bound": [...], "value": [...], "violated": [...],
    "fired": [...], "action": [...]}]}``: per monitored key, each rule's bound in force at each of its checks (NaN
    while it warmed up), the value judged, whether it lay beyond the bound, whether the rule fired on it, and the
    action taken at that check. Empty for a record without checks.

    Args:
        record: a report record.

    Returns:
        The steps by key, one per rule that judged it, in guard and first-check order.

    Example::

        step = bound_steps(record)["collapse/heldout_real/acc"][0]
        list(zip(step["epoch"], step["bound"]))   # the bound the rule had in force at each check
    """
    out: dict[str, dict[tuple, dict]] = {}
    modes = rule_modes(record)
    for g, guard in enumerate(record.get("guards") or []):
        for check in guard.get("checks", []):
            for entry in check.get("rules", []):
                for key, seen in judged(guard, entry):
                    step = out.setdefault(key, {}).setdefault((g, entry["rule"]), {
                        "rule": entry["rule"], "mode": modes.get((g, entry["rule"])), "epoch": [], "bound": [],
                        "value": [], "violated": [], "fired": [], "action": []})
                    step["epoch"].append(check["epoch"])
                    step["bound"].append(as_float(seen.get("bound")))
                    step["value"].append(as_float(seen.get("value")))
                    step["violated"].append(seen.get("violated") is True)
                    step["fired"].append(seen.get("fired") is True)
                    step["action"].append(check.get("action") if isinstance(check.get("action"), str) else "ok")
    return {key: list(rules.values()) for key, rules in out.items()}


def end_bounds(record: dict) -> dict[str, list[dict]]:
    """``{monitor: [{"rule", "bound", "mode"}]}``: the bound each rule had in force at the end of the fit (what a
    record without checks holds).

    Args:
        record: a report record.

    Returns:
        The bounds by monitor; a rule without a finite bound is left out.

    Example::

        [b["bound"] for b in end_bounds(record).get("collapse/heldout_real/acc", [])]
    """
    bounds: dict[str, list[dict]] = {}
    for guard in record.get("guards") or []:
        for r in guard.get("rules", []):
            bound = as_float(r.get("bound"))
            if math.isfinite(bound):
                bounds.setdefault(r["monitor"], []).append({"rule": r["name"], "bound": bound, "mode": r["mode"]})
    return bounds


def _ratio_at(record: dict) -> dict[Any, Any]:
    return {r["epoch"]: r.get("real_fraction") for r in (record.get("ratio") or {}).get("history", [])}


def rule_modes(record: dict) -> dict[tuple[int, str], str]:
    """The mode of every rule, by guard and rule name.

    Args:
        record: a report record.

    Returns:
        ``{(guard index, rule name): "max" | "min"}`` (``{}`` without a guard).

    Example::

        rule_modes(record)[(0, "acc_floor")]   # 'max': healthy while the value stays above its bound
    """
    return {(g, r["name"]): r["mode"] for g, guard in enumerate(record.get("guards") or [])
            for r in guard.get("rules", [])}


def timeline_columns(record: dict) -> list[tuple[int, str, str]]:
    """The rule columns of the timeline: ``(guard, rule name, monitor)`` of every rule with a check.

    Args:
        record: a report record.

    Returns:
        The columns, in guard then rule order (``[]`` for a record without checks).

    Example::

        [name for _, name, _ in timeline_columns(record)]   # e.g. ['acc_floor', 'worst_class_recall']
    """
    columns: list[tuple[int, str, str]] = []
    for g, guard in enumerate(record.get("guards") or []):
        seen = {e["rule"] for c in guard.get("checks", []) for e in c.get("rules", [])}
        columns += [(g, r["name"], r["monitor"]) for r in guard.get("rules", []) if r["name"] in seen]
    return columns


def timeline(record: dict) -> list[dict]:
    """One row per check (the epochs at which any guard judged a rule or acted), in epoch order: ``{"epoch",
    "real_fraction", "rules": {(guard, rule name): entry}, "fired": [names], "action", "word", "reference":
    {monitored key: the reference run's value at that epoch}}``; ``action`` and ``word`` of several guards are
    the strongest of theirs. Empty for a record without checks.

    Args:
        record: a report record.

    Returns:
        The rows (``action`` ``"—"`` where none was taken).

    Example::

        [(row["epoch"], row["action"], row["word"]) for row in timeline(record)]
    """
    rows: dict[Any, dict] = {}
    for g, guard in enumerate(record.get("guards") or []):
        for check in guard.get("checks", []):
            row = rows.setdefault(check["epoch"], {"epoch": check["epoch"], "rules": {}, "fired": [],
                                                   "actions": [], "words": []})
            for entry in check.get("rules", []):
                row["rules"][(g, entry["rule"])] = entry
                if entry.get("fired") is True:
                    members = [n for n, m in (entry.get("members") or {}).items() if m.get("fired") is True]
                    row["fired"] += [f"{entry['rule']} {n}" for n in members] or [entry["rule"]]
            row["actions"].append(check.get("action"))
            row["words"].append(check.get("word"))
    ratio = _ratio_at(record)
    reference = reference_values(record)
    out = []
    for epoch in sorted(rows, key=as_float):
        row = rows[epoch]
        actions = [a for a in row.pop("actions") if isinstance(a, str) and a != "ok"]
        row["action"] = ", ".join(dict.fromkeys(actions)) or "—"
        row["word"] = worst(row.pop("words"))
        row["real_fraction"] = ratio.get(epoch)
        row["reference"] = {key: values.get(epoch) for key, values in reference.items()}
        out.append(row)
    return out


def reference_values(record: dict) -> dict[str, dict]:
    """``{monitored key: {epoch: value}}`` of the reference run embedded in ``record`` (``{}`` without one).

    Args:
        record: a report record.

    Returns:
        The reference's values of each monitored key it logged, by epoch.

    Example::

        reference_values(record).get("collapse/heldout_real/acc", {}).get(3)
    """
    indicators = (record.get("reference") or {}).get("indicators") or {}
    history = indicators.get("history") or []
    return {key: {r["epoch"]: r[key] for r in history if key in r} for key in monitored_keys(record)
            if any(key in r for r in history)}


def worst(words: list) -> Optional[str]:
    """The strongest of the guards' words (by :data:`WORDS`; an unknown word counts as the strongest).

    Args:
        words: the words; anything not a string is passed over.

    Returns:
        The strongest word, or ``None`` without one.

    Example::

        worst(["ok", "ok (injected)", None])   # 'ok (injected)'
    """
    words = [w for w in words if isinstance(w, str)]
    if not words:
        return None
    return max(words, key=lambda w: WORDS.index(w) if w in WORDS else len(WORDS))


def health(record: dict) -> Optional[str]:
    """The guard's word at its last check (``"ok (injected)"``: it injected, and the indicators are back within
    their bounds), the worst of several guards'; ``None`` without checks. ``final.guard_state`` is the last action
    taken, sticky; this is where the indicators stood at the end.

    Args:
        record: a report record.

    Returns:
        A word of :data:`WORDS` (or one a newer guard wrote), or ``None``.

    Example::

        health(record)   # 'ok (injected)' where final.guard_state is 'inject'
    """
    last = [guard["checks"][-1].get("word") for guard in record.get("guards") or [] if guard.get("checks")]
    return worst(last)
