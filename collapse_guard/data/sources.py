"""Adapt the user's data to one source interface with provenance.

A source is a dataset plus what we know of where it came from: a name, whether it is real or synthetic, the
generator that made it and its generation. Accepted inputs: a torch ``Dataset`` (with ``__len__``), a Hugging Face
``datasets.Dataset``, a ``LightningDataModule`` of either Lightning namespace (its training set), or a
:class:`SyntheticSource` that wraps one of these with provenance. Synthetic sources may also stream: a Hugging
Face ``datasets.IterableDataset`` or a torch ``IterableDataset`` (see :mod:`collapse_guard.data.streams`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torch.utils.data import DataLoader, Dataset, Subset

from collapse_guard._compat import LightningDataModule, is_datamodule
from collapse_guard.data.arguments import check_source_name
from collapse_guard.data.streams import is_stream


@dataclass
class SyntheticSource:
    """A synthetic dataset with its provenance, for :class:`~collapse_guard.MixedDataModule`.

    Args:
        data: a torch ``Dataset`` with ``__len__``, a ``datasets.Dataset``, a ``LightningDataModule``, or a stream
            (a ``datasets.IterableDataset`` or a torch ``IterableDataset``).
        generator: what produced the data (a model name, a class, free text); recorded, never called.
        generation: how many rounds of training on generated data separate this source from real data
            (1 = made by a model trained on real data), or ``None`` when unknown.
        params: the generator's parameters as the user wants them recorded (temperature, checkpoint, ...).

    Example::

        SyntheticSource(gen_ds, generator="GMM(k=4)", generation=3, params={"samples": 500})
    """

    data: Union[Dataset, LightningDataModule, Any]
    generator: Optional[str] = None
    generation: Optional[int] = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class DataSource:
    """A resolved source: a dataset and its provenance (built by :func:`resolve_source`).

    ``dataset`` is map-style, except for a streaming source (``streaming=True``) before ``MixedDataModule`` wraps it
    in a :class:`~collapse_guard.data.streams.StreamDataset`.
    """

    name: str
    dataset: Dataset
    is_real: bool
    generator: Optional[str] = None
    generation: Optional[int] = None
    params: Mapping[str, Any] = field(default_factory=dict)
    streaming: bool = False

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def provenance(self) -> dict:
        """JSON-ready provenance record of this source (a stream has no size: ``None``)."""
        record = {
            "name": self.name,
            "kind": "real" if self.is_real else "synthetic",
            "generator": self.generator,
            "generation": self.generation,
            "params": dict(self.params),
            "size": None if self.streaming else len(self),
        }
        if self.streaming:
            record["streaming"] = True
        return record


@dataclass
class LoaderSettings:
    """What a user's own training ``DataLoader`` says about how batches are made."""

    collate_fn: Optional[Callable] = None
    batch_size: Optional[int] = None
    num_workers: int = 0
    pin_memory: bool = False


