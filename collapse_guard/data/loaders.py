"""The loaders of a :class:`~collapse_guard.MixedDataModule`: sharding between ranks and seeded subsets.

Functions of explicit inputs; the datamodule builds its five loaders (training, validation, test, held-out real,
held-out synthetic, synthetic training) from them with the user's collate, workers and memory pinning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from collapse_guard._compat import is_datamodule
from collapse_guard.data.mixing import MixingState
from collapse_guard.data.sources import LoaderSettings, as_map_dataset, datamodule_train_loader, loader_settings
from collapse_guard.data.streams import ListDataset


@dataclass
class LoaderOptions:
    """What every loader of the datamodule shares: the user's collate, batch size, workers and memory pinning."""

    collate_fn: Optional[Callable]
    batch_size: int
    num_workers: int
    pin_memory: bool

    def loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        """A ``DataLoader`` of ``dataset`` with these options (``kwargs``: ``batch_sampler``, ``batch_size``, ...)."""
        return DataLoader(
            dataset,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )


def real_training_data(
    real: Any, collate_fn: Optional[Callable], batch_size: Optional[int], num_workers: Optional[int],
    default_batch_size: int,
) -> tuple[Dataset, LoaderOptions]:
    """The real training dataset and the loader options: those given, else the real DataModule's training loader's.

    Args:
        real: the real data: a ``LightningDataModule`` (set up for fitting here) or a map-style dataset.
        collate_fn: the collate function given (``None``: the real loader's).
        batch_size: the batch size given (``None``: the real loader's, else ``default_batch_size``).
        num_workers: the DataLoader workers given (``None``: the real loader's, else 0).
        default_batch_size: the batch size when neither is given.

    Raises:
        ValueError: the real DataModule's training loader has no samples.
        TypeError: ``real`` is not a DataModule and not map-style (see ``as_map_dataset``).
    """
    settings = LoaderSettings()
    if is_datamodule(real):
        real_loader = datamodule_train_loader(real, "real")
        dataset = real_loader.dataset
        settings = loader_settings(real_loader)
        if hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError(
                f"`real` is empty: {type(real).__name__}.train_dataloader() has no samples; give it at least one."
            )
    else:
        dataset = as_map_dataset(real, "real")
    options = LoaderOptions(
        collate_fn or settings.collate_fn,
        batch_size or settings.batch_size or default_batch_size,
        settings.num_workers if num_workers is None else num_workers,
        settings.pin_memory,
    )
    return dataset, options


def shard(dataset: Dataset, world_size: int, rank: int, enabled: Optional[bool] = None) -> Dataset:
    """Every ``world_size``-th sample of ``dataset`` from ``rank`` on (no padding, no sample on two ranks).

    ``enabled=False``, or one process, gives the whole dataset.

    Example::

        shard(ds, world_size=4, rank=1)  # samples 1, 5, 9, ...
    """
    if enabled is False or world_size <= 1:
        return dataset
    return Subset(dataset, list(range(rank, len(dataset), world_size)))


def seeded_subset(n: int, k: int, seed: int) -> torch.Tensor:
    """``k`` of the positions ``0..n-1``, sorted, drawn with ``seed`` (the same at every call).

    Example::

        seeded_subset(10, 3, seed=0)  # three sorted positions, the same at every call
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:k].sort().values


def synthetic_training_set(
    train_set: Dataset, mixer: Optional[MixingState], max_samples: Optional[int], seed: int
) -> Optional[Dataset]:
    """The synthetic samples of the training pools, in pool order: a seeded subset of at most ``max_samples``.

    A streaming source gives its first training samples, as many as its slots in the subset, read through a
    separate iterator: the same samples at every call, and the stream's training position does not move.

    Returns:
        The dataset, or ``None`` before set-up (``mixer`` is ``None``) or when no synthetic source has samples.
    """
    pools = [p for p in (mixer.synthetic_pools if mixer is not None else []) if len(p)]
    if not pools:
        return None
    pool = torch.cat(pools)
    if max_samples is not None and max_samples < len(pool):
        pool = pool[seeded_subset(len(pool), max_samples, seed)]
    streams = mixer.stream_ids
    if not streams:
        return Subset(train_set, pool.tolist())
    of = mixer.source_of[pool].long()  # a stream's slots would read training's next samples: take its first ones
    on_stream = torch.isin(of, torch.tensor(streams))
    parts = [Subset(train_set, pool[~on_stream].tolist())]
    parts += [ListDataset(mixer.sources[sid].dataset.training_samples(int((of == sid).sum()))) for sid in streams]
    return ConcatDataset([part for part in parts if len(part)])


def epoch_to_run(trainer: Any) -> Optional[int]:
    """The epoch the Trainer's fit loop runs next (``None`` without one): the value Lightning gives the sampler's
    ``set_epoch`` at the epoch's start, known already when the epoch's iterator is created."""
    loop = getattr(trainer, "fit_loop", None) if trainer is not None else None
    progress = getattr(loop, "epoch_progress", None)
    return int(progress.current.processed) if progress is not None else None
