"""Content checks of the data a :class:`~collapse_guard.MixedDataModule` mixes.

* **Held out means held out.** :func:`sample_digests` hashes the content of every sample (every tensor,
  ndarray, number and string leaf, in a canonical form), so held-out real data can be compared with the real
  training pool, the reserve and the synthetic sources by content, not by index: a held-out real sample that is
  also in the training data is an error; a synthetic sample identical to a held-out real one (a generator that
  memorised it) is reported, since it makes every held-out check meaningless.
* **One sample structure.** :func:`sample_structure` describes a sample's containers and leaf types (dtype and
  number of dimensions, not sizes), so sources that would be mixed in one batch can be compared before training.

The canonical form makes the digest depend on values, not on storage: integer and boolean leaves are hashed as
int64, floating leaves as float64, so a float32 tensor and a float64 array with the same values have the same
digest, as do a tuple and a list. Only exact copies match: a near-duplicate (a generated sample a little off a
real one) needs a feature-space measure instead.

Comparing two ``TensorDataset`` s does not hash every row: :func:`sample_digests` returns their digests as a lazy
:class:`TensorRowDigests` (each digest computed when read), and :func:`index_by_digest` and :func:`matches` compare
two of them by 64-bit fingerprints of the rows' canonical values (a vectorised sum, several times faster than
hashing), then compare the canonical bytes of every pair of rows whose fingerprints agree. Equal rows always have
equal fingerprints and a collision costs only that comparison, so the result is exact: the same pairs as comparing
digests.
"""
from __future__ import annotations

import hashlib
import numbers
import random
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

DIGEST_SIZE = 16  # bytes of blake2b: collisions are out of reach for any data set size
FINGERPRINT_SEED = 0x5EED_C0DE  # the fingerprint coefficients: any fixed value (fingerprints never leave a process)


# -- canonical encoding -------------------------------------------------------------------------------------------
def _canonical_array(arr: np.ndarray) -> Optional[np.ndarray]:
    """``arr`` as int64 / float64 / complex128 by kind, or ``None`` when it is not numeric."""
    kind = arr.dtype.kind
    if kind in "biu":
        return arr.astype(np.int64, copy=False)
    if kind == "f":
        return arr.astype(np.float64, copy=False)
    if kind == "c":
        return arr.astype(np.complex128, copy=False)
    return None


def _canonical_tensor(t: Tensor) -> np.ndarray:
    t = t.detach().cpu()
    if t.is_complex():
        return t.to(torch.complex128).numpy()
    if t.is_floating_point():
        return t.to(torch.float64).numpy()
    return t.to(torch.int64).numpy()


def _array_tag(arr: np.ndarray) -> str:
    return f"{arr.dtype.kind}{tuple(arr.shape)}"


def _numeric_list(obj: Sequence) -> Optional[np.ndarray]:
    """A list/tuple of plain numbers (or nested lists of them) as a canonical array, else ``None``."""
    if not obj or any(isinstance(x, (Tensor, np.ndarray, str, bytes, dict)) for x in obj):
        return None
    try:
        arr = np.asarray(obj)
    except (ValueError, TypeError):
        return None
    return _canonical_array(arr) if arr.dtype != object else None


def _encode(obj: Any, sig: list[str], chunks: list[bytes]) -> None:
    """Append ``obj``'s structure to ``sig`` and its canonical bytes to ``chunks``."""
    if isinstance(obj, Tensor):
        arr = _canonical_tensor(obj)
        sig.append(_array_tag(arr))
        chunks.append(arr.tobytes())
    elif isinstance(obj, (np.ndarray, np.generic, numbers.Number)):
        arr = _canonical_array(np.asarray(obj))
        if arr is None:
            sig.append("r")
            chunks.append(repr(np.asarray(obj).tolist()).encode())
        else:
            sig.append(_array_tag(arr))
            chunks.append(arr.tobytes())
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        sig.append(f"s{len(data)}")
        chunks.append(data)
    elif isinstance(obj, (bytes, bytearray)):
        sig.append(f"y{len(obj)}")
        chunks.append(bytes(obj))
    elif obj is None:
        sig.append("N")
    elif isinstance(obj, dict):
        sig.append("{")
        for key in sorted(obj, key=str):
            sig.append(f"{key!r}:")
            _encode(obj[key], sig, chunks)
        sig.append("}")
    elif isinstance(obj, (list, tuple)):
        arr = _numeric_list(obj)
        if arr is not None:
            sig.append(_array_tag(arr))
            chunks.append(arr.tobytes())
            return
        sig.append("(")
        for item in obj:
            _encode(item, sig, chunks)
        sig.append(")")
    elif hasattr(obj, "__array__"):  # PIL images and other array-likes
        _encode(np.asarray(obj), sig, chunks)
    else:  # an object we cannot look into: its repr (equal objects of most types have equal reprs)
        data = repr(obj).encode("utf-8")
        sig.append(f"r{len(data)}")
        chunks.append(data)


