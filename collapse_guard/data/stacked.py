"""Rows of a dataset without bulk access, read once and stacked into arrays, so they are hashed in bulk.

A large real dataset without bulk access (a ``Dataset`` whose ``__getitem__`` is all there is) must still be
compared with the held-out real data at set-up. Reading its samples is unavoidable; hashing them one by one costs
twice the reading. :func:`stack_rows` reads every sample once and, when all samples share one structure of numeric
leaves (tensors, arrays, numbers in tuples, lists and dicts, of fixed shapes and dtypes), stacks each leaf into a
column: the columns then go through the bulk digests of :mod:`collapse_guard.data.digests` (row fingerprints, a
block of rows at a time). A sample of another structure, a string or a leaf of another shape ends the attempt
(``None``: the caller hashes sample by sample).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from collapse_guard.data.canonical import _encode, _numeric_list

#: at most this many bytes of stacked columns (in the samples' own dtypes); larger datasets are hashed one by one
STACK_BUDGET_BYTES = 1 << 28


def _leaves(obj: Any, out: list, shape: list) -> bool:
    """Append ``obj``'s numeric leaves to ``out`` and their structure to ``shape``, in digest order; ``False`` when
    a part cannot be stacked."""
    if isinstance(obj, Tensor):
        out.append(obj)
        shape.append((obj.dtype, obj.shape))
    elif isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in "biufc":
            return False
        out.append(obj)
        shape.append((obj.dtype, obj.shape))
    elif isinstance(obj, (bool, int, float)):
        out.append(obj)
        shape.append(type(obj))
    elif isinstance(obj, dict):
        keys = sorted(obj, key=str)
        shape.append(("{", tuple(keys)))
        return all(_leaves(obj[k], out, shape) for k in keys)
    elif isinstance(obj, (list, tuple)):
        if _numeric_list(obj) is not None:
            return False  # a list of plain numbers is one array leaf: not worth the special case
        shape.append(("(", len(obj)))
        return all(_leaves(item, out, shape) for item in obj)
    else:
        return False
    return True


def _flat(sample: Any, keys: Optional[tuple]) -> Optional[list]:
    """The leaves of a sample that is one array, a tuple / list of arrays, or a dict of arrays (``keys`` sorted):
    the common case, checked without recursion; ``None`` for any other sample."""
    if isinstance(sample, (Tensor, np.ndarray)):
        return [sample]
    if keys is not None:
        if type(sample) is not dict or len(sample) != len(keys):
            return None
        leaves = [sample.get(k) for k in keys]
    elif isinstance(sample, (tuple, list)):
        leaves = list(sample)
    else:
        return None
    return leaves if all(isinstance(leaf, (Tensor, np.ndarray)) for leaf in leaves) else None


def _column(parts: list) -> Optional[Any]:
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.stack(parts)
    if isinstance(first, np.ndarray):
        return np.stack(parts)
    column = np.asarray(parts)
    return column if column.dtype.kind in "biufc" else None


def stack_rows(read: Callable[[int], Any], n: int, progress: Optional[Callable[[int], None]] = None
               ) -> Optional[tuple[list, str, list]]:
    """Read samples ``read(0) .. read(n - 1)`` once and stack their leaves into columns.

    Args:
        read: ``i -> sample``.
        n: the number of samples.
        progress: called now and then with the number of samples read.

    Returns:
        ``(columns, signature, first samples)``: one column per leaf in digest order, the structure part of every
        sample's digest, and the first few samples read (to check the columns against); ``None`` when the samples
        cannot be stacked (other structures, non-numeric leaves, or more than ``STACK_BUDGET_BYTES``).

    Example::

        columns, signature, firsts = stack_rows(lambda i: dataset[i], len(dataset))
    """
    if n == 0:
        return None
    first = read(0)
    leaves: list = []
    shape: list = []
    if not _leaves(first, leaves, shape) or not leaves:
        return None
    row_bytes = sum(np.asarray(leaf).nbytes if not isinstance(leaf, Tensor) else leaf.element_size() * leaf.numel()
                    for leaf in leaves)
    if row_bytes * n > STACK_BUDGET_BYTES:
        return None
    sig: list[str] = []
    _encode(first, sig, [])
    columns: list[list] = [[leaf] for leaf in leaves]
    firsts = [first]
    keys = tuple(sorted(first, key=str)) if isinstance(first, dict) else None
    flat = _flat(first, keys) is not None
    shapes = [(leaf.dtype, leaf.shape) for leaf in leaves] if flat else None
    for i in range(1, n):
        sample = read(i)
        if flat:  # one array, or a tuple or dict of arrays
            got = _flat(sample, keys)
            if got is None or len(got) != len(shapes) or [(g.dtype, g.shape) for g in got] != shapes:
                return None
        else:
            got, got_shape = [], []
            if not _leaves(sample, got, got_shape) or got_shape != shape:
                return None
        for column, leaf in zip(columns, got):
            column.append(leaf)
        if i < 8:
            firsts.append(sample)
        if progress is not None and not i % 4096:
            progress(i)
    stacked = [_column(c) for c in columns]
    if any(c is None or not isinstance(c, (Tensor, np.ndarray)) or len(c) != n for c in stacked):
        return None
    return stacked, "".join(sig), firsts


__all__ = ["STACK_BUDGET_BYTES", "stack_rows"]
