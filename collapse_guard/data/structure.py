"""Sample structure: what must agree between sources whose samples are mixed into one batch.

:func:`sample_structure` describes a sample's containers and leaf types (dtype and number of dimensions, not
sizes), so sources can be compared before training; :func:`structure_mismatch` names the first difference;
:func:`non_finite_part` names a part holding NaN or an infinity.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def _leaf(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"Tensor[{str(obj.dtype).replace('torch.', '')}, {obj.dim()}-d]"
    if isinstance(obj, np.ndarray):
        return f"ndarray[{obj.dtype}, {obj.ndim}-d]"
    if isinstance(obj, np.generic):
        return f"numpy {obj.dtype}"
    return type(obj).__name__


def _parts(sample: Any, path: str = "sample") -> Iterator[tuple[str, Any]]:
    """``(path, part)`` of ``sample`` and of every part inside it, each container before its items (dict items
    in key order); a list or tuple of numbers is one part."""
    yield path, sample
    if isinstance(sample, dict):
        for k in sorted(sample, key=str):
            yield from _parts(sample[k], f"{path}[{k!r}]")
    elif isinstance(sample, (list, tuple)) and not _is_number_list(sample):
        for i, item in enumerate(sample):
            yield from _parts(item, f"{path}[{i}]")


def _description(part: Any) -> str:
    if isinstance(part, dict):
        return f"dict with keys {sorted(map(str, part))}"
    if isinstance(part, (list, tuple)):
        return "list of numbers" if _is_number_list(part) else f"sequence of {len(part)}"
    return _leaf(part)


def sample_structure(sample: Any, path: str = "sample") -> list[tuple[str, str]]:
    """``(path, description)`` of every container and leaf of ``sample``: what must agree across sources.

    Containers are described by kind and length (tuples and lists alike) or keys; leaves by type, dtype and number
    of dimensions. Sizes are left out: a padding collate may batch samples of different lengths.
    """
    return [(p, _description(part)) for p, part in _parts(sample, path)]


def _all_finite(part: Any) -> bool:
    if isinstance(part, Tensor):
        return not (part.is_floating_point() or part.is_complex()) or bool(torch.isfinite(part).all())
    if isinstance(part, (np.ndarray, np.generic)):
        return not np.issubdtype(part.dtype, np.inexact) or bool(np.isfinite(part).all())
    if isinstance(part, (list, tuple)):
        return all(_all_finite(x) for x in part)
    return not isinstance(part, numbers.Real) or math.isfinite(part)


def non_finite_part(sample: Any) -> Optional[str]:
    """The path of the first floating part of ``sample`` holding NaN or an infinity (``None``: every value is
    finite), with its description, e.g. ``"sample[0] (Tensor[float32, 1-d])"``."""
    for path, part in _parts(sample):
        if not isinstance(part, (dict, tuple, list)) or _is_number_list(part):
            if not _all_finite(part):
                return f"{path} ({_description(part)})"
    return None


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


__all__ = ["non_finite_part", "sample_structure", "structure_mismatch"]