def _digest(sig: str, data: bytes) -> bytes:
    h = hashlib.blake2b(sig.encode("utf-8"), digest_size=DIGEST_SIZE)
    h.update(b"\0")
    h.update(data)
    return h.digest()


def sample_digest(sample: Any) -> bytes:
    """The content digest of one sample (16 bytes): equal for samples with equal structure and values.

    Example::

        sample_digest((torch.tensor([1.0, 2.0]), 3)) == sample_digest([np.array([1.0, 2.0]), torch.tensor(3)])
    """
    sig: list[str] = []
    chunks: list[bytes] = []
    _encode(sample, sig, chunks)
    return _digest("".join(sig), b"".join(chunks))


# -- whole data sets ----------------------------------------------------------------------------------------------
def _tensor_dataset_view(dataset: Dataset, indices: Optional[Tensor]) -> Optional[tuple[TensorDataset, Tensor]]:
    """``(TensorDataset, indices into it)`` when ``dataset`` (through Subsets) is a TensorDataset, else ``None``."""
    if indices is None:
        indices = torch.arange(len(dataset))
    while isinstance(dataset, Subset):
        indices = torch.as_tensor(dataset.indices, dtype=torch.long)[indices]
        dataset = dataset.dataset
    if isinstance(dataset, TensorDataset) and dataset.tensors:
        return dataset, indices
    return None


def _row_signature(tensors: Sequence[Tensor], first: int) -> str:
    """The structure part of the digest of every row of ``tensors`` (a TensorDataset's sample is a tuple)."""
    return "".join(["(", *(_array_tag(_canonical_tensor(t[first])) for t in tensors), ")"])


@lru_cache(maxsize=64)
def _coefficients(n: int) -> np.ndarray:
    """``n`` fixed odd 64-bit multipliers of the row fingerprints (the same for a given ``n`` in every call)."""
    return np.random.PCG64(FINGERPRINT_SEED).random_raw(n).astype(np.uint64) | np.uint64(1)


class TensorRowDigests(Sequence):
    """The digests of rows of a ``TensorDataset``, as :func:`sample_digests` returns them for one.

    A sequence of 16-byte digests, equal to ``sample_digest(dataset[i])``; each is computed when first read (all of
    them, in chunks, on iteration). :func:`index_by_digest` and :func:`matches` compare two of these without
    computing any digest: by :meth:`fingerprints`, then by the canonical bytes of the rows whose fingerprints agree.

    Args:
        tensors: the dataset's tensors.
        indices: the rows, in order.
    """

    CHUNK = 256  # rows per vectorised step: a chunk's float64 copy stays in cache

    def __init__(self, tensors: Sequence[Tensor], indices: Tensor) -> None:
        self.tensors = list(tensors)
        self.indices = indices
        self.signature = _row_signature(self.tensors, int(indices[0])) if len(indices) else ""
        self._digests: Optional[list[bytes]] = None
        self._fingerprints: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: Union[int, slice]) -> Union[bytes, list[bytes]]:
        if self._digests is not None:
            return self._digests[i]
        if isinstance(i, slice):
            positions = np.arange(len(self))[i]
            return self._digests_at(positions)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} digests")
        return self._digests_at(np.array([i % n]))[0]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (TensorRowDigests, list, tuple)):
            return self._all() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment] - a mutable-looking sequence, like a list

    def __repr__(self) -> str:
        return f"TensorRowDigests({len(self)} rows, signature {self.signature!r})"

    def canonical_rows(self, positions: np.ndarray) -> np.ndarray:
        """The canonical bytes of the rows at ``positions``: ``(len(positions), row bytes)`` uint8, what is hashed."""
        idx = self.indices[torch.as_tensor(positions, dtype=torch.long)]
        parts = [np.ascontiguousarray(_canonical_tensor(t[idx]).reshape(len(idx), -1)) for t in self.tensors]
        return np.concatenate([p.view(np.uint8).reshape(len(idx), -1) for p in parts], axis=1)

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
        if self._fingerprints is None:
            out = np.empty(len(self), dtype=np.uint64)
            for start in range(0, len(self), self.CHUNK):
                idx = self.indices[start : start + self.CHUNK]
                acc = np.zeros(len(idx), dtype=np.uint64)
                offset = 0
                for t in self.tensors:
                    words = np.ascontiguousarray(_canonical_tensor(t[idx]).reshape(len(idx), -1)).view(np.uint64)
                    width = words.shape[1]
                    if width:
                        acc += words @ _coefficients(offset + width)[offset:]
                    offset += width
                out[start : start + len(idx)] = acc
            self._fingerprints = out
        return self._fingerprints


