"""An in-process cache of the digests of large datasets, keyed by a dataset fingerprint, and a progress line.

A resumed fit, a second fit or a second ``MixedDataModule`` in the same process over the same data finds the row
fingerprints / digests computed by the first (:func:`cached`). A dataset's fingerprint is what identifies its
content cheaply: a Hugging Face dataset's own ``_fingerprint``, a tensor's address and version, a memmap's file,
else the dataset's type and length; always with the digest of a fixed sample of its rows (:func:`content_sample`),
so a changed dataset is seldom taken for the old one. Only datasets of at least :data:`CACHE_MIN_ROWS` rows are
cached (smaller ones cost less to hash than to fingerprint), in a small least-recently-used table.
"""
from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional, TypeVar

import numpy as np

from collapse_guard._compat import rank_zero_info

T = TypeVar("T")

#: datasets with fewer rows are not cached
CACHE_MIN_ROWS = 20_000
#: entries kept (least recently used dropped first)
CACHE_SIZE = 8
#: rows read for a dataset's content sample
SAMPLE_ROWS = 64
#: seconds of hashing before a progress line is shown
PROGRESS_AFTER_S = 3.0

_CACHE: "OrderedDict[Hashable, Any]" = OrderedDict()
#: how many times each kind of digests was computed rather than found (read by tests)
computed: dict[str, int] = {}


def sample_positions(n: int) -> np.ndarray:
    """The fixed positions of a content sample of ``n`` rows: ``SAMPLE_ROWS`` spread evenly, first and last included.

    Example::

        sample_positions(5)  # array([0, 1, 2, 3, 4])
    """
    return np.unique(np.linspace(0, max(n - 1, 0), min(n, SAMPLE_ROWS)).astype(np.int64))


def content_sample(read: Callable[[np.ndarray], bytes], n: int) -> bytes:
    """A digest of the rows at :func:`sample_positions` (``read(positions) -> their bytes``).

    Args:
        read: ``positions -> the bytes of those rows`` (their canonical bytes, or their digests joined).
        n: the number of rows.

    Returns:
        16 bytes.

    Example::

        content_sample(lambda p: b"".join(sample_digest(ds[int(i)]) for i in p), len(ds))
    """
    return hashlib.blake2b(read(sample_positions(n)), digest_size=16).digest()


def cached(key: Optional[Hashable], kind: str, compute: Callable[[], T]) -> T:
    """``compute()``, or what it returned for the same ``key`` before (``key=None``: never cached).

    Args:
        key: the dataset fingerprint (and anything else the result depends on).
        kind: a label for :data:`computed`.
        compute: computes the value.

    Returns:
        The value.

    Example::

        digests = cached(("opaque", len(ds), content), "opaque", lambda: [sample_digest(s) for s in ds])
    """
    if key is not None and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = compute()
    computed[kind] = computed.get(kind, 0) + 1
    if key is not None:
        _CACHE[key] = value
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every cached digest (and the counts of :data:`computed`).

    Example::

        clear_cache()  # the next set-up hashes everything again (benchmarks time a first fit this way)
    """
    _CACHE.clear()
    computed.clear()


class Progress:
    """A rank-zero info line every few seconds while ``total`` items are hashed, once hashing takes more than
    :data:`PROGRESS_AFTER_S` seconds (quiet before: short work prints nothing).

    Args:
        what: what is hashed, for the line.
        total: the number of items.
    """

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total = what, total
        self.start = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        """Report ``done`` items hashed (a line when due)."""
        now = time.perf_counter()
        if now - self.start >= PROGRESS_AFTER_S and now - self.last >= PROGRESS_AFTER_S:
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            left = (self.total - done) / max(rate, 1e-9)
            rank_zero_info(f"collapse_guard: held-out check, digests of {self.what}: {done}/{self.total} "
                           f"({rate:,.0f}/s, about {left:.0f} s left)")


__all__ = ["CACHE_MIN_ROWS", "Progress", "cached", "clear_cache", "computed", "content_sample", "sample_positions"]
