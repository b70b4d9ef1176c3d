"""Splits and index layout: held-out real, reserve and held-out synthetic data, and one dataset of every source.

The layout concatenates, in this order, the real dataset, the reserve (when it is a Dataset of its own) and every
synthetic source (a stream followed by the held-out samples read off it), and numbers each sample by its position
in that concatenation. All random splits draw from one generator seeded with the datamodule's ``seed``, in a fixed
order (held-out real, reserve, then each map-style synthetic source), so the layout is a function of the data and
the seed alone.

:func:`lay_out` is the one entry: it validates and dispatches every synthetic source to the map-style path (a
seeded split by index) or the stream path (slot indices; the held-out part chosen by content, see
:mod:`collapse_guard.data.streams`), as ``datasets.interleave_datasets`` dispatches map-style and iterable datasets.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset

from collapse_guard.data.sources import DataSource, as_map_dataset

REAL, RESERVE = "real", "reserve"  # the names of the real training data and of the reserve, as sources


def split_off(indices: Tensor, fraction: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split ``indices`` at random into ``(kept, taken)``, ``round(fraction * n)`` taken.

    Args:
        indices: long tensor of indices.
        fraction: share to take, in ``[0, 1]``.
        gen: the generator to draw the permutation with (moved by one ``randperm``).

    Returns:
        ``kept`` sorted, ``taken`` in the drawn order.

    Example::

        kept, taken = split_off(torch.arange(10), 0.2, torch.Generator().manual_seed(0))  # 8 and 2 indices
    """
    perm = indices[torch.randperm(len(indices), generator=gen)]
    n_take = int(round(fraction * len(indices)))
    return perm[n_take:].sort().values, perm[:n_take]


@dataclass
class Layout:
    """Where every sample of a :class:`~collapse_guard.MixedDataModule` is (built by :func:`lay_out`).

    Attributes:
        datasets: the datasets concatenated into the training set, in index order.
        sources: every source in id order: ``real``, ``reserve``, then the synthetic ones.
        real_pool: long tensor of real training indices.
        reserve_order: long tensor of reserve indices, in the seeded order they are injected.
        reserve_data: the reserve as a dataset (a ``Subset`` of the real data, or the given Dataset).
        heldout_real: the held-out real dataset.
        synthetic_pools: one long tensor of training indices per synthetic source.
        heldout_synthetic: indices of the held-out synthetic samples.
        spans: ``(start, stop)`` of every synthetic source's indices.
        size: number of indices (the training set's length).
    """

    datasets: list[Dataset]
    sources: list[DataSource]
    real_pool: Tensor
    reserve_order: Tensor
    reserve_data: Dataset
    heldout_real: Dataset
    synthetic_pools: list[Tensor] = field(default_factory=list)
    heldout_synthetic: list[int] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    size: int = 0

    @property
    def synthetic(self) -> list[DataSource]:
        """The synthetic sources, in id order."""
        return self.sources[2:]

    def source_of(self) -> Tensor:
        """Int16 tensor mapping every index to the id of its source (its position in :attr:`sources`)."""
        ids = {source.name: i for i, source in enumerate(self.sources)}
        source_of = torch.zeros(self.size, dtype=torch.int16)
        source_of[self.reserve_order] = ids[RESERVE]
        for source, (start, stop) in zip(self.synthetic, self.spans):
            source_of[start:stop] = ids[source.name]
        return source_of

    def train_set(self) -> ConcatDataset:
        return ConcatDataset(self.datasets)


def validation_set(datamodule: Any) -> Dataset:
    """The map-style validation set of the real ``datamodule`` (its first validation loader's dataset).

    Raises:
        ValueError: the datamodule gives no map-style, non-empty validation set.
    """
    loader = datamodule.val_dataloader()
    if isinstance(loader, (list, tuple)) and loader:
        loader = loader[0]
    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
        raise ValueError(
            f'`holdout="val"`: {type(datamodule).__name__}.val_dataloader() gives no map-style validation set '
            "to hold out. Pass a fraction (e.g. holdout=0.2) or a held-out Dataset."
        )
    return dataset


