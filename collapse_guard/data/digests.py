"""Content digests of samples: equal for samples with equal structure and values.

:func:`sample_digests` hashes the content of every sample (every tensor, ndarray, number and string leaf, in the
canonical form of :mod:`collapse_guard.data.canonical`), so held-out real data can be compared with the training
data by content, not by index (see :mod:`collapse_guard.data.row_index` for the comparison,
:mod:`collapse_guard.data.checks` for the check). Only exact copies match: a near-duplicate (a generated sample a
little off a real one) needs a feature-space measure instead.

A dataset with bulk access to its rows (a ``TensorDataset``, numpy or memory-mapped arrays, an Arrow-backed Hugging
Face dataset of numeric columns: see :mod:`collapse_guard.data.bulk`) gives a lazy :class:`RowDigests`: each digest
computed when read, and 64-bit row fingerprints, computed a block of rows at a time, that
:mod:`~collapse_guard.data.row_index` compares without computing digests at all. Another Hugging Face dataset is
read a chunk of rows at a time; anything else sample by sample. Large datasets' results are cached in the process
by a dataset fingerprint (:mod:`collapse_guard.data.digest_cache`).
"""
from __future__ import annotations

import copy
import sys
from functools import lru_cache
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from collapse_guard.data import digest_cache
from collapse_guard.data.bulk import bulk_view, unwrap_subsets
from collapse_guard.data.canonical import DIGEST_SIZE, _array_tag, _canonical_tensor, _digest, canonical, sample_digest
from collapse_guard.data.stacked import stack_rows

FINGERPRINT_SEED = 0x5EED_C0DE  # the fingerprint coefficients: any fixed value (fingerprints never leave a process)
VERIFIED_ROWS = 8  # rows of a bulk view checked against dataset[i]


@lru_cache(maxsize=64)
def _coefficients(n: int) -> np.ndarray:
    """``n`` fixed odd 64-bit multipliers of the row fingerprints (the same for a given ``n`` in every call)."""
    return np.random.PCG64(FINGERPRINT_SEED).random_raw(n).astype(np.uint64) | np.uint64(1)


def _take(column: Any, rows: Union[np.ndarray, slice]) -> Any:
    if isinstance(column, Tensor) and not isinstance(rows, slice):
        return column[torch.from_numpy(rows)]
    return column[rows]


