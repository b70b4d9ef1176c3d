"""Synthetic copies of held-out real data, found as the first training epoch reads an opaque source's samples.

A large synthetic source without bulk access (a ``Dataset`` whose ``__getitem__`` is all there is, see
:mod:`collapse_guard.data.bulk`) is not read at set-up: reading every row one by one costs most of a DataLoader
pass. Its digests are taken instead where the first training epoch reads its samples anyway: the training
``DataLoader`` iterates a :class:`ScanningDataset`, which hashes every sample of such a source it returns (in the
DataLoader's worker processes when there are any) and looks the digest up among the held-out real ones. A batch of
samples made of arrays of one shape is first stacked and fingerprinted in bulk against the held-out rows'
fingerprints (:class:`~collapse_guard.data.digests.RowDigests`): only the few candidates are hashed. What it
finds goes back to the main process (directly, or through a pipe from the workers) and into the contamination
report; at the end of the first epoch a warning names each source with copies and their counts.

Under several processes every rank scans the samples it reads (its share of the epoch); at the end of the first epoch
the ranks join what they found (``all_gather_object``), so every rank's record counts the whole epoch and rank 0
warns once.
With DataLoader workers the scan runs only under a Trainer: the main process drains what the workers send at every
training batch (``MixedDataModule.on_after_batch_transfer``); a loader iterated by hand would leave the pipe full.

:class:`FirstEpochCheck` is what every check run this way shares (when the first epoch ends, the flag that stops the
workers' checks); :class:`ScanningDataset` reads a batch through several of them: this scan and the non-finite
check of :class:`~collapse_guard.data.finite.FiniteScan`.
"""
from __future__ import annotations

import bisect
import multiprocessing
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from collapse_guard.data.canonical import _encode, sample_digest
from collapse_guard.data.digests import RowDigests
from collapse_guard.data.stacked import _column

EXAMPLES = 5  # (sample, held-out sample) pairs kept per source


def deferred_record(size: int) -> dict:
    """The contamination record of a source scanned at the first epoch, before that epoch (counts unknown).

    Args:
        size: the source's samples.

    Returns:
        ``{"size", "deferred": True, "scanned": 0, "duplicates": None, "in_training": None,
        "heldout_real_matched": None, "examples": []}``; :class:`FirstEpochScan` fills in the counts.

    Example::

        deferred_record(10**6)["duplicates"]  # None until the first epoch has read samples
    """
    return {"size": size, "deferred": True, "scanned": 0, "duplicates": None, "in_training": None,
            "heldout_real_matched": None, "examples": []}


