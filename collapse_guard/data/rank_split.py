"""The held-out check's reading of large datasets without bulk access, split across the ranks of a Trainer.

At set-up the held-out check compares held-out real data with the real training data and the reserve by content
(:func:`~collapse_guard.data.checks.verify_holdout`). A large dataset whose samples come only from ``__getitem__``
(no tensors, arrays or Arrow columns to hash in bulk, see :mod:`collapse_guard.data.bulk`) is read once, stacked into
columns and hashed in bulk (:func:`~collapse_guard.data.digests.stacked_digests`); reading it is most of the cost.
Under several processes every rank would read all of it. :func:`read_across_ranks` has each rank read one contiguous
share of such a dataset, gathers the stacked columns (``strategy.all_gather``, as raw bytes) and leaves the whole in
the digest cache (:mod:`collapse_guard.data.digest_cache`) under the key the check looks up, so the check that
follows finds it on every rank. Where the ranks do not agree (a share that cannot be stacked, samples of another
structure, a read that fails), nothing is cached and the check reads the dataset itself, as on one process, and
raises there what is wrong.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from collapse_guard.data import digest_cache
from collapse_guard.data.bulk import unwrap_subsets
from collapse_guard.data.digests import RowDigests, _is_hf, _verified, has_bulk_access, opaque_fingerprint
from collapse_guard.data.stacked import STACK_BUDGET_BYTES, stack_rows


def share(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of ``rank``'s contiguous share of ``n`` rows (the first ``n % world_size`` ranks get one
    more).

    Example::

        [share(10, 3, r) for r in range(3)]  # [(0, 4), (4, 7), (7, 10)]
    """
    size, extra = divmod(n, world_size)
    start = rank * size + min(rank, extra)
    return start, start + size + (rank < extra)


def split_bases(datasets: Sequence[Optional[Dataset]]) -> list:
    """The distinct base datasets (under their ``Subset`` s) of ``datasets`` that the check would read whole, sample
    by sample: not Hugging Face (read in chunks), without bulk access, of at least ``CACHE_MIN_ROWS`` rows."""
    bases: dict[int, Any] = {}
    for dataset in datasets:
        if dataset is None or not len(dataset):
            continue
        base, _ = unwrap_subsets(dataset, None)
        if id(base) in bases or len(base) < digest_cache.CACHE_MIN_ROWS or _is_hf(base) or has_bulk_access(base):
            continue
        bases[id(base)] = base
    return list(bases.values())


def _as_bytes(column: Any) -> Tensor:
    """A column's rows as a ``(rows, bytes per row)`` uint8 tensor (a view where it can be)."""
    if isinstance(column, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(column).reshape(len(column), -1).view(np.uint8))
    return column.contiguous().reshape(len(column), -1).view(torch.uint8)


def _from_bytes(raw: Tensor, like: Any) -> Any:
    """The inverse of :func:`_as_bytes`: rows of ``like``'s dtype, type and row shape."""
    if isinstance(like, np.ndarray):
        return raw.numpy().view(like.dtype).reshape(len(raw), *like.shape[1:])
    return raw.view(like.dtype).reshape(len(raw), *like.shape[1:])


def _gather(strategy: Any, part: Tensor, counts: Sequence[int]) -> Tensor:
    """Every rank's ``part`` (its ``counts[rank]`` rows), in rank order, on every rank."""
    padded = torch.zeros((max(counts), part.shape[1]), dtype=torch.uint8)
    padded[:len(part)] = part
    gathered = strategy.all_gather(padded.to(strategy.root_device)).cpu()
    return torch.cat([gathered[r, :c] for r, c in enumerate(counts)])


def _layout(found: Optional[tuple], n: int) -> Optional[tuple]:
    """What every rank's share must agree on: the signature and each column's type, dtype and row shape."""
    if found is None:
        return None
    columns, signature, _ = found
    if sum(c[0].nbytes if isinstance(c, np.ndarray) else c[0].element_size() * c[0].numel() for c in columns) * n \
            > STACK_BUDGET_BYTES:
        return None
    return signature, tuple((type(c).__name__, str(c.dtype), tuple(c.shape[1:])) for c in columns)


def read_across_ranks(trainer: Any, datasets: Sequence[Optional[Dataset]]) -> int:
    """Read each large dataset of ``datasets`` without bulk access a share per rank and cache the whole's digests.

    A collective: every rank calls it with the same datasets, after the set-up checks that may fail on one rank
    (:func:`~collapse_guard._collective.run_collectively`). One process, or nothing to split: returns at once.

    Args:
        trainer: the Trainer (``world_size``, ``global_rank``, ``strategy``).
        datasets: the datasets the held-out check will hash (held-out real, real training data, the reserve), or
            ``None`` for one that is absent.

    Returns:
        The number of datasets whose digests were read across the ranks and cached.

    Example::

        read_across_ranks(trainer, [heldout_real, real_dataset, reserve])  # then verify_holdout finds them cached
    """
    world, rank = int(trainer.world_size), int(trainer.global_rank)
    strategy = getattr(trainer, "strategy", None)
    if world < 2 or strategy is None:
        return 0
    done = 0
    for base in split_bases(datasets):
        key = ("stacked", *opaque_fingerprint(base))
        n = len(base)
        start, stop = share(n, world, rank)
        try:
            found = stack_rows(lambda i: base[start + i], stop - start) if key not in digest_cache._CACHE else None
        except Exception:  # noqa: BLE001 - the check reads the dataset itself and raises it there, on one rank
            found = None
        layout = _layout(found, n)
        first = strategy.broadcast(layout, src=0)
        if not strategy.reduce_boolean_decision(layout is not None and layout == first, all=True):
            continue
        columns, signature, _ = found  # type: ignore[misc]
        counts = [b - a for a, b in (share(n, world, r) for r in range(world))]
        whole = RowDigests([_from_bytes(_gather(strategy, _as_bytes(c), counts), c) for c in columns], None, signature)
        if _verified(whole, base):
            digest_cache.cached(key, "stacked across ranks", lambda: whole)
            done += 1
    return done


__all__ = ["read_across_ranks", "share", "split_bases"]
