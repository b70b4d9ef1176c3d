"""Adapt the user's data to one source interface with provenance.

A source is a map-style dataset plus what we know of where it came from: a name, whether it is real or
synthetic, the generator that made it and its generation. Accepted inputs: a torch ``Dataset`` (with
``__len__``), a Hugging Face ``datasets.Dataset``, a ``LightningDataModule`` (its training set), or a
:class:`SyntheticSource` that wraps one of these with provenance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from torch.utils.data import DataLoader, Dataset

from collapse_guard._compat import LightningDataModule


@dataclass
class SyntheticSource:
    """A synthetic dataset with its provenance, for :class:`~collapse_guard.MixedDataModule`.

    Args:
        data: a torch ``Dataset`` with ``__len__``, a ``datasets.Dataset`` or a ``LightningDataModule``.
        generator: what produced the data (a model name, a class, free text); recorded, never called.
        generation: how many rounds of training on generated data separate this source from real data
            (1 = made by a model trained on real data), or ``None`` when unknown.
        params: the generator's parameters as the user wants them recorded (temperature, checkpoint, ...).

    Example::

        SyntheticSource(gen_ds, generator="GMM(k=4)", generation=3, params={"samples": 500})
    """

    data: Any
    generator: Optional[str] = None
    generation: Optional[int] = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class DataSource:
    """A resolved source: a map-style dataset and its provenance (built by :func:`resolve_source`)."""

    name: str
    dataset: Dataset
    is_real: bool
    generator: Optional[str] = None
    generation: Optional[int] = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def provenance(self) -> dict:
        """JSON-ready provenance record of this source."""
        return {
            "name": self.name,
            "kind": "real" if self.is_real else "synthetic",
            "generator": self.generator,
            "generation": self.generation,
            "params": dict(self.params),
            "size": len(self),
        }


@dataclass
class LoaderSettings:
    """What a user's own training ``DataLoader`` says about how batches are made."""

    collate_fn: Optional[Callable] = None
    batch_size: Optional[int] = None
    num_workers: int = 0
    pin_memory: bool = False


def datamodule_train_loader(dm: LightningDataModule, argument: str) -> DataLoader:
    """Set up ``dm`` for fitting and return its training ``DataLoader`` (a clear error when it has none)."""
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    if isinstance(loader, (list, tuple)) and loader:
        loader = loader[0]
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"`{argument}`: {type(dm).__name__}.train_dataloader() returned {type(loader).__name__}; "
            "MixedDataModule needs a torch DataLoader over a map-style dataset to draw from."
        )
    return loader


def loader_settings(loader: DataLoader) -> LoaderSettings:
    """Read the collate function, batch size and worker settings off a user's ``DataLoader``."""
    batch_size = loader.batch_size
    if batch_size is None and loader.batch_sampler is not None:
        batch_size = getattr(loader.batch_sampler, "batch_size", None)
    return LoaderSettings(loader.collate_fn, batch_size, loader.num_workers, loader.pin_memory)


def as_map_dataset(obj: Any, argument: str) -> Dataset:
    """Return a map-style dataset for ``obj`` (a Dataset, ``datasets.Dataset`` or LightningDataModule).

    Raises:
        TypeError: if ``obj`` is none of these, or is an iterable (streaming) dataset without ``__len__``.
        ValueError: if it holds no samples.
    """
    if isinstance(obj, SyntheticSource):
        obj = obj.data
    if isinstance(obj, LightningDataModule):
        obj = datamodule_train_loader(obj, argument).dataset
    if isinstance(obj, (str, bytes)) or not (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")):
        raise TypeError(
            f"`{argument}` must be a map-style torch Dataset (with __len__ and __getitem__), a datasets.Dataset "
            f"or a LightningDataModule; got {type(obj).__name__}. Streaming/iterable datasets are not supported "
            "as sources yet: materialise them with `datasets.Dataset.from_generator` or wrap them in a Dataset."
        )
    if len(obj) == 0:
        raise ValueError(f"`{argument}` is empty: give it at least one sample.")
    return obj


def resolve_source(obj: Any, name: str, is_real: bool, argument: str) -> DataSource:
    """Build a :class:`DataSource` from any accepted input, keeping provenance from a :class:`SyntheticSource`."""
    meta = obj if isinstance(obj, SyntheticSource) else SyntheticSource(obj)
    return DataSource(
        name=name,
        dataset=as_map_dataset(obj, argument),
        is_real=is_real,
        generator=meta.generator,
        generation=meta.generation,
        params=meta.params,
    )


def resolve_synthetic(synthetic: Any) -> list[DataSource]:
    """Named synthetic sources from ``None``, one source, or a mapping ``name -> source``.

    Raises:
        ValueError: for a source named ``"real"`` or ``"reserve"`` (names the real data uses).
    """
    if synthetic is None:
        return []
    items = synthetic.items() if isinstance(synthetic, Mapping) else [("synthetic", synthetic)]
    sources = []
    for name, obj in items:
        if name in ("real", "reserve"):
            raise ValueError(f"`synthetic`: the name {name!r} is reserved for real data; rename that source.")
        sources.append(resolve_source(obj, str(name), is_real=False, argument=f"synthetic[{name!r}]"))
    return sources
