"""Blocks that read data without moving the user's random state."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


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


__all__ = ["preserved_rng"]