class TensorRowIndex(Mapping):
    """:func:`index_by_digest` of a :class:`TensorRowDigests`: digest -> first row with that digest, as a mapping
    (built from every digest when first read as one), and :meth:`matches` against other rows without digests."""

    def __init__(self, rows: TensorRowDigests) -> None:
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

    def matches(self, other: TensorRowDigests, chunk: int = 1024) -> list[tuple[int, int]]:
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


def _hf_dataset_view(dataset: Dataset, indices: Optional[Tensor]) -> Optional[tuple[Any, Tensor]]:
    """``(datasets.Dataset, indices into it)`` when ``dataset`` (through Subsets) is a Hugging Face Dataset."""
    if "datasets" not in sys.modules:
        return None
    import datasets

    if indices is None:
        indices = torch.arange(len(dataset))
    while isinstance(dataset, Subset):
        indices = torch.as_tensor(dataset.indices, dtype=torch.long)[indices]
        dataset = dataset.dataset
    return (dataset, indices) if isinstance(dataset, datasets.Dataset) else None


def _hf_dataset_digests(dataset: Any, indices: Tensor, chunk: int = 1024) -> Optional[list[bytes]]:
    """Digests of ``dataset[i]`` for ``i`` in ``indices``, read a chunk of rows at a time (several times faster than
    row by row). ``None`` when a chunk's rows do not come out as the rows ``dataset[i]`` returns (a format whose
    batches differ from its rows): the caller then reads sample by sample."""
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


def sample_digests(
    dataset: Dataset, indices: Optional[Sequence[int]] = None, key: Optional[Callable[[Any], Any]] = None
) -> list[bytes]:
    """Content digests of ``dataset[i]`` for every ``i`` in ``indices`` (default: all), in order.

    A ``TensorDataset`` (also inside ``Subset``) is read row-wise off its tensors, tens of thousands of samples a
    second, and lazily: the result is a :class:`TensorRowDigests`, a sequence whose digests are computed when read,
    and which :func:`index_by_digest` and :func:`matches` compare with another one by row fingerprints without
    computing digests at all. A Hugging Face ``datasets.Dataset`` (also inside ``Subset``) is read a chunk of rows
    at a time (each chunk's first row checked against ``dataset[i]``); any other dataset sample by sample. ``key``
    maps a sample to the part to hash (e.g. ``lambda s: s[0]`` for the inputs only); the fast paths are skipped then.

    Args:
        dataset: a map-style dataset.
        indices: indices into ``dataset``; default ``range(len(dataset))``.
        key: what of a sample to hash; default the whole sample.

    Returns:
        One 16-byte digest per index: a list, or a :class:`TensorRowDigests` (a sequence) for a ``TensorDataset``.

    Example::

        held = set(sample_digests(heldout_ds))
        leaked = [i for i, d in enumerate(sample_digests(train_ds)) if d in held]
    """
    idx = None if indices is None else torch.as_tensor(list(indices) if not isinstance(indices, Tensor) else indices,
                                                       dtype=torch.long)
    if key is None:
        view = _tensor_dataset_view(dataset, idx)
        if view is not None:
            return TensorRowDigests(view[0].tensors, view[1])
        hf_view = _hf_dataset_view(dataset, idx)
        if hf_view is not None and len(hf_view[1]):
            digests = _hf_dataset_digests(*hf_view)
            if digests is not None:
                return digests
    order = range(len(dataset)) if idx is None else idx.tolist()
    if key is None:
        return [sample_digest(dataset[i]) for i in order]
    return [sample_digest(key(dataset[i])) for i in order]


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without moving the global torch, numpy and ``random`` generators (set-up reads samples)."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


