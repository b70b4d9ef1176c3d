"""Bulk access to a dataset's rows: the arrays its samples are rows of, when it has them.

:func:`bulk_view` finds, through ``Subset`` s, the columns (tensors or numpy arrays, one row per sample) a dataset's
samples are made of, and the structure signature of its samples, so the digests of
:mod:`collapse_guard.data.digests` can read whole blocks of rows instead of one ``dataset[i]`` at a time. The
datasets with bulk access:

* a ``TensorDataset`` (its sample is the tuple of its tensors' rows);
* a numpy array (a ``np.memmap`` too) or a tensor passed as the dataset itself (its sample is a row);
* a ``torch.utils.data.StackDataset`` over arrays or tensors (its sample is a tuple or a dict of their rows);
* any ``Dataset`` with a ``row_arrays()`` method returning an array, a tuple or a dict of arrays (numpy, memory
  mapped or tensors) whose rows make its samples: ``dataset[i]`` equals ``row_arrays()[i]``, or the tuple / dict of
  every array's row ``i`` (the protocol a ``Dataset`` over a memory-mapped file can add in one line);
* an Arrow-backed Hugging Face ``datasets.Dataset`` whose columns are numbers or fixed-length lists of numbers
  (format ``None``, ``"numpy"`` or ``"torch"``), read column by column off its Arrow table.

A view only claims what its arrays say; :func:`~collapse_guard.data.digests.sample_digests` checks it against
``dataset[i]`` on a few rows and reads sample by sample when they disagree (a transform in ``__getitem__``).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from collapse_guard.data.canonical import _array_tag, canonical

try:  # torch >= 2.1
    from torch.utils.data import StackDataset
except ImportError:  # pragma: no cover - older torch
    StackDataset = None


@dataclass
class BulkView:
    """The rows behind a dataset's samples (built by :func:`bulk_view`).

    Attributes:
        columns: tensors or numpy arrays with one row per sample of ``base``, in the order their canonical bytes
            enter a sample's digest.
        rows: the rows of ``base`` the dataset's samples are, in order (``None``: all of them).
        signature: the structure part of every sample's digest.
        base: the dataset under the ``Subset`` s, whose ``base[rows[i]]`` is the dataset's sample ``i``.
        kind: ``"tensor"``, ``"array"`` or ``"hf"``.
        key: what identifies ``base``'s content for the digest cache, apart from a content sample.
    """

    columns: list
    rows: Optional[np.ndarray]
    signature: str
    base: Any
    kind: str
    key: tuple


def unwrap_subsets(dataset: Any, indices: Optional[np.ndarray]) -> tuple[Any, Optional[np.ndarray]]:
    """``(base dataset, its rows)`` under nested ``Subset`` s.

    Args:
        dataset: a dataset, perhaps a ``Subset`` of ``Subset`` s.
        indices: positions in ``dataset`` (``None``: all of them).

    Returns:
        The dataset under the ``Subset`` s and the rows of it that ``dataset[indices]`` are (``None``: all of them,
        when there was no ``Subset`` and no ``indices``).

    Example::

        unwrap_subsets(Subset(Subset(ds, [5, 6, 7]), [2, 0]), None)  # (ds, array([7, 5]))
    """
    while isinstance(dataset, Subset):
        sub = np.asarray(dataset.indices, dtype=np.int64)
        indices = sub if indices is None else sub[indices]
        dataset = dataset.dataset
    return dataset, indices


def _is_array(obj: Any) -> bool:
    return isinstance(obj, (np.ndarray, Tensor)) and obj.ndim >= 1


def _tag(column: Any) -> Optional[str]:
    """The digest tag of one row of ``column`` (a tensor or array), ``None`` when it is not numeric."""
    if not len(column):
        return None
    row = canonical(column[0:1])
    return None if row is None else _array_tag(row[0])


def _structured(arrays: Any) -> Optional[tuple[list, str]]:
    """``(columns in digest order, signature)`` of samples made of ``arrays``: one array (a row), a tuple or list of
    arrays (a tuple of rows) or a dict of them (a dict of rows)."""
    if _is_array(arrays):
        tag = _tag(arrays)
        return None if tag is None else ([arrays], tag)
    if isinstance(arrays, dict) and arrays and all(_is_array(a) for a in arrays.values()):
        keys = sorted(arrays, key=str)
        tags = [_tag(arrays[k]) for k in keys]
        if None in tags:
            return None
        return [arrays[k] for k in keys], "".join(["{", *(f"{k!r}:{t}" for k, t in zip(keys, tags)), "}"])
    if isinstance(arrays, (tuple, list)) and arrays and all(_is_array(a) for a in arrays):
        tags = [_tag(a) for a in arrays]
        if None in tags:
            return None
        return list(arrays), "".join(["(", *tags, ")"])
    return None


def _array_key(columns: Sequence[Any]) -> tuple:
    """What identifies arrays' storage: shape, dtype, and a tensor's address and version, a memmap's file and its
    modification time, or an array's address."""
    key = []
    for c in columns:
        if isinstance(c, Tensor):
            key.append(("t", tuple(c.shape), str(c.dtype), c.data_ptr(), c._version))
            continue
        where: tuple = (c.__array_interface__["data"][0],)
        base = c
        while base is not None and not isinstance(base, np.memmap):
            base = getattr(base, "base", None)
        if base is not None and getattr(base, "filename", None):
            try:
                where = (str(base.filename), getattr(base, "offset", 0), os.path.getmtime(base.filename))
            except OSError:
                pass
        key.append(("a", tuple(c.shape), str(c.dtype), where))
    return tuple(key)