class RowDigests(Sequence):
    """The digests of rows of arrays, as :func:`sample_digests` returns them for a dataset with bulk access.

    A sequence of 16-byte digests, equal to ``sample_digest(dataset[i])``; each is computed when first read (all of
    them, in blocks, on iteration). :func:`~collapse_guard.data.row_index.index_by_digest` and
    :func:`~collapse_guard.data.row_index.matches` compare two of these without computing any digest: by
    :meth:`fingerprints`, then by the canonical bytes of the rows whose fingerprints agree.

    Args:
        columns: tensors or numpy arrays (memory-mapped ones too) with one row per sample, in digest order.
        rows: the rows of ``columns`` in order (``None``: all of them).
        signature: the structure part of every row's digest.
    """

    CHUNK = 4096  # rows per vectorised step

    def __init__(self, columns: Sequence[Any], rows: Optional[np.ndarray], signature: str) -> None:
        self.columns = list(columns)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.signature = signature
        self._digests: Optional[list[bytes]] = None
        self._fingerprints: Optional[np.ndarray] = None
        self._whole: Optional[RowDigests] = None  # the digests of all rows, whose fingerprints these share

    def __len__(self) -> int:
        return len(self.columns[0]) if self.rows is None else len(self.rows)

    def __getitem__(self, i: Union[int, slice]) -> Union[bytes, list[bytes]]:
        if self._digests is not None:
            return self._digests[i]
        if isinstance(i, slice):
            return self._digests_at(np.arange(len(self))[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} digests")
        return self._digests_at(np.array([i % n]))[0]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (RowDigests, list, tuple)):
            return self._all() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment] - a mutable-looking sequence, like a list

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} rows, signature {self.signature!r})"

    def view(self, rows: Optional[np.ndarray]) -> "RowDigests":
        """These digests' rows at ``rows`` (positions in this sequence; ``None``: all), sharing the fingerprints.

        Args:
            rows: int64 positions.

        Returns:
            A :class:`RowDigests` of the same class; its fingerprints are read off the whole one's.

        Example::

            held = sample_digests(ds).view(np.array([3, 1]))  # the digests of ds[3], ds[1]
        """
        if rows is None:
            return self
        out = copy.copy(self)
        out.rows = np.asarray(rows, dtype=np.int64) if self.rows is None else self.rows[rows]
        out._digests = out._fingerprints = None
        out._whole = self if self.rows is None else self._whole
        return out

    def _rows(self, positions: Union[np.ndarray, slice]) -> Union[np.ndarray, slice]:
        return positions if self.rows is None else self.rows[positions]

    def _canonical_block(self, positions: Union[np.ndarray, slice]) -> list[np.ndarray]:
        rows = self._rows(positions)
        parts = [canonical(_take(c, rows)) for c in self.columns]
        return [np.ascontiguousarray(p.reshape(len(p), -1)) for p in parts]

    def canonical_rows(self, positions: np.ndarray) -> np.ndarray:
        """The canonical bytes of the rows at ``positions``: ``(len(positions), row bytes)`` uint8, what is hashed."""
        parts = self._canonical_block(np.asarray(positions, dtype=np.int64))
        return np.concatenate([p.view(np.uint8).reshape(len(p), -1) for p in parts], axis=1)

    def _digests_at(self, positions: np.ndarray) -> list[bytes]:
        out: list[bytes] = []
        for start in range(0, len(positions), 65536):
            rows = self.canonical_rows(positions[start : start + 65536])
            out.extend(_digest(self.signature, row.tobytes()) for row in rows)
        return out

    def _all(self) -> list[bytes]:
        if self._digests is None:
            self._digests = self._digests_at(np.arange(len(self)))
        return self._digests

    def fingerprints(self) -> np.ndarray:
        """A 64-bit fingerprint of every row (uint64): the sum, modulo 2**64, of the row's canonical 64-bit words
        times fixed odd multipliers. Rows with equal canonical values have equal fingerprints; unequal rows rarely do.
        """
        if self._fingerprints is None and self._whole is not None:
            self._fingerprints = self._whole.fingerprints()[self.rows]
        if self._fingerprints is None:
            n = len(self)
            out = np.empty(n, dtype=np.uint64)
            progress = digest_cache.Progress(f"{n} rows", n)
            for start in range(0, n, self.CHUNK):
                stop = min(n, start + self.CHUNK)
                acc = np.zeros(stop - start, dtype=np.uint64)
                offset = 0
                for part in self._canonical_block(slice(start, stop) if self.rows is None else np.arange(start, stop)):
                    words = part.view(np.uint64)
                    width = words.shape[1]
                    if width:
                        acc += words @ _coefficients(offset + width)[offset:]
                    offset += width
                out[start:stop] = acc
                progress.update(stop)
            self._fingerprints = out
        return self._fingerprints


class TensorRowDigests(RowDigests):
    """The :class:`RowDigests` of rows of a ``TensorDataset`` (its sample is the tuple of its tensors' rows).

    Args:
        tensors: the dataset's tensors.
        indices: the rows, in order.
    """

    def __init__(self, tensors: Sequence[Tensor], indices: Union[Tensor, np.ndarray, None]) -> None:
        rows = None if indices is None else np.asarray(indices, dtype=np.int64)
        tensors = list(tensors)
        signature = "".join(["(", *(_array_tag(_canonical_tensor(t[0])) for t in tensors), ")"]) if len(tensors[0]) \
            else ""
        super().__init__(tensors, rows, signature)
        self.tensors = tensors


def _verified(digests: RowDigests, dataset: Dataset) -> bool:
    """The digests of a few rows (first, last, spread) equal ``sample_digest(dataset[i])``."""
    n = len(digests)
    positions = np.unique(np.linspace(0, n - 1, min(n, VERIFIED_ROWS)).astype(np.int64))
    got = digests._digests_at(positions)
    return all(d == sample_digest(dataset[int(p)]) for d, p in zip(got, positions))


def _bulk_digests(dataset: Dataset, idx: Optional[np.ndarray]) -> Optional[RowDigests]:
    """The :class:`RowDigests` of a dataset with bulk access (:func:`~collapse_guard.data.bulk.bulk_view`), else
    ``None``; the whole base dataset's digests cached by its fingerprint."""
    view = bulk_view(dataset, idx)
    if view is None or not len(view.columns[0]):
        return None

    def build() -> Optional[RowDigests]:
        if view.kind == "tensor":
            whole = TensorRowDigests(view.columns, None)
        else:
            whole = RowDigests(view.columns, None, view.signature)
        # a TensorDataset's sample is its tensors' rows (a subclass reading otherwise would defeat any fast path)
        return whole if view.kind == "tensor" or _verified(whole, view.base) else None

    n = len(view.columns[0])
    key = None
    if n >= digest_cache.CACHE_MIN_ROWS:
        probe = RowDigests(view.columns, None, view.signature)
        sample = digest_cache.content_sample(lambda p: probe.canonical_rows(p).tobytes(), n)
        key = ("bulk", view.key, view.signature, sample, _coefficients(4).tobytes())
    whole = digest_cache.cached(key, view.kind, build)
    if whole is None:
        return None
    return whole.view(view.rows)


