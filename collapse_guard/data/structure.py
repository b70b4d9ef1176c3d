"""Sample structure: what must agree between sources whose samples are mixed into one batch.

:func:`sample_structure` describes a sample's containers and leaf types (dtype and number of dimensions, not
sizes), so sources can be compared before training; :func:`structure_mismatch` names the first difference.
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import numpy as np
from torch import Tensor


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


__all__ = ["sample_structure", "structure_mismatch"]
