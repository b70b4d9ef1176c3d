"""Which samples of one data set are copies of another's: a digest index and the matches against it.

:func:`index_by_digest` maps every digest to the first sample that has it; :func:`matches` looks the digests of
other samples up in it. Two datasets with bulk access (a ``TensorDataset``, arrays, an Arrow-backed Hugging Face
dataset: their digests a :class:`~collapse_guard.data.digests.RowDigests`) are compared without computing any
digest: by 64-bit fingerprints of the rows' canonical values (a vectorised sum, several times faster than hashing), then by the canonical bytes of every pair of rows whose fingerprints agree.
Equal rows always have equal fingerprints and a collision costs only that comparison, so the result is exact: the
same pairs as comparing digests.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Iterator, Optional, Sequence

import numpy as np

from collapse_guard.data.digests import RowDigests, TensorRowDigests


def _first_index(digests: Sequence[bytes]) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for i, d in enumerate(digests):
        out.setdefault(d, i)
    return out


class TensorRowIndex(Mapping):
    """:func:`index_by_digest` of a :class:`RowDigests` (of any dataset with bulk access, despite the name): digest -> first row with that digest, as a mapping
    (built from every digest when first read as one), and :meth:`matches` against other rows without digests."""

    def __init__(self, rows: RowDigests) -> None:
        self.rows = rows
        self._mapping: Optional[dict[bytes, int]] = None
        self._sorted: Optional[tuple[np.ndarray, np.ndarray]] = None

    def _dict(self) -> dict[bytes, int]:
        if self._mapping is None:
            self._mapping = _first_index(self.rows)
        return self._mapping

    def __getitem__(self, digest: bytes) -> int:
        return self._dict()[digest]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __contains__(self, digest: object) -> bool:
        return digest in self._dict()

    def __repr__(self) -> str:
        return f"TensorRowIndex({self.rows!r})"

    def matches(self, other: RowDigests, chunk: int = 1024) -> list[tuple[int, int]]:
        """``(position in other, first indexed row with the same content)`` for every row of ``other`` that has
        one, in order: the candidates by fingerprint, confirmed by comparing canonical bytes."""
        mine = self.rows
        if not len(other) or not len(mine) or other.signature != mine.signature:
            return []  # the structure is part of every digest: rows of another structure never match
        if self._sorted is None:
            fingerprints = mine.fingerprints()
            order = np.argsort(fingerprints, kind="stable")  # equal fingerprints: rows in increasing order
            self._sorted = (fingerprints[order], order)
        sorted_fp, order = self._sorted
        theirs = other.fingerprints()
        first = np.searchsorted(sorted_fp, theirs)
        hit = first < len(sorted_fp)
        hit[hit] = sorted_fp[first[hit]] == theirs[hit]
        candidates = np.flatnonzero(hit)
        found = np.full(len(candidates), -1, dtype=np.int64)
        pending = np.arange(len(candidates))
        step = 0
        while len(pending):  # step k: each unresolved candidate against the k-th row of its fingerprint
            at = first[candidates[pending]] + step
            alive = at < len(sorted_fp)
            alive[alive] = sorted_fp[at[alive]] == theirs[candidates[pending[alive]]]
            pending, at = pending[alive], at[alive]
            if not len(pending):
                break
            rows = order[at]
            same = np.zeros(len(pending), dtype=bool)
            for start in range(0, len(pending), chunk):
                part = slice(start, start + chunk)
                a = other.canonical_rows(candidates[pending[part]])
                b = mine.canonical_rows(rows[part])
                same[part] = (a == b).all(axis=1)
            found[pending[same]] = rows[same]
            pending = pending[~same]
            step += 1
        keep = found >= 0
        return [(int(i), int(h)) for i, h in zip(candidates[keep], found[keep])]


def index_by_digest(digests: Sequence[bytes]) -> Mapping[bytes, int]:
    """Digest -> first index with that digest (a :class:`TensorRowIndex` for a :class:`RowDigests`)."""
    if isinstance(digests, RowDigests):
        return TensorRowIndex(digests)
    return _first_index(digests)


def matches(heldout: Mapping[bytes, int], digests: Sequence[bytes]) -> list[tuple[int, int]]:
    """``(position in digests, held-out index)`` for every digest that is also a held-out sample's.

    Two datasets with bulk access (a :class:`TensorRowIndex` and a :class:`RowDigests`) are compared by row
    fingerprints and canonical bytes, without computing digests; any other pair digest by digest.

    Args:
        heldout: :func:`index_by_digest` of the held-out samples' digests.
        digests: the digests of the samples to look for, e.g. :func:`sample_digests` of a training set.

    Returns:
        The pairs, in the order of ``digests`` (empty: no sample of ``digests`` is a held-out one).

    Example::

        leaks = matches(index_by_digest(sample_digests(heldout_ds)), sample_digests(train_ds))
        assert not leaks, f"{len(leaks)} training samples are copies of held-out ones, e.g. {leaks[:3]}"
    """
    if isinstance(heldout, TensorRowIndex) and isinstance(digests, RowDigests):
        return heldout.matches(digests)
    return [(i, heldout[d]) for i, d in enumerate(digests) if d in heldout]


__all__ = ["TensorRowDigests", "TensorRowIndex", "index_by_digest", "matches"]