def _hf_chunks(dataset: Any, indices: np.ndarray, chunk: int = 1024) -> Optional[list[bytes]]:
    """Digests of ``dataset[i]`` (a Hugging Face dataset) for ``i`` in ``indices``, read a chunk of rows at a time
    (several times faster than row by row). ``None`` when a chunk's rows do not come out as the rows ``dataset[i]``
    returns (a format whose batches differ from its rows): the caller then reads sample by sample."""
    out: list[bytes] = []
    for start in range(0, len(indices), chunk):
        idx = indices[start : start + chunk].tolist()
        batch = dataset[idx]
        if not isinstance(batch, dict) or not batch:
            return None
        keys = list(batch)
        columns = [batch[k] for k in keys]
        if any(len(c) != len(idx) for c in columns):
            return None
        rows = [dict(zip(keys, values)) for values in zip(*columns)]
        if sample_digest(rows[0]) != sample_digest(dataset[idx[0]]):
            return None
        out.extend(sample_digest(row) for row in rows)
    return out


def _is_hf(dataset: Any) -> bool:
    return "datasets" in sys.modules and isinstance(dataset, sys.modules["datasets"].Dataset)


def _one_by_one(dataset: Dataset, order: Sequence[int], key: Optional[Callable[[Any], Any]]) -> list[bytes]:
    progress = digest_cache.Progress(f"{len(order)} samples of {type(dataset).__name__}", len(order))
    out = []
    for k, i in enumerate(order):
        sample = dataset[i]
        out.append(sample_digest(sample if key is None else key(sample)))
        if not k % 4096:
            progress.update(k)
    return out


def _read(base: Dataset, order: np.ndarray, key: Optional[Callable]) -> list[bytes]:
    """Digests of ``base[i]`` for ``i`` in ``order``: a Hugging Face dataset a chunk of rows at a time, anything
    else sample by sample."""
    if _is_hf(base) and key is None and len(order):
        found = _hf_chunks(base, order)
        if found is not None:
            return found
    return _one_by_one(base, order.tolist(), key)


def stacked_digests(dataset: Dataset, key: Optional[Callable[[Any], Any]] = None) -> Optional[RowDigests]:
    """The :class:`RowDigests` of ``dataset``'s samples (or of ``key(sample)``) read once and stacked into columns
    (:func:`~collapse_guard.data.stacked.stack_rows`), checked against the digests of the first samples.

    Args:
        dataset: a map-style dataset.
        key: what of a sample to hash (``None``: all of it).

    Returns:
        The digests, or ``None`` when the samples cannot be stacked (other structures, non-numeric parts, too large).

    Example::

        rows = stacked_digests(heldout_ds)  # rows.fingerprints() screens other rows in bulk
    """
    n = len(dataset)
    progress = digest_cache.Progress(f"{n} samples of {type(dataset).__name__}", n)
    found = stack_rows((lambda i: dataset[i]) if key is None else (lambda i: key(dataset[i])), n, progress.update)
    if found is None:
        return None
    columns, signature, firsts = found
    whole = RowDigests(columns, None, signature)
    same = whole._digests_at(np.arange(len(firsts))) == [sample_digest(s) for s in firsts]
    return whole if same else None


def opaque_fingerprint(base: Dataset) -> tuple:
    """What identifies the content of a dataset without bulk access in the digest cache: its kind (a Hugging Face
    dataset's ``_fingerprint`` and format, else its type), its length and the digest of a content sample.

    Example::

        digest_cache.cached(("stacked", *opaque_fingerprint(ds)), "stacked", lambda: stacked_digests(ds))
    """
    n = len(base)
    sample = digest_cache.content_sample(lambda p: b"".join(sample_digest(base[int(i)]) for i in p), n)
    ident = ("hf", base._fingerprint, repr(base.format)) if _is_hf(base) else (type(base).__qualname__,)
    return ident, n, sample