class FirstEpochCheck:
    """What every check run as the first training epoch reads samples shares: when it stops.

    A subclass's :meth:`check` is called with every batch of samples a :class:`ScanningDataset` reads (in the
    DataLoader workers when there are any); the main process calls :meth:`after_batch` at every training batch and
    :meth:`finish` at the end of the first epoch (or of a fit that stops within it), which stops the checks of the
    first epoch, in the workers too (a shared flag).
    """

    def __init__(self) -> None:
        self.active = True
        self.batches = 0
        self.epoch: Optional[int] = None
        self._flag: Any = None

    def reading(self) -> bool:
        """Whether the first epoch's checks still run (``False`` once :meth:`finish` ran, in a worker too)."""
        return self.active and (self._flag is None or bool(self._flag.value))

    def check(self, indices: Sequence[int], samples: Sequence[Any]) -> None:
        """Check ``samples``, read at training-set ``indices``."""
        raise NotImplementedError

    def prepare(self, num_workers: int) -> None:
        """Ready the check for a training loader with ``num_workers`` workers (the flag they read)."""
        if num_workers > 0 and self._flag is None:
            self._flag = multiprocessing.RawValue("b", 1)

    def wrap(self, dataset: Dataset, num_workers: int) -> "ScanningDataset":
        """``dataset`` read through this check, for a training loader with ``num_workers`` workers."""
        return scanned(dataset, [self], num_workers)

    def after_batch(self, epoch: int, batches_per_epoch: Any,
                    gather: Optional[Callable[[Any], Optional[list]]] = None) -> None:
        """A training batch reached the model: :meth:`drain`; at the end of the first epoch, :meth:`finish`.

        Args:
            epoch: the Trainer's current epoch.
            batches_per_epoch: the Trainer's training batches an epoch (``inf`` when unknown).
            gather: ``obj -> [every rank's obj]`` under several processes (a collective: every rank reaches the end
                of the first epoch at the same batch), ``None`` in one process: called by :meth:`finish` only, to
                combine what the ranks found.
        """
        if not self.active:
            return
        if self.epoch is None:
            self.epoch = epoch
        if epoch != self.epoch:
            self.finish(gather)
            return
        self.batches += 1
        self.drain()
        if self.batches >= batches_per_epoch:
            self.finish(gather)

    def drain(self) -> None:
        """Take in what the workers sent (nothing here)."""

    def finish(self, gather: Optional[Callable[[Any], Optional[list]]] = None) -> None:
        """Stop the first epoch's checks (workers too), after a last :meth:`drain`; :meth:`combine` what every rank
        found when given ``gather`` (see :meth:`after_batch`; never from a fit that stopped early, where the ranks
        are not in step); then :meth:`report`."""
        if not self.active:
            return
        self.drain()
        self.active = False
        if self._flag is not None:
            self._flag.value = 0
        if gather is not None:
            self.combine(gather)
        self.report()

    def combine(self, gather: Callable[[Any], Optional[list]]) -> None:
        """Take in what the other ranks found (nothing here; ``gather`` returns ``None`` in one process)."""

    def report(self) -> None:
        """Say what the first epoch found (nothing here)."""


