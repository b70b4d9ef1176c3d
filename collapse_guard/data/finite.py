"""NaN and infinities in synthetic data: found at set-up, or as training reads the samples.

A synthetic source (or a ``reserve`` given as a Dataset) with NaN or an infinity in a floating part makes the loss
NaN. :func:`~collapse_guard.data.checks.check_finite` looks for them with the functions here:

* a source with bulk access (a ``TensorDataset``, numpy or memory-mapped arrays, a ``StackDataset``, a dataset with
  ``row_arrays()``, an Arrow-backed Hugging Face dataset: see :mod:`collapse_guard.data.bulk`): every row of its
  floating columns, in bulk at set-up (:func:`bulk_non_finite`, ``CHUNK_ROWS`` rows at a time);
* a small source without bulk access: every sample at set-up, read a batch at a time (:func:`read_non_finite`);
* a large source without bulk access (not read at set-up: reading it one sample at a time costs most of a
  DataLoader pass) and a stream: as training reads the samples, in the DataLoader workers when there are any
  (:class:`FiniteScan`). A non-finite sample raises there, so the batch holding it is never trained on.

Samples read one at a time are checked a batch at a time (:func:`non_finite_rows`): samples of one structure a part
at a time, the part stacked and checked in one vectorised step (ragged arrays screened in one concatenation), item by
item only where that fails; samples of several structures one by one
(:func:`~collapse_guard.data.structure.non_finite_part`). Integer and boolean parts hold no non-finite values: they
are not read in bulk.
"""
from __future__ import annotations

import operator
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from collapse_guard.data.bulk import bulk_view
from collapse_guard.data.digests import RowDigests, _take, _verified
from collapse_guard.data.first_epoch import FirstEpochCheck, leaf_lists
from collapse_guard.data.sources import DataSource
from collapse_guard.data.stacked import _column
from collapse_guard.data.streams import StreamDataset
from collapse_guard.data.structure import non_finite_part

#: rows of a bulk source's columns checked in one vectorised step at set-up
CHUNK_ROWS = 65536
#: samples of a source without bulk access read and checked together at set-up
CHUNK_SAMPLES = 1024
_DTYPE = operator.attrgetter("dtype")


def _floating(column: Any) -> bool:
    if isinstance(column, Tensor):
        return column.is_floating_point() or column.is_complex()
    return np.issubdtype(np.asarray(column[:0]).dtype, np.inexact)


def bad_rows(column: Any) -> np.ndarray:
    """Which rows of ``column`` (a tensor or numpy array, one row per sample) hold NaN or an infinity.

    Args:
        column: a tensor or array; an integer or boolean one holds none.

    Returns:
        A boolean array, one entry per row.

    Example::

        bad_rows(np.array([[1.0, np.nan], [0.0, 2.0]]))  # array([ True, False])
    """
    n = column.shape[0]
    if not _floating(column):
        return np.zeros(n, dtype=bool)
    if isinstance(column, Tensor):
        if column.device.type != "cpu" or column.dtype == torch.bfloat16:
            return (~torch.isfinite(column).reshape(n, -1).all(dim=1)).cpu().numpy()
        column = column.detach().numpy()  # numpy's check is several times faster than torch's on one thread
    finite = np.isfinite(column)
    if finite.all():
        return np.zeros(n, dtype=bool)
    return ~finite.reshape(n, -1).all(axis=1)


def non_finite_rows(samples: Sequence[Any]) -> np.ndarray:
    """Which of ``samples`` hold NaN or an infinity in a floating part. Samples of one structure (one array, or
    tuples / dicts of parts) are checked a part at a time: the part stacked and checked in one vectorised step (dtypes
    promoted to one), or item by item where it does not stack (ragged shapes, strings, nested containers); samples of
    several structures one by one.

    Args:
        samples: samples of one source.

    Returns:
        A boolean array, one entry per sample.

    Example::

        non_finite_rows([(torch.zeros(3), 1), (torch.full((3,), float("nan")), 2)])  # array([False,  True])
    """
    leaves = leaf_lists(list(samples)) if len(samples) else None
    if leaves is None:
        return np.array([non_finite_part(s) is not None for s in samples], dtype=bool)
    hit = np.zeros(len(samples), dtype=bool)
    for leaf in leaves:
        hit |= _bad_items(leaf)
    return hit


def _bad_items(items: list) -> np.ndarray:
    """Which of ``items`` (one part of every sample) hold NaN or an infinity: stacked if they stack, else one by one."""
    first = items[0]
    if isinstance(first, (Tensor, np.ndarray)) and not _floating(first):
        if set(map(type, items)) == {type(first)} and set(map(_DTYPE, items)) == {first.dtype}:
            return np.zeros(len(items), dtype=bool)  # integers or booleans of one dtype: not stacked
    elif isinstance(first, (str, bytes, int)) and set(map(type, items)) <= {str, bytes, int, bool}:
        return np.zeros(len(items), dtype=bool)
    try:
        column = _column(items)
    except (RuntimeError, TypeError, ValueError):  # other shapes, or arrays mixed with tensors
        column = None
    if column is not None and isinstance(column, (Tensor, np.ndarray)) and len(column) == len(items):
        return bad_rows(column)
    if _all_finite_arrays(items):  # ragged arrays: one vectorised screen of all their values
        return np.zeros(len(items), dtype=bool)
    return np.array([non_finite_part(x) is not None for x in items], dtype=bool)


