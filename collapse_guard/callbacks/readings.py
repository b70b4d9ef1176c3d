"""What a guard reads at a check: the monitored values of its rules, fresh or not, and the same on every rank."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from collapse_guard._compat import Trainer, rank_zero_warn
from collapse_guard.callbacks._base import CollapseMetricsProducer
from collapse_guard.callbacks.rule_state import natural_order
from collapse_guard.callbacks.rules import FAMILY, Rule

#: what a monitored metric was at a check: measured now, left over from an earlier check, or not logged
FRESH, STALE, MISSING = 0.0, 1.0, 2.0


def read_monitors(trainer: Trainer, rules: Sequence[Rule]) -> tuple[list[str], list[tuple[float, float]]]:
    """The keys ``rules`` read at this epoch, and ``(status, value)`` of each (local; no communication).

    A metric of a :class:`CollapseMetricsProducer` (``HeldOutRealCheck``, ``RatioMonitor``) is fresh only at
    the epochs it was logged, so a check every few epochs is never judged twice on a stale value; any other
    logged metric (the module's own) is fresh whenever it is in ``trainer.callback_metrics``. A family rule
    (``prefix/*``) reads every member logged now, each with its standard error, and the family's own status.

    Args:
        trainer: the Trainer at the end of a training epoch.
        rules: the guard's rules.

    Returns:
        ``(keys, readings)``: every key read, and its ``(status, value)``: status :data:`FRESH`, :data:`STALE` or
        :data:`MISSING`, value NaN unless fresh.

    Example::

        keys, readings = read_monitors(trainer, guard.rules)
    """
    producers = [cb for cb in trainer.callbacks if isinstance(cb, CollapseMetricsProducer)]
    keys: list[str] = []
    for rule in rules:
        if rule.is_family:
            for name in _members(trainer, producers, rule):
                keys += [k for k in (rule.member_key(name), rule.member_stderr_key(name)) if k is not None]
        keys += [k for k in (rule.monitor, rule.stderr_key) if k is not None]
    keys = list(dict.fromkeys(keys))
    return keys, [_read_key(trainer, producers, key) for key in keys]


def _members(trainer: Trainer, producers: list, rule: Rule) -> list[str]:
    """The members of a family rule logged at this epoch (by its producer, or in ``callback_metrics``)."""
    producer = next((p for p in producers if p.logs(rule.monitor)), None)
    logged = producer.keys_logged_at(trainer.current_epoch) if producer is not None else trainer.callback_metrics
    return sorted({m for m in map(rule.member_of, logged) if m is not None}, key=natural_order)


def _read_key(trainer: Trainer, producers: list, key: str) -> tuple[float, float]:
    metrics, epoch = trainer.callback_metrics, trainer.current_epoch
    producer = next((p for p in producers if p.logs(key)), None)
    if key.endswith(FAMILY):  # the family's status: fresh when a member was logged now
        prefix = key[:-1]
        if producer is not None:
            if producer.keys_logged_at(epoch, prefix):
                return (FRESH, math.nan)
            return (MISSING if producer.ran_at(epoch) else STALE, math.nan)
        return (FRESH if any(k.startswith(prefix) for k in metrics) else MISSING, math.nan)
    if producer is not None and producer.logged_epoch(key) != epoch:
        # it measured this epoch, but not this key: a misnamed monitor; else a check that did not run
        return (MISSING if producer.ran_at(epoch) else STALE, math.nan)
    if key not in metrics:
        return (MISSING, math.nan)
    return (FRESH, float(torch.as_tensor(metrics[key])))


def agree_across_ranks(trainer: Trainer, keys: list[str], readings: list[tuple[float, ...]],
                       warned: set) -> list[tuple[float, ...]]:
    """Rank 0's readings on every rank, with a warning (once per key, remembered in ``warned``) for a metric whose
    value differs between ranks.

    Args:
        trainer: the Trainer (every rank calls this together).
        keys: the keys read, as :func:`read_monitors` returns them.
        readings: this rank's ``(status, value)`` of each key.
        warned: the keys already warned about; updated.

    Returns:
        Rank 0's readings (this rank's own on one process).

    Example::

        readings = agree_across_ranks(trainer, keys, readings, warned=set())
    """
    if trainer.world_size <= 1 or not readings:
        return readings
    local = torch.tensor(readings, dtype=torch.float64, device=trainer.strategy.root_device)
    width = len(readings[0])
    gathered = trainer.strategy.all_gather(local).cpu().reshape(trainer.world_size, len(readings), width)
    first = gathered[0]
    same = (gathered == first) | (torch.isnan(gathered) & torch.isnan(first))
    for i in torch.nonzero(~same.all(dim=2).all(dim=0)).flatten().tolist():
        key = keys[i]
        if key not in warned:
            warned.add(key)
            values = ", ".join(f"rank {r}: {gathered[r, i, 1].item():.6g}" for r in range(trainer.world_size))
            rank_zero_warn(
                f"CollapseGuard: {key} differs between ranks ({values}); every rank judges rank 0's value. Log "
                "it with `sync_dist=True` (or as a synced torchmetrics Metric) so the guard judges all the data."
            )
    return [tuple(float(x) for x in row) for row in first.tolist()]


__all__ = ["FRESH", "MISSING", "STALE", "agree_across_ranks", "read_monitors"]
