"""The provenance-column constructor: one dataset whose column tells each sample's source, as a data module.

``MixedDataModule.from_provenance_column`` is :func:`from_provenance_column` bound as a classmethod.
"""
from __future__ import annotations

from typing import Any, Sequence

from collapse_guard.data.sources import split_by_provenance


def from_provenance_column(
    cls: type,
    dataset: Any,
    column: str = "source",
    real_values: Sequence[Any] = ("real",),
    keep_column: bool = False,
    **kwargs: Any,
):
    """A ``MixedDataModule`` over one dataset whose ``column`` tells each sample's source.

    The samples whose ``column`` value is in ``real_values`` are the real data; every other value becomes a
    synthetic source named by it (a string value as it is, another value as ``"<column>=<value>"``, e.g.
    ``"is_synthetic=True"``), with ``{"provenance_column": column, "value": value}`` as its recorded
    parameters. The column is removed from the samples the model sees unless ``keep_column=True``.

    Args:
        cls: the ``MixedDataModule`` class to build (bound by the classmethod).
        dataset: a ``datasets.Dataset`` (read column-wise, split with ``select``), or a map-style torch
            ``Dataset`` whose samples are dicts (read sample by sample once).
        column: the provenance column (``"source"``, ``"is_synthetic"``, ``"generation"``, ...).
        real_values: the values that mark real samples (``(False,)`` for an ``is_synthetic`` column,
            ``(0,)`` for a ``generation`` column).
        keep_column: leave the column in the samples (and the batches).
        **kwargs: the other arguments of ``MixedDataModule`` (``real_fraction``, ``holdout``, ...);
            ``holdout`` is a fraction (default here: 0.2) or a Dataset, as there is no validation set to take.

    Returns:
        The ``MixedDataModule`` (of the class it is called on).

    Raises:
        ValueError: when no sample carries a real value, or ``kwargs`` gives ``real`` or ``synthetic``.
        TypeError: for a streaming dataset, or samples that are not dicts holding ``column``.

    Example::

        ds = datasets.Dataset.from_dict({"pixels": x, "label": y, "source": src}).with_format("torch")
        dm = MixedDataModule.from_provenance_column(ds, column="source", real_values=("real",),
                                                    real_fraction=0.3, holdout=0.2)
    """
    for name in ("real", "synthetic"):
        if name in kwargs:
            raise ValueError(f"from_provenance_column() builds `{name}` from the column; do not pass it.")
    real, synthetic = split_by_provenance(dataset, column, real_values, keep_column)
    kwargs.setdefault("holdout", 0.2)
    return cls(real=real, synthetic=synthetic or None, **kwargs)