def datamodule_train_loader(dm: "LightningDataModule", argument: str) -> DataLoader:
    """Set up ``dm`` for fitting and return its training ``DataLoader`` (a clear error when it has none).

    Raises:
        TypeError: ``train_dataloader()`` returns no torch ``DataLoader``; or, for real data (any ``argument`` but a
            synthetic source's), a loader over an ``IterableDataset`` (real data is split by index).
    """
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
    if is_stream(loader.dataset) and not argument.startswith("synthetic"):
        raise TypeError(
            f"`{argument}`: {type(dm).__name__}.train_dataloader() iterates over a {type(loader.dataset).__name__}, "
            "an IterableDataset (no len()); MixedDataModule splits real data into held-out, reserve and training "
            "parts by index, so it needs a map-style dataset (with __len__ and __getitem__). Give the DataModule a "
            "map-style training set (e.g. materialise the stream with `datasets.Dataset.from_generator`), or pass "
            "the stream as a synthetic source: `synthetic={'name': stream}` with `samples_per_epoch`."
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
    if is_datamodule(obj):
        obj = datamodule_train_loader(obj, argument).dataset
    if is_stream(obj) or isinstance(obj, (str, bytes)) or not (
        hasattr(obj, "__getitem__") and hasattr(obj, "__len__")
    ):
        streaming = (
            " Streaming (iterable) datasets are accepted as synthetic sources only: real data is split into held-out, "
            "reserve and training parts by index, so materialise it (e.g. `datasets.Dataset.from_generator`)."
            if is_stream(obj) else ""
        )
        raise TypeError(
            f"`{argument}` must be a map-style torch Dataset (with __len__ and __getitem__), a datasets.Dataset "
            f"or a LightningDataModule; got {type(obj).__name__}.{streaming}"
        )
    if len(obj) == 0:
        raise ValueError(f"`{argument}` is empty: give it at least one sample.")
    return obj


def resolve_source(obj: Any, name: str, is_real: bool, argument: str) -> DataSource:
    """Build a :class:`DataSource` from any accepted input, keeping provenance from a :class:`SyntheticSource`.

    A synthetic stream (``datasets.IterableDataset`` or torch ``IterableDataset``) is kept as it is, with
    ``streaming=True``.
    """
    meta = obj if isinstance(obj, SyntheticSource) else SyntheticSource(obj)
    data = meta.data
    if not is_real and is_datamodule(data):
        data = datamodule_train_loader(data, argument).dataset
    if not is_real and is_stream(data):
        return DataSource(name, data, is_real=False, generator=meta.generator, generation=meta.generation,
                          params=meta.params, streaming=True)
    return DataSource(
        name=name,
        dataset=as_map_dataset(data, argument),
        is_real=is_real,
        generator=meta.generator,
        generation=meta.generation,
        params=meta.params,
    )


def resolve_synthetic(synthetic: Any) -> list[DataSource]:
    """Named synthetic sources from ``None``, one source, or a mapping ``name -> source``.

    Raises:
        ValueError: for a source named ``"real"`` or ``"reserve"`` (names the real data uses), or sources named
            ``"class_path"`` / ``"init_args"`` (a YAML entry of one unnamed source), or a name that is empty or
            holds ``/`` or whitespace (:func:`~collapse_guard.data.arguments.check_source_name`).
        TypeError: a source name that is not a str.
    """
    if synthetic is None:
        return []
    if isinstance(synthetic, Mapping) and "class_path" in synthetic and set(synthetic) <= {"class_path", "init_args"}:
        raise ValueError(
            "`synthetic` holds sources named 'class_path' and 'init_args': a YAML `class_path` entry was read as a "
            "mapping of named sources. Name the source: `synthetic: {my_source: {class_path: ..., init_args: ...}}`."
        )
    items = synthetic.items() if isinstance(synthetic, Mapping) else [("synthetic", synthetic)]
    sources = []
    for name, obj in items:
        check_source_name(name)
        if name in ("real", "reserve"):
            raise ValueError(f"`synthetic`: the name {name!r} is reserved for real data; rename that source.")
        sources.append(resolve_source(obj, str(name), is_real=False, argument=f"synthetic[{name!r}]"))
    return sources


class WithoutKey(Dataset):
    """A map-style dataset of dict samples, with one key removed from every sample."""

    def __init__(self, dataset: Dataset, key: str) -> None:
        self.dataset = dataset
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        sample = self.dataset[index]
        return {k: v for k, v in sample.items() if k != self.key}


def _plain(value: Any) -> Any:
    """A column value as a hashable Python value (0-d tensors and numpy scalars to numbers)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    return value


def _is_hf_dataset(obj: Any) -> bool:
    if "datasets" not in sys.modules:
        return False
    import datasets

    return isinstance(obj, datasets.Dataset)


def split_by_provenance(
    dataset: Any, column: str, real_values: Sequence[Any], keep_column: bool = False
) -> tuple[Any, dict[str, SyntheticSource]]:
    """Split one dataset into its real part and named synthetic sources by a provenance column.

    Args:
        dataset: a ``datasets.Dataset`` or a map-style torch ``Dataset`` of dict samples.
        column: the provenance column.
        real_values: values of ``column`` that mark real samples.
        keep_column: keep the column in the samples.

    Returns:
        ``(real, {name: SyntheticSource})``: sources in the order of their values (of their first appearance when
        the values do not compare).

    Raises:
        TypeError: for a streaming dataset, a dataset without ``column``, or samples that are not dicts.
        ValueError: when no sample is real.

    Example::

        real, synthetic = split_by_provenance(ds, "source", real_values=("real",))
        sorted(synthetic)  # ["gen1", "gen2"]; "source" is no longer a column of any part
    """
    if is_stream(dataset):
        raise TypeError(
            "from_provenance_column() needs a map-style dataset (the real part is split into held-out, reserve and "
            "training data by index); for a stream, pass its synthetic part as a streaming `synthetic` source "
            "(e.g. `stream.filter(lambda s: s['source'] != 'real')`) and the real part as a map-style `real`."
        )
    if isinstance(real_values, (str, bytes)) or not isinstance(real_values, (Sequence, set, frozenset)):
        real_values = (real_values,)
    real_set = {_plain(v) for v in real_values}
    hf = _is_hf_dataset(dataset)
    if hf:
        if column not in dataset.column_names:
            raise TypeError(f"`column={column!r}` is not a column of the dataset; its columns: {dataset.column_names}.")
        raw = dataset.with_format(None)[column]
        values = [_plain(v) for v in raw]
    else:
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"from_provenance_column() needs a map-style dataset, got {type(dataset).__name__}.")
        values = []
        for i in range(len(dataset)):
            sample = dataset[i]
            if not isinstance(sample, Mapping) or column not in sample:
                raise TypeError(
                    f"sample {i} is {'a dict without ' + repr(column) if isinstance(sample, Mapping) else 'not a dict'}: "
                    f"from_provenance_column() needs dict samples holding the provenance column {column!r}."
                )
            values.append(_plain(sample[column]))
    groups: dict[Any, list[int]] = {}
    for i, value in enumerate(values):
        groups.setdefault(value, []).append(i)
    try:  # sources in the order of their values ("gen1" before "gen2"), else of their first appearance
        groups = dict(sorted(groups.items(), key=lambda item: item[0]))
    except TypeError:
        pass

    def part(indices: list[int]) -> Any:
        if hf:
            selected = dataset.select(indices)
            return selected if keep_column else selected.remove_columns(column)
        subset = Subset(dataset, indices)
        return subset if keep_column else WithoutKey(subset, column)

    real_idx = sorted(i for value, idx in groups.items() if value in real_set for i in idx)
    if not real_idx:
        raise ValueError(
            f"no sample has a real value {sorted(map(repr, real_set))} in column {column!r} (values found: "
            f"{sorted(map(repr, groups))[:10]}); pass the values that mark real data as `real_values`."
        )
    synthetic = {}
    for value, idx in groups.items():
        if value in real_set:
            continue
        name = value if isinstance(value, str) else f"{column}={value}"
        synthetic[name] = SyntheticSource(part(idx), params={"provenance_column": column, "value": value})
    return part(real_idx), synthetic
