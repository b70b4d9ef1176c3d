"""The canonical encoding of a sample and its content digest: equal for samples with equal structure and values.

Integer and boolean leaves are encoded as int64, floating leaves as float64, complex ones as complex128, so a float32
tensor and a float64 array with the same values have the same digest, as do a tuple and a list. The digest hashes
the structure (a signature string of kinds, shapes, keys) and the canonical bytes of the leaves, in order. Bulk
readers (:mod:`collapse_guard.data.row_digests`) rebuild the same two parts for whole rows of arrays at once.
"""
from __future__ import annotations

import hashlib
import numbers
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

DIGEST_SIZE = 16  # bytes of blake2b: collisions are out of reach for any data set size


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
    if not t.requires_grad and t.device.type == "cpu":
        try:
            arr = t.numpy()  # several times faster than torch's conversions for a small tensor
        except (TypeError, RuntimeError):  # bfloat16, complex32, conjugated views: torch converts them
            arr = None
        if arr is not None and arr.dtype.kind in "biufc":
            return _canonical_array(arr)  # type: ignore[return-value]
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

    Args:
        sample: any sample: tensors, arrays, numbers, strings, bytes, ``None`` and dicts, lists and tuples of them.

    Returns:
        The 16-byte blake2b digest of the sample's structure and canonical values.

    Example::

        sample_digest((torch.tensor([1.0, 2.0]), 3)) == sample_digest([np.array([1.0, 2.0]), torch.tensor(3)])
    """
    sig: list[str] = []
    chunks: list[bytes] = []
    _encode(sample, sig, chunks)
    return _digest("".join(sig), b"".join(chunks))


def canonical(part: Any) -> Optional[np.ndarray]:
    """A tensor or array in canonical form (see :func:`sample_digest`), or ``None`` when it is not numeric.

    Args:
        part: a tensor, array or number.

    Returns:
        The values as int64, float64 or complex128 by kind (booleans as int64), or ``None``.

    Example::

        canonical(torch.ones(2, dtype=torch.float16)).dtype  # float64
    """
    return _canonical_tensor(part) if isinstance(part, Tensor) else _canonical_array(np.asarray(part))


__all__ = ["DIGEST_SIZE", "canonical", "sample_digest"]
