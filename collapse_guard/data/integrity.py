"""Content checks of the data a :class:`~collapse_guard.MixedDataModule` mixes: the names of one import.

Each job has its module: content digests (:mod:`collapse_guard.data.digests`), the digest index and its matches
(:mod:`collapse_guard.data.row_index`), sample structure (:mod:`collapse_guard.data.structure`), and the guard of
the global random generators (:mod:`collapse_guard._rng`). This module re-exports their names, so
``from collapse_guard.data.integrity import ...`` keeps working.
"""
from collapse_guard._rng import preserved_rng
from collapse_guard.data.digests import TensorRowDigests, sample_digest, sample_digests
from collapse_guard.data.row_index import TensorRowIndex, index_by_digest, matches
from collapse_guard.data.structure import sample_structure, structure_mismatch

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