def _arrays_of(base: Any) -> Optional[tuple[Any, str]]:
    """The arrays a (non-Hugging Face) dataset's samples are rows of, and the kind of view."""
    if isinstance(base, TensorDataset) and base.tensors:
        return tuple(base.tensors), "tensor"
    if _is_array(base):
        return base, "array"
    if StackDataset is not None and isinstance(base, StackDataset):
        parts = base.datasets
        values = parts.values() if isinstance(parts, dict) else parts
        return (parts, "array") if all(_is_array(p) for p in values) else None
    row_arrays = getattr(base, "row_arrays", None)
    if callable(row_arrays):
        return row_arrays(), "array"
    return None


def bulk_view(dataset: Dataset, indices: Optional[np.ndarray] = None) -> Optional[BulkView]:
    """The rows behind ``dataset[i]`` for ``i`` in ``indices`` (default: all), or ``None`` without bulk access.

    Args:
        dataset: a map-style dataset (see the module docstring for those with bulk access).
        indices: positions in ``dataset`` (int64); ``None`` for all of them.

    Returns:
        A :class:`BulkView`, unchecked against ``dataset[i]``; ``None`` when the dataset has no bulk access.

    Example::

        view = bulk_view(TensorDataset(torch.zeros(4, 2), torch.arange(4)))
        view.signature  # '(f(2,)i())'
    """
    base, rows = unwrap_subsets(dataset, indices)
    if "datasets" in sys.modules:
        import datasets

        if isinstance(base, datasets.Dataset):
            columns = hf_columns(base)
            if columns is None:
                return None
            found = _structured(columns)
            key = ("hf", base._fingerprint, len(base), repr(base.format))
            return None if found is None else BulkView(found[0], rows, found[1], base, "hf", key)
    arrays = _arrays_of(base)
    if arrays is None:
        return None
    found = _structured(arrays[0])
    if found is None or any(len(c) != len(base) for c in found[0]):
        return None
    return BulkView(found[0], rows, found[1], base, arrays[1], (arrays[1], _array_key(found[0])))


# -- Hugging Face: columns off the Arrow table --------------------------------------------------------------------
def _arrow_numpy(array: Any) -> Optional[np.ndarray]:
    """A numeric Arrow array (numbers, or lists of one length, nested) as a numpy array, else ``None``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if array.null_count:
        return None
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return array.to_numpy(zero_copy_only=False)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        n = len(array)
        if not n:
            return None
        lengths = pc.list_value_length(array)
        width = pc.min_max(lengths)
        if width["min"].as_py() != width["max"].as_py():
            return None  # ragged: rows of other shapes
        inner = _arrow_numpy(array.flatten())
        return None if inner is None else inner.reshape(n, width["min"].as_py(), *inner.shape[1:])
    return None


def hf_columns(dataset: Any) -> Optional[dict[str, np.ndarray]]:
    """The columns ``dataset[i]`` returns, as numpy arrays read off the Arrow table, when all are numeric.

    Formats ``None``, ``"python"``, ``"numpy"`` and ``"torch"`` without format arguments; ``None`` for any other
    format, a transform or a column that is not numbers or lists of one length of numbers. The numpy and torch
    formats turn floats into float32: so do the columns here.

    Args:
        dataset: a Hugging Face ``datasets.Dataset`` (its indices mapping, from ``select``, is applied).

    Returns:
        Column name -> array with one row per sample, or ``None``.

    Example::

        hf_columns(datasets.Dataset.from_dict({"x": np.zeros((4, 3))}))["x"].shape  # (4, 3)
    """
    fmt = dataset.format
    if fmt.get("type") not in (None, "python", "numpy", "np", "torch", "pt") or fmt.get("format_kwargs") \
            or fmt.get("output_all_columns"):
        return None
    names = fmt.get("columns") or dataset.column_names
    if not names or not len(dataset):
        return None
    table = dataset.with_format("arrow")[0:len(dataset)]  # the dataset's indices mapping applied
    out = {}
    for name in names:
        column = _arrow_numpy(table.column(name).combine_chunks())
        if column is None:
            return None
        if fmt.get("type") in ("torch", "pt", "numpy", "np") and column.dtype.kind == "f":
            column = column.astype(np.float32, copy=False)
        out[name] = column
    return out


__all__ = ["BulkView", "bulk_view", "hf_columns", "unwrap_subsets"]