class FirstEpochScan(FirstEpochCheck):
    """Copies of held-out real samples among the deferred sources' samples, as the first training epoch reads them.

    Args:
        heldout: digest -> first held-out real index with it.
        heldout_rows: the held-out rows as :class:`~collapse_guard.data.digests.RowDigests` (their fingerprints
            screen whole batches), or ``None`` (every sample of a deferred source is hashed).
        sources: ``(name, start, stop)`` of every deferred source's indices in the training set.
        records: name -> the source's contamination record (updated in place, see :func:`deferred_record`).
        key: what of a sample to hash (``None``: all of it), as at set-up.
        rank: this process's rank (named in the warning when ``world_size > 1``).
        world_size: the number of processes.
    """

    def __init__(self, heldout: Mapping[bytes, int], sources: Sequence[tuple[str, int, int]],
                 records: Mapping[str, dict], key: Optional[Callable[[Any], Any]] = None,
                 rank: int = 0, world_size: int = 1, heldout_rows: Optional[RowDigests] = None) -> None:
        super().__init__()
        self.heldout = dict(heldout)
        self.signature = heldout_rows.signature if heldout_rows is not None else None
        self.fingerprints = np.unique(heldout_rows.fingerprints()) if heldout_rows is not None else None
        self.names = [s[0] for s in sources]
        self.starts = [s[1] for s in sources]
        self.stops = [s[2] for s in sources]
        self.records = records
        self.key, self.rank, self.world_size = key, rank, world_size
        self.reads = [0] * len(sources)
        self.hits: list[dict[int, int]] = [{} for _ in sources]
        self.combined = False  # True once every rank's finds are joined (:meth:`combine`)
        self._queue: Any = None

    # -- the reading side (main process or DataLoader worker) ---------------------------------------------------
    def source_of(self, index: int) -> int:
        """The position of the deferred source holding training-set ``index``, or -1."""
        s = bisect.bisect_right(self.starts, index) - 1
        return s if s >= 0 and index < self.stops[s] else -1

    def check(self, indices: Sequence[int], samples: Sequence[Any]) -> None:
        """Hash the samples of deferred sources among ``samples`` (read at ``indices``), record or send the finds."""
        if not self.reading():
            return
        reads = [0] * len(self.names)
        hits = []
        mine = [(s, int(index), sample) for index, sample in zip(indices, samples)
                for s in [self.source_of(int(index))] if s >= 0]
        parts = [sample if self.key is None else self.key(sample) for _, _, sample in mine]
        maybe = self._candidates(parts)
        for k, (s, index, _) in enumerate(mine):
            reads[s] += 1
            if maybe is not None and not maybe[k]:
                continue
            held = self.heldout.get(sample_digest(parts[k]))
            if held is not None:
                hits.append((s, index - self.starts[s], held))
        if not any(reads):
            return
        if self._queue is not None and get_worker_info() is not None:
            self._queue.put((reads, hits))  # a synchronous write: in the pipe before the batch leaves the worker
        else:
            self._merge(reads, hits)

    def _candidates(self, parts: list) -> Optional[np.ndarray]:
        """Which of ``parts`` may be held-out copies, screened in bulk by row fingerprints; ``None`` when they are
        not arrays of one structure (each is then hashed)."""
        if self.fingerprints is None or not parts:
            return None
        columns = _batch_columns(parts)
        if columns is None:
            return None
        sig: list[str] = []
        _encode(parts[0], sig, [])
        if "".join(sig) != self.signature:
            return np.zeros(len(parts), dtype=bool)  # another structure: no copy of a held-out sample
        found = RowDigests(columns, None, self.signature).fingerprints()
        at = np.minimum(np.searchsorted(self.fingerprints, found), len(self.fingerprints) - 1)
        return self.fingerprints[at] == found  # the held-out fingerprints are sorted: no sort per batch

    # -- the main-process side ----------------------------------------------------------------------------------
    def prepare(self, num_workers: int) -> None:
        """Ready the scan for a training loader with ``num_workers`` workers (their flag and the pipe they send on)."""
        super().prepare(num_workers)
        if num_workers > 0 and self._queue is None:
            self._queue = multiprocessing.SimpleQueue()

    def _merge(self, reads: Sequence[int], hits: Sequence[tuple[int, int, int]]) -> None:
        for s, n in enumerate(reads):
            self.reads[s] += n
        for s, position, held in hits:
            self.hits[s].setdefault(position, held)
        for s, name in enumerate(self.names):
            found = self.hits[s]
            record = self.records[name]
            record.update(scanned=self.reads[s], duplicates=len(found), in_training=len(found),
                          heldout_real_matched=len(set(found.values())),
                          examples=[[p, h] for p, h in sorted(found.items())[:EXAMPLES]])

    def drain(self) -> None:
        """Merge what the workers sent."""
        while self._queue is not None and not self._queue.empty():
            self._merge(*self._queue.get())

    def combine(self, gather: Callable[[Any], list]) -> None:
        """Every rank's reads summed and copies joined, so each rank's record (and the report rank 0 writes) counts
        the whole first epoch, and one rank warns for all."""
        parts = gather((self.reads, self.hits))
        if parts is None:  # one process: nothing to join
            return
        self.reads = [0] * len(self.names)
        self.hits = [{} for _ in self.names]
        for reads, hits in parts:
            self._merge(reads, [(s, position, held) for s, found in enumerate(hits) for position, held in found.items()])
        self.combined = True

    def report(self) -> None:
        """Warn about the sources with copies (at :meth:`finish`; after :meth:`combine`, on rank 0 only)."""
        dirty = {n: len(h) for n, h in zip(self.names, self.hits) if h}
        if not dirty or (self.combined and self.rank != 0):
            return
        where = ("" if self.world_size == 1 else f" (all {self.world_size} ranks)" if self.combined
                 else f" on rank {self.rank}")
        read = {n: r for n, r, h in zip(self.names, self.reads, self.hits) if h}
        warnings.warn(
            f"first training epoch{where}: synthetic samples identical to held-out real samples: {dirty} (samples "
            f"per source, among {read} read; "
            f"{sum(len(set(h.values())) for h in self.hits)} held-out real samples have a copy). These sources are "
            "too large to read at set-up without bulk access, so they were checked as the first epoch read them. A "
            "generator that memorised held-out data makes every held-out check look better than it is: remove these "
            "samples from the synthetic sources or hold out other real data. Details in "
            "`MixedDataModule.contamination`.", UserWarning, stacklevel=2)

    def __getstate__(self) -> dict:  # what a worker needs: no found samples, no records
        state = dict(self.__dict__)
        state.update(records={}, hits=[{} for _ in self.names])
        return state


