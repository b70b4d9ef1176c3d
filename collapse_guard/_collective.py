"""Local work run on every rank of a Trainer that fails on every rank together, naming the rank that failed."""
from __future__ import annotations

from typing import Any, Callable, Optional, TypeVar

import torch

T = TypeVar("T")


def run_collectively(trainer: Any, who: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` (local work, no collectives) on every rank and fail on every rank if it fails on any.

    Under several processes an exception on one rank would leave the others waiting in the next collective
    (a reduce, a metric sync) until the process group times out. Here every rank reports whether ``fn`` raised
    (``strategy.reduce_boolean_decision``) before going on; if one did, the others raise a ``RuntimeError`` naming
    that rank and its error (``strategy.broadcast``), so every process ends at once with the reason.

    Args:
        trainer: the Trainer whose strategy connects the ranks.
        who: what ran, for the message (e.g. ``"CollapseGuard"``).
        fn: the local work.

    Returns:
        ``fn()``'s result.

    Raises:
        Exception: ``fn``'s own exception on the rank where it was raised.
        RuntimeError: on the other ranks, naming the rank that failed and its error.

    Example::

        values = run_collectively(trainer, "MyCheck", lambda: local_measurement(pl_module))
        synced = trainer.strategy.reduce(values, reduce_op="sum")  # every rank gets here, or every rank raised
    """
    error: Optional[BaseException] = None
    result = None
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001 - re-raised below, after every rank knows
        error = err
    strategy = getattr(trainer, "strategy", None)  # none: a stand-in for a Trainer, no process group to agree in
    if trainer.world_size > 1 and strategy is not None:
        if strategy.reduce_boolean_decision(error is not None, all=False):
            mine = trainer.global_rank if error is not None else trainer.world_size
            first = int(strategy.reduce(torch.tensor(mine, device=strategy.root_device), reduce_op="min"))
            message = strategy.broadcast(f"{type(error).__name__}: {error}" if error is not None else "", src=first)
            if error is None:
                raise RuntimeError(f"{who} failed on rank {first}, so every rank stops: {message}")
    if error is not None:
        raise error
    return result  # type: ignore[return-value]
