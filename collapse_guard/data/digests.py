"""Content digests of samples: equal for samples with equal structure and values.

:func:`sample_digests` hashes the content of every sample (every tensor, ndarray, number and string leaf, in a
canonical form), so held-out real data can be compared with the training data by content, not by index (see
:mod:`collapse_guard.data.row_index` for the comparison, :mod:`collapse_guard.data.checks` for the check).

The canonical form makes the digest depend on values, not on storage: integer and boolean leaves are hashed as
int64, floating leaves as float64, so a float32 tensor and a float64 array with the same values have the same
digest, as do a tuple and a list. Only exact copies match: a near-duplicate (a generated sample a little off a
real one) needs a feature-space measure instead.

Two fast paths: a ``TensorDataset`` (also inside ``Subset``) gives a lazy :class:`TensorRowDigests` (each digest
computed when read, and 64-bit row fingerprints that :mod:`~collapse_guard.data.row_index` compares without
computing digests at all); a Hugging Face ``datasets.Dataset`` is read a chunk of rows at a time.
"""
from __future__ import annotations

import hashlib
import numbers
import sys
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



__all__ = ["DIGEST_SIZE", "TensorRowDigests", "sample_digest", "sample_digests"]