def split_real(
    real_dataset: Dataset,
    holdout: Union[float, str, Dataset],
    reserve: Union[float, Dataset],
    gen: torch.Generator,
    val_set: Optional[Callable[[], Dataset]] = None,
) -> Layout:
    """Split held-out real data and the reserve off ``real_dataset``: the real part of the layout.

    Args:
        real_dataset: the real training data (map-style).
        holdout: ``"val"`` (then ``val_set()`` is the held-out data), a fraction in ``[0, 1)`` or a Dataset.
        reserve: a fraction in ``[0, 1)`` of the real data left after the holdout, or a Dataset.
        gen: the layout's generator (the holdout split, then the reserve split or order).
        val_set: returns the real DataModule's validation set (for ``holdout="val"``).

    Raises:
        ValueError: the held-out real set is empty.
    """
    real_idx = torch.arange(len(real_dataset))
    if holdout == "val":
        heldout_real = val_set()
    elif isinstance(holdout, numbers.Real):
        real_idx, taken = split_off(real_idx, float(holdout), gen)
        heldout_real = Subset(real_dataset, taken.sort().values.tolist())
    else:
        heldout_real = as_map_dataset(holdout, "holdout")
    if len(heldout_real) == 0:
        raise ValueError(
            f"`holdout={holdout!r}` leaves no held-out real samples, and every check needs some: pass a "
            "larger fraction (e.g. holdout=0.2) or a held-out Dataset."
        )
    datasets: list[Dataset] = [real_dataset]
    if isinstance(reserve, numbers.Real):
        real_idx, reserve_idx = split_off(real_idx, float(reserve), gen)
        reserve_data = Subset(real_dataset, reserve_idx.tolist())
    else:
        reserve_data = as_map_dataset(reserve, "reserve")
        reserve_idx = torch.randperm(len(reserve_data), generator=gen) + len(real_dataset)
        datasets.append(reserve_data)
    sources = [DataSource(REAL, real_dataset, is_real=True), DataSource(RESERVE, reserve_data, is_real=True)]
    size = sum(len(d) for d in datasets)
    return Layout(datasets, sources, real_idx, reserve_idx, reserve_data, heldout_real, size=size)


def add_source(
    layout: Layout,
    source: DataSource,
    gen: torch.Generator,
    synthetic_holdout: float,
    stream_heldout: Callable[[Any], Optional[Dataset]],
) -> None:
    """Lay out one synthetic source after the others: dispatch to the stream or the map-style path.

    Args:
        layout: the layout so far (extended in place).
        source: the synthetic source (a stream already wrapped in a ``StreamDataset``).
        gen: the layout's generator (a map-style source's held-out split).
        synthetic_holdout: share of a map-style source held out, in ``[0, 1)``.
        stream_heldout: ``stream -> held-out samples as a dataset, or None`` (read off a stream at set-up).

    Raises:
        ValueError: a map-style source with no training samples left after ``synthetic_holdout``.
    """
    start = layout.size
    if source.streaming:
        train_idx = _add_stream(layout, source, stream_heldout)
    else:
        train_idx = _add_map_source(layout, source, gen, synthetic_holdout)
    layout.synthetic_pools.append(train_idx)
    layout.spans.append((start, layout.size))
    layout.sources.append(source)


def _add_stream(layout: Layout, source: DataSource, stream_heldout: Callable[[Any], Optional[Dataset]]) -> Tensor:
    """Slot indices; the held-out part is chosen by content (see data/streams.py) and stored after them."""
    train_idx = torch.arange(len(source)) + layout.size
    layout.datasets.append(source.dataset)
    layout.size += len(source)
    held = stream_heldout(source.dataset)
    if held is not None:
        layout.heldout_synthetic.extend(range(layout.size, layout.size + len(held)))
        layout.datasets.append(held)
        layout.size += len(held)
    return train_idx


def _add_map_source(layout: Layout, source: DataSource, gen: torch.Generator, synthetic_holdout: float) -> Tensor:
    """A seeded split by index: ``synthetic_holdout`` of the source held out."""
    train_idx, held_idx = split_off(torch.arange(len(source)) + layout.size, synthetic_holdout, gen)
    if len(train_idx) == 0:
        raise ValueError(f"synthetic source {source.name!r} has no samples left after `synthetic_holdout`.")
    layout.heldout_synthetic.extend(held_idx.sort().values.tolist())
    layout.datasets.append(source.dataset)
    layout.size += len(source)
    return train_idx


def lay_out(
    real: Layout,
    synthetic: Sequence[DataSource],
    gen: torch.Generator,
    synthetic_holdout: float,
    stream_heldout: Callable[[Any], Optional[Dataset]],
) -> Layout:
    """Add every synthetic source to the real layout of :func:`split_real`, then check that training has data.

    Raises:
        ValueError: a source with no training samples left; no real training samples left after ``holdout`` and
            ``reserve``.
    """
    for source in synthetic:
        add_source(real, source, gen, synthetic_holdout, stream_heldout)
    if len(real.real_pool) == 0 and len(real.reserve_order) == 0:
        raise ValueError(
            f"`real` has no training samples left after `holdout` and `reserve` ({len(real.datasets[0])} real "
            "samples): lower them, or give more real data."
        )
    return real


def synthetic_weights(synthetic: Sequence[DataSource], weights: Optional[Mapping[str, float]]) -> Optional[Tensor]:
    """The relative share of every synthetic source: ``weights`` by name, equal shares when a source streams and no
    weights are given, else ``None`` (proportional to size).

    Raises:
        ValueError: ``weights`` names an unknown source, has a negative value or sums to zero.
    """
    if weights is None:
        return torch.ones(len(synthetic)) if any(s.streaming for s in synthetic) else None
    unknown = set(weights) - {s.name for s in synthetic}
    if unknown:
        raise ValueError(f"`synthetic_weights` names unknown sources {sorted(unknown)}.")
    out = torch.tensor([float(weights.get(s.name, 0.0)) for s in synthetic])
    if (out < 0).any() or out.sum() <= 0:
        raise ValueError("`synthetic_weights` must be non-negative with a positive sum.")
    return out