def _opaque_digests(dataset: Dataset, idx: Optional[np.ndarray], key: Optional[Callable]) -> list[bytes]:
    """Digests without bulk access. A large base dataset (under its ``Subset`` s, asked for 5% of its rows or more) is
    read once, stacked into columns and hashed in bulk (:func:`stacked_digests`), cached by its type, length and content
    sample; else (samples that cannot be stacked, a Hugging Face dataset) it has a cached table of its rows' digests,
    filled as rows are asked for, each row read once. With a ``key``: sample by sample, never cached."""
    if key is not None:
        return _read(dataset, np.arange(len(dataset)) if idx is None else idx, key)
    base, rows = unwrap_subsets(dataset, idx)
    n = len(base)
    order = np.arange(n) if rows is None else rows
    if n < digest_cache.CACHE_MIN_ROWS:
        return _read(base, order, None)
    ident = opaque_fingerprint(base)
    if not _is_hf(base) and len(order) * 20 >= n:  # read once, stacked into columns, hashed in bulk
        whole = digest_cache.cached(("stacked", *ident), "stacked", lambda: stacked_digests(base))
        if whole is not None:
            return whole.view(rows)
    table: list[Optional[bytes]] = digest_cache.cached(("opaque", *ident), "opaque", lambda: [None] * n)
    wanted = order.tolist()
    missing = sorted({i for i in wanted if table[i] is None})
    for i, digest in zip(missing, _read(base, np.asarray(missing, dtype=np.int64), None)):
        table[i] = digest
    return [table[i] for i in wanted]  # type: ignore[misc]


def has_bulk_access(dataset: Dataset) -> bool:
    """Whether :func:`sample_digests` reads ``dataset`` in bulk (see :mod:`collapse_guard.data.bulk`) or a chunk of
    rows at a time (a Hugging Face dataset), not sample by sample: a source worth hashing at set-up.

    Args:
        dataset: a map-style dataset (a few of its rows are read to check a bulk view against ``dataset[i]``).

    Returns:
        ``True`` for bulk or chunked access.

    Example::

        has_bulk_access(TensorDataset(torch.zeros(3, 2)))  # True
    """
    base, _ = unwrap_subsets(dataset, None)
    return _is_hf(base) or _bulk_digests(dataset, None) is not None


def sample_digests(
    dataset: Dataset, indices: Optional[Sequence[int]] = None, key: Optional[Callable[[Any], Any]] = None
) -> Sequence[bytes]:
    """Content digests of ``dataset[i]`` for every ``i`` in ``indices`` (default: all), in order.

    A dataset with bulk access (also inside ``Subset``): a ``TensorDataset``, a numpy or memory-mapped array, a
    ``StackDataset`` over arrays, a ``Dataset`` with a ``row_arrays()`` method, an Arrow-backed Hugging Face dataset of
    numeric columns (see :mod:`collapse_guard.data.bulk`) is read a block of rows at a time off its arrays, and
    lazily: the result is a :class:`RowDigests`, a sequence whose digests are computed when read, and which
    :func:`index_by_digest` and :func:`matches` compare with another one by row fingerprints without computing
    digests at all (a few rows are checked against ``dataset[i]`` first; on a difference, as for a transform in
    ``__getitem__``, the dataset is read sample by sample). Another Hugging Face ``datasets.Dataset`` is read a
    chunk of rows at a time (each chunk's first row checked against ``dataset[i]``); any other dataset sample by
    sample, with a progress line when that takes more than a few seconds. ``key`` maps a sample to the part to
    hash (e.g. ``lambda s: s[0]`` for the inputs only); the fast paths and the cache are skipped then. Datasets of
    at least ``digest_cache.CACHE_MIN_ROWS`` rows are cached in the process by a dataset fingerprint.

    Args:
        dataset: a map-style dataset.
        indices: indices into ``dataset``; default ``range(len(dataset))``.
        key: what of a sample to hash; default the whole sample.

    Returns:
        One 16-byte digest per index: a list, or a :class:`RowDigests` (a sequence) for a dataset with bulk access.

    Raises:
        IndexError: an index out of range (as ``dataset[i]`` raises it).

    Example::

        held = set(sample_digests(heldout_ds))
        leaked = [i for i, d in enumerate(sample_digests(train_ds)) if d in held]
    """
    idx = None
    if indices is not None:
        idx = (indices.numpy() if isinstance(indices, Tensor) else np.asarray(list(indices))).astype(np.int64)
        idx = idx.reshape(-1)
    if key is None:
        rows = _bulk_digests(dataset, idx)
        if rows is not None:
            return rows
    return _opaque_digests(dataset, idx, key)


__all__ = ["DIGEST_SIZE", "RowDigests", "TensorRowDigests", "has_bulk_access", "opaque_fingerprint", "sample_digest",
           "sample_digests", "stacked_digests"]
