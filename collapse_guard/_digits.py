"""scikit-learn's 8x8 digits split by one seeded permutation: the one loader of the demo, the loops' examples, the
reproductions and the benchmarks (same seed and sizes, same indices)."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import numpy as np


def split_digits_parts(seed: int, sizes: Mapping[str, Optional[int]]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """The 1797 real digits, permuted with ``numpy.random.default_rng(seed)`` and cut into consecutive parts.

    Args:
        seed: seed of the permutation.
        sizes: ``part name -> number of digits``, in order; ``None`` (last part only) takes the rest.

    Returns:
        ``part name -> (x, y)``: float32 ``(n, 64)`` pixels in ``0..16`` and int64 ``(n,)`` labels.

    Raises:
        ValueError: if a size is not a positive integer, ``None`` is not last, or the parts need more digits than
            there are.

    Example::

        >>> parts = split_digits_parts(0, {"train": 900, "val": 360, "test": None})
        >>> {k: x.shape for k, (x, _) in parts.items()}
        {'train': (900, 64), 'val': (360, 64), 'test': (537, 64)}
    """
    from collapse_guard._optional import require

    load_digits = require("sklearn.datasets", "demo", "the real digits of the demo").load_digits

    x, y = load_digits(return_X_y=True)
    names = list(sizes)
    counts = [sizes[k] for k in names]
    if any(c is None for c in counts[:-1]) or any(c is not None and (int(c) != c or c < 1) for c in counts):
        raise ValueError(f"`sizes` must be positive integers (None for the rest, last only), got {dict(sizes)}")
    if sum(c for c in counts if c is not None) + (counts[-1] is None) > len(x):
        raise ValueError(f"`sizes` {dict(sizes)} need more than the {len(x)} digits there are")
    perm = np.random.default_rng(seed).permutation(len(x))
    bounds = np.cumsum([0] + [c if c is not None else len(x) for c in counts])
    x, y = x.astype(np.float32), y.astype(np.int64)
    return {k: (x[perm[lo:hi]], y[perm[lo:hi]]) for k, lo, hi in zip(names, bounds[:-1], bounds[1:])}