# -- sample structure ---------------------------------------------------------------------------------------------
def _leaf(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"Tensor[{str(obj.dtype).replace('torch.', '')}, {obj.dim()}-d]"
    if isinstance(obj, np.ndarray):
        return f"ndarray[{obj.dtype}, {obj.ndim}-d]"
    if isinstance(obj, np.generic):
        return f"numpy {obj.dtype}"
    return type(obj).__name__


def sample_structure(sample: Any, path: str = "sample") -> list[tuple[str, str]]:
    """``(path, description)`` of every container and leaf of ``sample``: what must agree across sources.

    Containers are described by kind and length (tuples and lists alike) or keys; leaves by type, dtype and number
    of dimensions. Sizes are left out: a padding collate may batch samples of different lengths.
    """
    if isinstance(sample, dict):
        out = [(path, f"dict with keys {sorted(map(str, sample))}")]
        for k in sorted(sample, key=str):
            out.extend(sample_structure(sample[k], f"{path}[{k!r}]"))
        return out
    if isinstance(sample, (list, tuple)) and not _is_number_list(sample):
        out = [(path, f"sequence of {len(sample)}")]
        for i, item in enumerate(sample):
            out.extend(sample_structure(item, f"{path}[{i}]"))
        return out
    return [(path, "list of numbers" if isinstance(sample, (list, tuple)) else _leaf(sample))]


def _is_number_list(obj: Sequence) -> bool:
    return bool(obj) and all(isinstance(x, numbers.Number) for x in obj)


def structure_mismatch(expected: Any, got: Any) -> Optional[str]:
    """The first difference between the structures of two samples (``None`` when they agree)."""
    a, b = sample_structure(expected), sample_structure(got)
    for (pa, da), (pb, db) in zip(a, b):
        if pa != pb or da != db:
            return f"{pb if pa == pb else pb + ' / ' + pa}: {db} where the real data has {da}"
    if len(a) != len(b):
        return f"{len(b)} parts where the real data has {len(a)}"
    return None


# -- the held-out check -------------------------------------------------------------------------------------------
def _first_index(digests: Sequence[bytes]) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for i, d in enumerate(digests):
        out.setdefault(d, i)
    return out


def index_by_digest(digests: Sequence[bytes]) -> Mapping[bytes, int]:
    """Digest -> first index with that digest (a :class:`TensorRowIndex` for a :class:`TensorRowDigests`)."""
    if isinstance(digests, TensorRowDigests):
        return TensorRowIndex(digests)
    return _first_index(digests)


def matches(heldout: Mapping[bytes, int], digests: Sequence[bytes]) -> list[tuple[int, int]]:
    """``(position in digests, held-out index)`` for every digest that is also a held-out sample's.

    Two ``TensorDataset`` s (a :class:`TensorRowIndex` and a :class:`TensorRowDigests`) are compared by row
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
    if isinstance(heldout, TensorRowIndex) and isinstance(digests, TensorRowDigests):
        return heldout.matches(digests)
    return [(i, heldout[d]) for i, d in enumerate(digests) if d in heldout]


__all__ = [
    "TensorRowDigests",
    "TensorRowIndex",
    "index_by_digest",
    "matches",
    "preserved_rng",
    "sample_digest",
    "sample_digests",
    "sample_structure",
    "structure_mismatch",
]