def _all_finite_arrays(items: list) -> bool:
    """Whether ``items``, all tensors or all numpy arrays (of any shapes), hold only finite values (``False``: they
    may not, or are not all arrays of one kind)."""
    try:
        if all(isinstance(x, Tensor) for x in items):
            flat = torch.cat([x.reshape(-1) for x in items])
        elif all(isinstance(x, np.ndarray) for x in items):
            flat = np.concatenate([x.reshape(-1) for x in items])
        else:
            return False
    except (RuntimeError, TypeError, ValueError):
        return False
    return not bad_rows(flat.reshape(1, -1))[0]


def bulk_non_finite(dataset: Dataset) -> Optional[np.ndarray]:
    """The positions of ``dataset``'s samples holding NaN or an infinity, read off the arrays its samples are rows of
    (:func:`~collapse_guard.data.bulk.bulk_view`; the view is first checked against ``dataset[i]`` on a few rows,
    except a ``TensorDataset``'s), ``CHUNK_ROWS`` rows at a time; only floating columns are read.

    Args:
        dataset: a map-style dataset.

    Returns:
        The sorted positions (int64; empty when every value is finite), or ``None`` without bulk access (or a view
        that differs from ``dataset[i]``, e.g. a transform in ``__getitem__``).

    Example::

        x = torch.zeros(10**6, 32); x[5000, 3] = float("nan")
        bulk_non_finite(TensorDataset(x, torch.zeros(10**6)))  # array([5000])
    """
    view = bulk_view(dataset)
    if view is None or not len(view.columns[0]):
        return None
    if view.kind != "tensor" and not _verified(RowDigests(view.columns, None, view.signature), view.base):
        return None
    floating = [c for c in view.columns if _floating(c)]
    n = len(view.columns[0]) if view.rows is None else len(view.rows)
    found = [np.empty(0, dtype=np.int64)]
    for start in range(0, n if floating else 0, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        rows = slice(start, stop) if view.rows is None else view.rows[start:stop]
        hit = np.zeros(stop - start, dtype=bool)
        for column in floating:
            hit |= bad_rows(_take(column, rows))
        found.append(np.flatnonzero(hit) + start)
    return np.concatenate(found)


def read_non_finite(dataset: Dataset, n: Optional[int] = None) -> np.ndarray:
    """The positions of the samples among ``dataset[0] .. dataset[n - 1]`` holding NaN or an infinity, read
    ``CHUNK_SAMPLES`` at a time and checked by :func:`non_finite_rows`.

    Args:
        dataset: a map-style dataset.
        n: how many of its first samples to check (``None``: all).

    Returns:
        The sorted positions (int64; empty when every value is finite).

    Example::

        read_non_finite(MyDataset(), n=4)  # the first four samples only
    """
    n = len(dataset) if n is None else min(n, len(dataset))
    found = [np.empty(0, dtype=np.int64)]
    for start in range(0, n, CHUNK_SAMPLES):
        samples = [dataset[i] for i in range(start, min(n, start + CHUNK_SAMPLES))]
        found.append(np.flatnonzero(non_finite_rows(samples)) + start)
    return np.concatenate(found)


def non_finite_error(source: DataSource, where: str, part: Optional[str], found: str = "", note: str = ""
                     ) -> ValueError:
    """The error naming a source's non-finite sample and the fix.

    Args:
        source: the source (a synthetic one, or the reserve: real).
        where: the sample, e.g. ``"sample #5000"``.
        part: the sample's non-finite part (:func:`~collapse_guard.data.structure.non_finite_part`).
        found: how many samples hold some, e.g. ``"3 of its 10000 samples"`` (empty: unknown).
        note: what follows the fix (when and how the sample was found).

    Returns:
        The ``ValueError``.

    Example::

        raise non_finite_error(source, "sample #5000", "sample[0] (Tensor[float32, 1-d])", "3 of its 10000 samples")
    """
    label, argument = ("`reserve`", "as `reserve`") if source.is_real else (
        f"synthetic source {source.name!r}", "to `synthetic`")
    return ValueError(
        f"{label} holds NaN or infinite values: its {where} has them in {part or 'a floating part'}"
        f"{f' ({found} hold some)' if found else ''}. Training on them makes the loss NaN: remove or repair these "
        f"samples (or the generator that made them) before passing the source {argument}.{note}"
    )


class FiniteScan(FirstEpochCheck):
    """NaN and infinities in the samples no set-up check could read, found as training reads them.

    Every batch a :class:`~collapse_guard.data.first_epoch.ScanningDataset` reads (in the DataLoader workers when
    there are any) is checked: the samples of each source, stacked and checked in one vectorised step where they
    stack (:func:`non_finite_rows`). A non-finite sample raises a ``ValueError`` there: the batch holding it never
    reaches the model, and the fit stops (checkpoints saved so far are kept). A large map-style synthetic source
    without bulk access is checked during the first epoch only (its samples are the same at every epoch); a stream,
    whose later passes and epochs bring samples never read before, and a large reserve without bulk access, whose
    samples join training after ``inject()``, at every epoch.

    Args:
        ranges: ``(source, start, stop, every epoch)`` of each source to check: its indices in the training set,
            and whether every epoch is checked (``False``: the first only).

    Raises:
        ValueError: (on a read) a sample holding NaN or an infinity, naming the source, the sample (its index in a
            map-style source; its pass and position in a stream, as the reader reading it counts them) and the part.

    Example::

        scan = FiniteScan([(stream_source, 900, 1900, True)])
        loader = DataLoader(scanned(train_set, [scan], num_workers=2), batch_sampler=sampler)
    """

    def __init__(self, ranges: Sequence[tuple[DataSource, int, int, bool]]) -> None:
        super().__init__()
        self.sources = [r[0] for r in ranges]
        self.starts = np.array([r[1] for r in ranges], dtype=np.int64)
        self.stops = np.array([r[2] for r in ranges], dtype=np.int64)
        self.always = np.array([r[3] for r in ranges], dtype=bool)
        self.any_always = bool(self.always.any())  # read at every batch: computed once
        self.sizes = [len(s) if not s.streaming else None for s, *_ in ranges]
        self.streams = {k: r[0].dataset for k, r in enumerate(ranges) if isinstance(r[0].dataset, StreamDataset)}

    def prepare(self, num_workers: int) -> None:
        """Ready the check for a training loader with ``num_workers`` workers: the streams log their reads."""
        super().prepare(num_workers)
        for stream in self.streams.values():
            stream.log = []

    def check(self, indices: Sequence[int], samples: Sequence[Any]) -> None:
        """Check the samples of the scanned sources among ``samples`` (read at training-set ``indices``).

        Raises:
            ValueError: see the class.
        """
        try:
            first_epoch = self.reading()
            if not len(indices) or not (first_epoch or self.any_always):
                return
            idx = np.fromiter(indices, dtype=np.int64, count=len(indices))
            at = np.maximum(np.searchsorted(self.starts, idx, side="right") - 1, 0)
            wanted = (idx >= self.starts[at]) & (idx < self.stops[at])
            if not first_epoch:
                wanted &= self.always[at]
            for k in np.unique(at[wanted]).tolist():
                group = np.flatnonzero(wanted & (at == k)).tolist()
                bad = non_finite_rows([samples[j] for j in group])
                if bad.any():
                    first = group[int(np.argmax(bad))]
                    raise self._error(k, int(idx[first]), samples[first], len(group), int(np.argmax(bad)))
        finally:
            for stream in self.streams.values():
                if stream.log is not None:
                    stream.log.clear()

    def _error(self, k: int, index: int, sample: Any, reads: int, first: int) -> ValueError:
        """The error of ``sample``, read at training-set ``index``: source ``k``'s ``first``-th of the ``reads``
        samples of the batch."""
        source = self.sources[k]
        stop = "; the batch holding it was not trained on, and checkpoints saved so far are kept."
        stream = self.streams.get(k)
        if stream is not None:
            log = (stream.log or [])[-reads:]  # this batch's reads of the stream, in order
            worker = get_worker_info()
            reader = f"DataLoader worker {worker.id}" if worker is not None else "the main process"
            where = (f"sample #{log[first][1]} of pass {log[first][0]} (counted from the start of the pass, as "
                     f"{reader} reads the stream)") if len(log) == reads else "sample just read"
            note = (f" Found as training read it{stop} Filter the stream (a Hugging Face stream: `.filter(...)`) to "
                    "skip them.")
            return non_finite_error(source, where, non_finite_part(sample), note=note)
        epoch = "training" if self.always[k] else "the first training epoch"
        note = (f" Found as {epoch} read it{stop} A source of {self.sizes[k]} samples without bulk access is "
                "checked as training reads it, not at set-up: give its Dataset a `row_arrays()` method (see "
                "`collapse_guard.data.bulk`) to have every sample checked before training.")
        return non_finite_error(source, f"sample #{index - self.starts[k]}", non_finite_part(sample), note=note)


__all__ = ["CHUNK_ROWS", "CHUNK_SAMPLES", "FiniteScan", "bad_rows", "bulk_non_finite", "non_finite_error",
           "non_finite_rows", "read_non_finite"]