def leaf_lists(parts: list) -> Optional[list[list]]:
    """The items of ``parts`` by position (in digest order: a dict's by sorted key) when every part is one array, a
    tuple / list or a dict, all of one structure (type, length, keys); else ``None``.

    Example::

        leaf_lists([(x0, 1), (x1, 0)])  # [[x0, x1], [1, 0]]
    """
    first = parts[0]
    if isinstance(first, (Tensor, np.ndarray)):
        return [parts]
    if isinstance(first, (tuple, list)):
        if set(map(type, parts)) != {type(first)} or set(map(len, parts)) != {len(first)}:
            return None
        return [list(c) for c in zip(*parts)]
    if isinstance(first, dict):
        keys = sorted(first, key=str)
        if set(map(type, parts)) != {dict} or set(map(len, parts)) != {len(keys)}:
            return None
        try:
            return [[p[k] for p in parts] for k in keys]
        except KeyError:
            return None
    return None


def _batch_columns(parts: list) -> Optional[list]:
    """The leaves of ``parts`` stacked into columns (in digest order) when every part is one array, a tuple / list of
    arrays and plain numbers or a dict of them, of one structure, type, dtype and shape a leaf; else ``None``."""
    leaves = leaf_lists(parts)
    if leaves is None:
        return None
    columns = []
    for leaf in leaves:
        kinds = {type(x) for x in leaf}
        kind = kinds.pop() if len(kinds) == 1 else None
        if kind not in (int, float, bool) and (kind is None or not issubclass(kind, (Tensor, np.ndarray))
                                               or len({x.dtype for x in leaf}) != 1):
            return None
        try:
            column = _column(leaf)  # unequal shapes do not stack
        except (RuntimeError, ValueError):
            return None
        if column is None:
            return None
        columns.append(column)
    return columns


class ScanningDataset(Dataset):
    """A training set read through :class:`FirstEpochCheck` s: the same samples, checked on the way.

    Args:
        dataset: the training set.
        scans: the checks; each one's ``check(indices, samples)`` sees every batch read (it may raise).
    """

    def __init__(self, dataset: Dataset, *scans: FirstEpochCheck) -> None:
        self.dataset, self.scans = dataset, scans

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list) -> list:
        samples = [self.dataset[i] for i in indices]
        for scan in self.scans:
            scan.check(indices, samples)
        return samples


def scanned(dataset: Dataset, scans: Sequence[Optional[FirstEpochCheck]], num_workers: int) -> Dataset:
    """``dataset`` read through every check of ``scans`` (``None`` ones left out), for a training loader with
    ``num_workers`` workers; ``dataset`` itself when there is none.

    Example::

        loader = DataLoader(scanned(train_set, [holdout_scan, finite_scan], num_workers=2), batch_sampler=sampler)
    """
    kept = [scan for scan in scans if scan is not None]
    for scan in kept:
        scan.prepare(num_workers)
    return ScanningDataset(dataset, *kept) if kept else dataset


__all__ = ["FirstEpochCheck", "FirstEpochScan", "ScanningDataset", "deferred_record", "leaf_lists", "scanned"]
