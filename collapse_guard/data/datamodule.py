"""``MixedDataModule``: the user's real data and synthetic sources, mixed at a target real fraction.

All of its code lives in :class:`MixedDataModuleMixin`, which is bound to a Lightning namespace's
``LightningDataModule`` in one line: :class:`MixedDataModule` here for ``pytorch_lightning``, and
``collapse_guard.lightning.MixedDataModule`` for ``lightning.pytorch`` (whose classes do not mix with
``pytorch_lightning``'s: a ``Trainer`` of one namespace rejects the other's DataModules).
"""
from __future__ import annotations

import numbers
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from collapse_guard._compat import LightningDataModule, is_datamodule, rank_zero_warn
from collapse_guard.data.integrity import (
    index_by_digest,
    matches,
    preserved_rng,
    sample_digests,
    structure_mismatch,
)
from collapse_guard.data.mixing import RESERVE, MixingState, RealFraction, check_fraction
from collapse_guard.data.sampler import MixedBatchSampler
from collapse_guard.data.sources import (
    DataSource,
    SyntheticSource,
    LoaderSettings,
    as_map_dataset,
    datamodule_train_loader,
    loader_settings,
    resolve_synthetic,
    split_by_provenance,
)
from collapse_guard.data.streams import ListDataset, StreamDataset, check_stream_workers, first_sample

DEFAULT_BATCH_SIZE = 32

#: The types of ``real`` and ``synthetic`` as LightningCLI (jsonargparse) reads them from YAML: the classes first, so
#: ``class_path`` entries are checked and their ``init_args`` can be overridden from the command line; ``Any`` last,
#: for everything else Python code may pass (a ``datasets.Dataset``, a ``lightning.pytorch`` DataModule, ...).
RealData = Union[LightningDataModule, Dataset, Any]
SourceData = Union[Dataset, SyntheticSource, LightningDataModule, Any]
SyntheticData = Optional[Union[Dataset, Mapping[str, SourceData], Any]]


def _check_split(value: Any, argument: str, allow_val: bool = False) -> None:
    if allow_val and value == "val":
        return
    if isinstance(value, (bool, str, bytes)):  # a str has __getitem__ and __len__ but is no Dataset
        accepted = '"val", ' if allow_val else ""
        raise TypeError(f"`{argument}` must be {accepted}a fraction in [0, 1) or a Dataset, got {value!r}.")
    if isinstance(value, numbers.Real):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"`{argument}` as a fraction must be in [0, 1), got {value!r}.")
        return
    if not (hasattr(value, "__getitem__") and hasattr(value, "__len__")):
        accepted = '"val", ' if allow_val else ""
        raise TypeError(f"`{argument}` must be {accepted}a fraction in [0, 1) or a map-style Dataset, got {value!r}.")


def _split(indices: torch.Tensor, fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``indices`` at random into (kept, taken) with ``round(fraction * n)`` taken."""
    perm = indices[torch.randperm(len(indices), generator=gen)]
    n_take = int(round(fraction * len(indices)))
    return perm[n_take:].sort().values, perm[:n_take]


class MixedDataModuleMixin:
    """Wraps the user's real data and synthetic sources; every training batch is drawn at a target real fraction.

    The model sees batches in exactly the format the user's own data produced: the collate function, batch size
    and worker settings are taken from the real ``LightningDataModule``'s training loader (or given here).
    Held-out real data is never trained on; a reserve of fresh real data waits for :meth:`inject`.

    ``collapse_guard.MixedDataModule`` is a ``pytorch_lightning`` ``LightningDataModule``;
    ``collapse_guard.lightning.MixedDataModule``, the same code, is a ``lightning.pytorch`` one. Use the one of the
    namespace your ``Trainer`` comes from; either wraps a real DataModule of either namespace.

    Args:
        real: the real data: a ``LightningDataModule`` (of either Lightning namespace), a map-style torch
            ``Dataset`` or a ``datasets.Dataset`` (e.g. ``.with_format("torch")``).
        synthetic: one synthetic source or a mapping ``name -> source``; a source is a ``Dataset``,
            ``datasets.Dataset``, ``LightningDataModule`` or :class:`~collapse_guard.SyntheticSource`, or a stream:
            a ``datasets.IterableDataset`` or torch ``IterableDataset`` (needs ``samples_per_epoch``). A stream
            fills the synthetic slots the plan gives it with its next samples, one pass after another (see
            :mod:`collapse_guard.data.streams`); the counts stay exact since they are counted per slot.
        real_fraction: target share of real samples in every training batch, in ``[0, 1]``: a float or a
            function ``epoch -> float``. Each batch holds ``batch_size * real_fraction`` real samples to within one.
        holdout: held-out real data, never trained on: ``"val"`` (the real DataModule's validation set), a
            fraction in ``(0, 1)`` split off the real training data, or a ``Dataset``.
        reserve: fresh real data withheld for :meth:`inject`: a fraction in ``[0, 1)`` of the real training data
            (after the holdout) or a ``Dataset``. ``0`` keeps no reserve.
        synthetic_holdout: fraction in ``[0, 1)`` of each synthetic source kept out of training, on which
            :class:`~collapse_guard.HeldOutRealCheck` measures the real–synthetic gap. Of a stream, the samples
            whose content digest falls in that fraction of the digest space are held out (never trained on, on
            any rank, worker or pass), and the first ``stream_heldout_samples`` of them form its held-out set.
        batch_size: samples per training batch; default: the real DataModule's, else 32.
        samples_per_epoch: samples per epoch over all ranks; default: real plus synthetic training samples.
            Required with a streaming source (a stream has no length).
        synthetic_weights: relative share of each named synthetic source (default: proportional to size; equal
            shares when a source streams). The synthetic slots of every epoch are apportioned exactly by them.
        seed: seed of the splits and the sampler; batches are a function of ``(seed, epoch)`` alone.
        num_workers: DataLoader workers; default: the real DataModule's, else 0.
        collate_fn: collate function; default: the real DataModule's training loader's.
        verify_holdout: at :meth:`setup`, compare the content of every held-out real sample with the real
            training pool, the reserve and the synthetic sources (a digest of every tensor, array, number and
            string of each sample; one pass over the data, row-wise for ``TensorDataset``). A held-out real sample
            found in the real training data or the reserve is an error; synthetic samples identical to held-out
            real ones (a generator that memorised them) are warned about and recorded in :attr:`contamination`.
            ``False`` skips the check; a callable ``sample -> part`` hashes only that part of each sample (e.g.
            ``lambda s: s[0]`` for the inputs). Samples are hashed as ``dataset[i]`` returns them: a dataset that
            augments at random in ``__getitem__`` defeats the check (it never moves the global random generators).
            Streaming sources are not scanned (``contamination`` marks them ``"streaming": True``).
        stream_heldout_samples: held-out samples read off each streaming source at :meth:`setup` (at most
            ``2 * stream_heldout_samples / synthetic_holdout`` samples are read to find them).

    Attributes:
        heldout_real: the held-out real dataset (after :meth:`setup`).
        heldout_synthetic: the held-out part of the synthetic sources, or ``None``.
        mixer: the :class:`~collapse_guard.data.mixing.MixingState`: pools, fraction, injections, counts.
        contamination: after :meth:`setup` with ``verify_holdout``: per synthetic source, how many of its samples
            are exact copies of held-out real samples (``{"checked": True, "heldout_real": n, "sources": {name:
            {"size", "duplicates", "in_training", "heldout_real_matched", "examples"}}}``); ``{"checked": False}``
            when the check is off.

    Raises:
        ValueError: a fraction outside its range (or a schedule returning or raising one), an empty source or
            held-out set, ``holdout="val"`` without a validation set, a fraction that needs an empty pool, sources
            whose samples differ in structure or dtype or do not collate together, held-out real samples that are
            also training or reserve samples, a held-out set smaller than the number of ranks, a streaming source
            without ``samples_per_epoch`` or with fewer Hugging Face shards than DataLoader workers.
        TypeError: an argument of an unsupported type (a streaming ``real`` included: real data is split by
            index).

    Example::

        dm = MixedDataModule(real=MyDigits(), synthetic={"gen1": ds1, "gen2": ds2}, real_fraction=0.3, reserve=0.2)
        trainer = pl.Trainer(callbacks=[RatioMonitor(), HeldOutRealCheck(), CollapseGuard()])
        trainer.fit(model, datamodule=dm)

        # a streaming synthetic source (Hugging Face), 40% of the synthetic slots; 2000 samples an epoch
        dm = MixedDataModule(real=real_ds, synthetic={"gen": gen_ds, "web": hf_stream}, holdout=0.2,
                             synthetic_weights={"gen": 0.6, "web": 0.4}, samples_per_epoch=2000)
    """

    def __init__(
        self,
        real: RealData,
        synthetic: SyntheticData = None,
        real_fraction: RealFraction = 0.5,
        holdout: Union[float, str, Dataset] = "val",
        reserve: Union[float, Dataset] = 0.0,
        synthetic_holdout: float = 0.1,
        batch_size: Optional[int] = None,
        samples_per_epoch: Optional[int] = None,
        synthetic_weights: Optional[Mapping[str, float]] = None,
        seed: int = 0,
        num_workers: Optional[int] = None,
        collate_fn: Optional[Callable] = None,
        verify_holdout: Union[bool, Callable[[Any], Any]] = True,
        stream_heldout_samples: int = 256,
    ) -> None:
        super().__init__()
        if not (isinstance(verify_holdout, bool) or callable(verify_holdout)):
            raise TypeError(
                f"`verify_holdout` must be True, False or a callable `sample -> part to hash`, got {verify_holdout!r}."
            )
        if real is None:
            raise ValueError("`real` is required: the real data to guard training with.")
        if not callable(real_fraction):
            check_fraction(real_fraction, "real_fraction")
        _check_split(holdout, "holdout", allow_val=True)
        if holdout == "val" and not is_datamodule(real):
            raise ValueError(
                '`holdout="val"` takes the real LightningDataModule\'s validation set, but `real` is a '
                f"{type(real).__name__}. Pass a fraction (e.g. holdout=0.2) or a held-out Dataset."
            )
        _check_split(reserve, "reserve")
        if not (isinstance(synthetic_holdout, numbers.Real) and 0.0 <= synthetic_holdout < 1.0):
            raise ValueError(f"`synthetic_holdout` must be a fraction in [0, 1), got {synthetic_holdout!r}.")
        for name, value in (("batch_size", batch_size), ("samples_per_epoch", samples_per_epoch)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if isinstance(stream_heldout_samples, bool) or not isinstance(stream_heldout_samples, int) or (
            stream_heldout_samples < 0
        ):
            raise ValueError(f"`stream_heldout_samples` must be an integer >= 0, got {stream_heldout_samples!r}.")
        self.real = real
        self.synthetic = synthetic
        self.real_fraction = real_fraction
        self.holdout = holdout
        self.reserve = reserve
        self.synthetic_holdout = float(synthetic_holdout)
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.synthetic_weights = synthetic_weights
        self.seed = int(seed)
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.verify_holdout = verify_holdout
        self.stream_heldout_samples = stream_heldout_samples
        self.contamination: dict = {"checked": False}
        self.mixer: Optional[MixingState] = None
        self._pending_state: Optional[dict] = None
        self._counting = True

    # -- set-up ---------------------------------------------------------------------------------------------
    @classmethod
    def from_provenance_column(
        cls,
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

    @property
    def real_datamodule(self) -> Optional[LightningDataModule]:
        """The real data's ``LightningDataModule`` (either namespace), or ``None`` when ``real`` is a Dataset."""
        return self.real if is_datamodule(self.real) else None

    def prepare_data(self) -> None:
        if self.real_datamodule is not None:
            self.real_datamodule.prepare_data()

    def setup(self, stage: str) -> None:
        """Resolve sources, split held-out real, reserve and held-out synthetic data, and check the collate."""
        dm = self.real_datamodule
        if dm is not None:
            dm.trainer = self.trainer
        if self.mixer is not None:
            return
        settings = LoaderSettings()
        if dm is not None:
            real_loader = datamodule_train_loader(dm, "real")
            real_dataset = real_loader.dataset
            settings = loader_settings(real_loader)
            if hasattr(real_dataset, "__len__") and len(real_dataset) == 0:
                raise ValueError(
                    f"`real` is empty: {type(dm).__name__}.train_dataloader() has no samples; give it at least one."
                )
        else:
            real_dataset = as_map_dataset(self.real, "real")
        self._collate = self.collate_fn or settings.collate_fn
        self._batch_size = self.batch_size or settings.batch_size or DEFAULT_BATCH_SIZE
        self._num_workers = settings.num_workers if self.num_workers is None else self.num_workers
        self._pin_memory = settings.pin_memory
        self._build(real_dataset)

    def _heldout_from_val(self) -> Dataset:
        loader = self.real_datamodule.val_dataloader()
        if isinstance(loader, (list, tuple)) and loader:
            loader = loader[0]
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__") or len(dataset) == 0:
            raise ValueError(
                f'`holdout="val"`: {type(self.real).__name__}.val_dataloader() gives no map-style validation set '
                "to hold out. Pass a fraction (e.g. holdout=0.2) or a held-out Dataset."
            )
        return dataset

    def _build(self, real_dataset: Dataset) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        real_idx = torch.arange(len(real_dataset))
        if self.holdout == "val":
            self.heldout_real = self._heldout_from_val()
        elif isinstance(self.holdout, numbers.Real):
            real_idx, taken = _split(real_idx, float(self.holdout), gen)
            self.heldout_real = Subset(real_dataset, taken.sort().values.tolist())
        else:
            self.heldout_real = as_map_dataset(self.holdout, "holdout")
        if len(self.heldout_real) == 0:
            raise ValueError(
                f"`holdout={self.holdout!r}` leaves no held-out real samples, and every check needs some: pass a "
                "larger fraction (e.g. holdout=0.2) or a held-out Dataset."
            )

        datasets: list[Dataset] = [real_dataset]
        offset = len(real_dataset)
        if isinstance(self.reserve, numbers.Real):
            real_idx, reserve_idx = _split(real_idx, float(self.reserve), gen)
            reserve_data = Subset(real_dataset, reserve_idx.tolist())
        else:
            reserve_data = as_map_dataset(self.reserve, "reserve")
            reserve_idx = torch.randperm(len(reserve_data), generator=gen) + offset
            datasets.append(reserve_data)
            offset += len(reserve_data)
        sources = [
            DataSource("real", real_dataset, is_real=True),
            DataSource("reserve", reserve_data, is_real=True),
        ]
        synthetic = resolve_synthetic(self.synthetic)
        self._prepare_streams(synthetic)
        synthetic_pools, heldout_synthetic, spans = [], [], []
        for source in synthetic:
            start = offset
            idx = torch.arange(len(source)) + offset
            if source.streaming:  # slot indices; the held-out part is chosen by content (see data/streams.py)
                train_idx = idx
                datasets.append(source.dataset)
                offset += len(source)
                held = self._stream_heldout(source.dataset)
                if held is not None:
                    heldout_synthetic.extend(range(offset, offset + len(held)))
                    datasets.append(held)
                    offset += len(held)
            else:
                train_idx, held_idx = _split(idx, self.synthetic_holdout, gen)
                if len(train_idx) == 0:
                    raise ValueError(f"synthetic source {source.name!r} has no samples left after `synthetic_holdout`.")
                heldout_synthetic.extend(held_idx.sort().values.tolist())
                datasets.append(source.dataset)
                offset += len(source)
            synthetic_pools.append(train_idx)
            spans.append((start, offset))
        sources.extend(synthetic)

        source_of = torch.zeros(offset, dtype=torch.int16)
        source_of[reserve_idx] = RESERVE
        for i, (start, stop) in enumerate(spans):
            source_of[start:stop] = i + 2
        if len(real_idx) == 0 and len(reserve_idx) == 0:
            raise ValueError(
                f"`real` has no training samples left after `holdout` and `reserve` ({len(real_dataset)} real samples): "
                "lower them, or give more real data."
            )

        weights = None
        if self.synthetic_weights is None and any(s.streaming for s in synthetic):
            weights = torch.ones(len(synthetic))  # a stream has no size to weigh it by: equal shares
        if self.synthetic_weights is not None:
            unknown = set(self.synthetic_weights) - {s.name for s in synthetic}
            if unknown:
                raise ValueError(f"`synthetic_weights` names unknown sources {sorted(unknown)}.")
            weights = torch.tensor([float(self.synthetic_weights.get(s.name, 0.0)) for s in synthetic])
            if (weights < 0).any() or weights.sum() <= 0:
                raise ValueError("`synthetic_weights` must be non-negative with a positive sum.")

        self.train_set = ConcatDataset(datasets)
        self.heldout_synthetic = Subset(self.train_set, heldout_synthetic) if heldout_synthetic else None
        n_train = len(real_idx) + sum(len(p) for p in synthetic_pools)
        self.mixer = MixingState(
            sources=sources,
            real_pool=real_idx,
            reserve_order=reserve_idx,
            synthetic_pools=synthetic_pools,
            source_of=source_of,
            real_fraction=self.real_fraction,
            samples_per_epoch=self.samples_per_epoch or n_train,
            seed=self.seed,
            synthetic_weights=weights,
        )
        self._check_schedule(has_real=len(real_idx) > 0, has_synthetic=bool(synthetic_pools))
        with preserved_rng():  # reading samples must not move the user's random state (augmenting datasets)
            self._check_samples(reserve_data if not isinstance(self.reserve, numbers.Real) else None, synthetic)
            self._check_collate(synthetic_pools)
        self._check_world_size()
        if self.verify_holdout is not False:
            self._verify_holdout(real_dataset, real_idx, reserve_data, synthetic, synthetic_pools, spans)
        self.mixer.loader_workers = self._num_workers
        if self._pending_state is not None:
            self._restore(self._pending_state)
            self._pending_state = None

    def _prepare_streams(self, synthetic: list[DataSource]) -> None:
        """Wrap every streaming source in a :class:`~collapse_guard.data.streams.StreamDataset` of
        ``samples_per_epoch`` slot indices, split by rank (Hugging Face streams)."""
        streams = [s for s in synthetic if s.streaming]
        if not streams:
            return
        if self.samples_per_epoch is None:
            raise ValueError(
                f"synthetic source(s) {[s.name for s in streams]} stream and have no length, so an epoch has no "
                "natural size: pass `samples_per_epoch` (samples drawn per epoch over all ranks)."
            )
        world, rank = self._world()
        for source in streams:
            check_stream_workers(source.dataset, source.name, self._num_workers)
            source.dataset = StreamDataset(
                source.dataset,
                source.name,
                length=self.samples_per_epoch,
                holdout_fraction=self.synthetic_holdout,
                rank=rank,
                world_size=world,
            )

    def _stream_heldout(self, stream: StreamDataset) -> Optional[Dataset]:
        """The first ``stream_heldout_samples`` held-out samples of a stream, or ``None``."""
        if not self.stream_heldout_samples or self.synthetic_holdout <= 0:
            return None
        max_read = int(2 * self.stream_heldout_samples / self.synthetic_holdout) + 1
        samples = stream.heldout_samples(self.stream_heldout_samples, max_read=max_read)
        return ListDataset(samples) if samples else None

    def _check_schedule(self, has_real: bool, has_synthetic: bool) -> None:
        max_epochs = getattr(self.trainer, "max_epochs", None) if self._trainer_attached else None
        epochs = range(max_epochs if max_epochs and max_epochs > 0 else 100) if callable(self.real_fraction) else [0]
        for epoch in epochs:
            f = self.mixer.scheduled_fraction(epoch)
            if f < 1.0 and not has_synthetic:
                raise ValueError(
                    f"`real_fraction` is {f} at epoch {epoch} but no synthetic source was given: pass `synthetic` "
                    "or set real_fraction=1.0."
                )
            if f > 0.0 and not has_real:
                raise ValueError(
                    f"`real_fraction` is {f} at epoch {epoch} but `holdout` and `reserve` leave no real training "
                    "samples: lower them (the reserve enters training only through inject())."
                )

    @property
    def _trainer_attached(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def _world(self) -> tuple[int, int]:
        """``(world size, global rank)`` of the attached Trainer, ``(1, 0)`` without one."""
        if not self._trainer_attached:
            return 1, 0
        return int(self.trainer.world_size), int(self.trainer.global_rank)

    def _check_samples(self, reserve_data: Optional[Dataset], synthetic: list[DataSource]) -> None:
        """Every source mixed into training batches yields samples of the real data's structure and dtypes."""
        pool = self.mixer.base_real_pool
        real_sample = self.train_set[int(pool[0] if len(pool) else self.mixer.reserve_order[0])]
        others = [("`reserve`", reserve_data)] if reserve_data is not None else []
        others += [(f"synthetic source {s.name!r}", s.dataset) for s in synthetic]
        for label, dataset in others:
            mismatch = structure_mismatch(real_sample, first_sample(dataset))
            if mismatch is not None:
                raise ValueError(
                    f"{label} yields samples unlike the real data's ({mismatch}). Its samples are mixed into the same "
                    "training batches as the real ones, so they need the same structure and dtypes: convert them "
                    "(e.g. `.float()`, `.long()`, or `datasets.Dataset.with_format('torch')`) when you build the source."
                )

    def _check_world_size(self) -> None:
        """Held-out sets are split between ranks: each rank needs at least one sample."""
        world, _ = self._world()
        if world <= 1:
            return
        for name, dataset, fix in (
            ("held-out real", self.heldout_real, "pass a larger `holdout`"),
            ("held-out synthetic", self.heldout_synthetic, "raise `synthetic_holdout` or set it to 0"),
        ):
            if dataset is not None and len(dataset) < world:
                raise ValueError(
                    f"the {name} set has {len(dataset)} samples, fewer than the {world} ranks that share it at every "
                    f"check: {fix}."
                )

    def _verify_holdout(
        self,
        real_dataset: Dataset,
        real_idx: torch.Tensor,
        reserve_data: Dataset,
        synthetic: list[DataSource],
        synthetic_pools: list[torch.Tensor],
        spans: list[tuple[int, int]],
    ) -> None:
        """Held-out real data must not be training or reserve data; synthetic copies of it are reported."""
        key = self.verify_holdout if callable(self.verify_holdout) else None
        with preserved_rng():
            heldout = index_by_digest(sample_digests(self.heldout_real, key=key))
            in_train = matches(heldout, sample_digests(real_dataset, real_idx, key=key))
            in_reserve = matches(heldout, sample_digests(reserve_data, key=key)) if len(reserve_data) else []
            per_source = {}
            for source, pool, (start, _) in zip(synthetic, synthetic_pools, spans):
                if source.streaming:  # a stream cannot be scanned
                    per_source[source.name] = {"size": None, "streaming": True, "duplicates": None,
                                               "in_training": None, "heldout_real_matched": None, "examples": []}
                    continue
                hits = matches(heldout, sample_digests(source.dataset, key=key))
                training = set((pool - start).tolist())
                per_source[source.name] = {
                    "size": len(source),
                    "duplicates": len(hits),
                    "in_training": sum(i in training for i, _ in hits),
                    "heldout_real_matched": len({h for _, h in hits}),
                    "examples": [[int(i), int(h)] for i, h in hits[:5]],
                }
        if in_train or in_reserve:
            what = (
                f'`holdout="val"` ({type(self.real).__name__}\'s validation set)' if self.holdout == "val" else "`holdout`"
            )
            where = []
            if in_train:
                pairs = ", ".join(f"held-out #{h} = real #{int(real_idx[i])}" for i, h in in_train[:3])
                where.append(f"{len(in_train)} in the real training data ({pairs}{', ...' if len(in_train) > 3 else ''})")
            if in_reserve:
                pairs = ", ".join(f"held-out #{h} = reserve #{i}" for i, h in in_reserve[:3])
                where.append(f"{len(in_reserve)} in the reserve ({pairs}{', ...' if len(in_reserve) > 3 else ''})")
            raise ValueError(
                f"{what}: held-out real samples are also training data: {'; '.join(where)} (identical content). "
                "Held-out data must never be trained on, or every check measures memorisation: remove the duplicates "
                "from the real data or the held-out set, or pass verify_holdout=False to skip this check."
            )
        self.contamination = {"checked": True, "heldout_real": len(self.heldout_real), "sources": per_source}
        dirty = {name: r["duplicates"] for name, r in per_source.items() if r["duplicates"]}
        if dirty:
            rank_zero_warn(
                f"synthetic samples identical to held-out real samples: {dirty} (samples per source; "
                f"{sum(r['heldout_real_matched'] or 0 for r in per_source.values())} of the {len(self.heldout_real)} "
                "held-out real samples have a synthetic copy). A generator that memorised held-out data makes every "
                "held-out check look better than it is: remove these samples from the synthetic sources or hold out "
                "other real data. Details in `MixedDataModule.contamination`."
            )

    def heldout_real_classes(self, batch_fn: Callable[[Any], tuple[Any, torch.Tensor]]) -> torch.Tensor:
        """The distinct targets of the held-out real data (one pass, the user's collate, no random state moved).

        Args:
            batch_fn: ``batch -> (inputs, target)``, as :class:`~collapse_guard.HeldOutRealCheck` splits batches.

        Returns:
            The sorted distinct target values.

        Raises:
            RuntimeError: before :meth:`setup`.

        Example::

            if len(dm.heldout_real_classes(lambda b: (b[0], b[1]))) < 2:
                ...  # per-class indicators are meaningless
        """
        if self.mixer is None:
            raise RuntimeError("MixedDataModule.heldout_real_classes() needs setup() first (the Trainer calls it).")
        from torch.utils.data import default_collate

        collate = self._collate or default_collate
        n, step, found = len(self.heldout_real), self._batch_size, []
        with preserved_rng():
            for start in range(0, n, step):
                batch = collate([self.heldout_real[i] for i in range(start, min(n, start + step))])
                _, target = batch_fn(batch)
                found.append(torch.as_tensor(target).reshape(-1).unique())
        return torch.cat(found).unique() if found else torch.empty(0)

    def _check_collate(self, synthetic_pools: list[torch.Tensor]) -> None:
        """Collate one real sample with one sample of each synthetic source, as a mixed batch will."""
        if not synthetic_pools:
            return
        from torch.utils.data import default_collate

        collate = self._collate or default_collate
        picks = [int(self.mixer.base_real_pool[0])] if len(self.mixer.base_real_pool) else []
        samples = [self.train_set[i] for i in picks]
        for source, pool in zip(self.mixer.sources[2:], synthetic_pools):
            samples.append(first_sample(source.dataset) if source.streaming else self.train_set[int(pool[0])])
        names = ["real"] * len(picks) + [s.name for s in self.mixer.sources[2:]]
        try:
            collate(samples)
        except Exception as err:  # noqa: BLE001 - re-raised with what to fix
            raise ValueError(
                f"samples of sources {names} cannot be collated into one batch ({type(err).__name__}: {err}). "
                "Every source must yield samples of the same structure, shapes and dtypes as the real data "
                "(e.g. the same (x, y) tuple or the same dict keys)."
            ) from err

    # -- loaders --------------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            collate_fn=self._collate,
            num_workers=self._num_workers,
            pin_memory=self._pin_memory,
            persistent_workers=self._num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer if self._trainer_attached else None
        sampler = MixedBatchSampler(
            None,
            self._batch_size,
            True,
            mixer=self.mixer,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            epoch_fn=self._epoch_to_run,
        )
        self._continue_streams()
        return self._loader(self.train_set, batch_sampler=sampler)

    def _epoch_to_run(self) -> Optional[int]:
        """The epoch the Trainer's fit loop runs next (``None`` without one): the value Lightning gives the
        sampler's ``set_epoch`` at the epoch's start, known already when the epoch's iterator is created."""
        loop = getattr(self.trainer, "fit_loop", None) if self._trainer_attached else None
        progress = getattr(loop, "epoch_progress", None)
        return int(progress.current.processed) if progress is not None else None

    def val_dataloader(self) -> Any:
        """The real DataModule's own validation loader when there is one, else the held-out real data.

        Lightning shards it between ranks itself (``use_distributed_sampler``), so it is not sharded here.
        """
        dm = self.real_datamodule
        if dm is not None and self.holdout == "val":
            return dm.val_dataloader()
        return self.heldout_real_dataloader(shard=False)

    def test_dataloader(self) -> Any:
        dm = self.real_datamodule
        if dm is None:
            raise NotImplementedError("`real` is not a LightningDataModule: it has no test set to delegate to.")
        dm.setup("test")
        return dm.test_dataloader()

    def _shard(self, dataset: Dataset, shard: Optional[bool]) -> Dataset:
        world, rank = self._world()
        if shard is False or world <= 1:
            return dataset
        return Subset(dataset, list(range(rank, len(dataset), world)))

    def heldout_real_dataloader(self, batch_size: Optional[int] = None, shard: Optional[bool] = None) -> DataLoader:
        """Held-out real data, in order, never trained on.

        Under several processes each rank gets every ``world_size``-th sample from its rank on (no padding, no
        sample on two ranks), so metrics whose states are summed over ranks (torchmetrics' sync) count every
        held-out sample exactly once. ``shard=False`` gives every rank all of it.
        """
        return self._loader(self._shard(self.heldout_real, shard), batch_size=batch_size or self._batch_size,
                            shuffle=False)

    def heldout_synthetic_dataloader(
        self, batch_size: Optional[int] = None, shard: Optional[bool] = None, max_samples: Optional[int] = None
    ) -> Optional[DataLoader]:
        """Held-out synthetic data (``synthetic_holdout`` of every source), or ``None``; sharded as the real one.

        ``max_samples`` keeps at most that many held-out synthetic samples: a random subset drawn with ``seed``
        (the same at every call), in order, then sharded between ranks like the whole set (``None``: all).
        """
        if self.heldout_synthetic is None:
            return None
        dataset = self.heldout_synthetic
        if max_samples is not None and max_samples < len(dataset):
            dataset = Subset(dataset, self._seeded_subset(len(dataset), max_samples).tolist())
        return self._loader(self._shard(dataset, shard), batch_size=batch_size or self._batch_size, shuffle=False)

    def synthetic_training_dataloader(
        self, batch_size: Optional[int] = None, shard: Optional[bool] = None, max_samples: Optional[int] = None
    ) -> Optional[DataLoader]:
        """Synthetic samples of the training pools (what the model trains on), in order, or ``None`` when no source
        has any; sharded and subset like :meth:`heldout_synthetic_dataloader` (a seeded subset of at most
        ``max_samples``, the same at every call), with the datamodule's workers and memory pinning.

        A streaming source gives its first training samples, as many as its slots in the subset, read through a
        separate iterator: the same samples at every call, and the stream's training position does not move.

        Args:
            batch_size: samples per batch (default: the training batch size).
            shard: ``False`` gives every rank the whole subset (default: sharded under several processes).
            max_samples: at most this many samples (``None``: every training synthetic sample).

        Returns:
            A ``DataLoader`` in pool order (no shuffling), or ``None`` before :meth:`setup` or without synthetic data.
        """
        pools = [p for p in (self.mixer.synthetic_pools if self.mixer is not None else []) if len(p)]
        if not pools:
            return None
        pool = torch.cat(pools)
        if max_samples is not None and max_samples < len(pool):
            pool = pool[self._seeded_subset(len(pool), max_samples)]
        dataset: Dataset = Subset(self.train_set, pool.tolist())
        streams = self.mixer.stream_ids
        if streams:  # a stream's slots would read training's next samples: take its first ones instead
            of = self.mixer.source_of[pool].long()
            on_stream = torch.isin(of, torch.tensor(streams))
            parts = [Subset(self.train_set, pool[~on_stream].tolist())]
            parts += [ListDataset(self.mixer.sources[sid].dataset.training_samples(int((of == sid).sum())))
                      for sid in streams]
            dataset = ConcatDataset([part for part in parts if len(part)])
        return self._loader(self._shard(dataset, shard), batch_size=batch_size or self._batch_size, shuffle=False)

    def _seeded_subset(self, n: int, k: int) -> torch.Tensor:
        """``k`` of the positions ``0..n-1``, sorted, drawn with ``seed`` (the same at every call)."""
        gen = torch.Generator().manual_seed(self.seed)
        return torch.randperm(n, generator=gen)[:k].sort().values

    # -- batch hooks: count what the model receives, then the user's own hooks --------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        dm = self.real_datamodule
        return dm.on_before_batch_transfer(batch, dataloader_idx) if dm is not None else batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        dm = self.real_datamodule
        if dm is not None:
            return dm.transfer_batch_to_device(batch, device, dataloader_idx)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self._counting and self._trainer_attached and self.trainer.training and self.mixer is not None:
            self.mixer.count_next_batch()
        dm = self.real_datamodule
        return dm.on_after_batch_transfer(batch, dataloader_idx) if dm is not None else batch

    @contextmanager
    def counting_paused(self) -> Iterator[None]:
        """Batches moved to the device inside this block are not training batches: do not count them."""
        self._counting = False
        try:
            yield
        finally:
            self._counting = True

    # -- the guard's handle ---------------------------------------------------------------------------------
    @property
    def reserve_remaining(self) -> int:
        """Reserve samples not yet injected (0 before :meth:`setup`)."""
        return self.mixer.reserve_remaining if self.mixer is not None else 0

    def current_real_fraction(self) -> float:
        """Target real fraction of the current (or next) epoch, injections included."""
        epoch = self.trainer.current_epoch if self._trainer_attached else 0
        return self.mixer.target_fraction(epoch)

    def inject(
        self,
        num_samples: Optional[int] = None,
        fraction_of_reserve: Optional[float] = None,
        real_fraction: Optional[float] = None,
        reason: str = "",
    ) -> dict:
        """Move reserve real data into training and/or raise the real fraction, from the next epoch on.

        The batch sampler re-plans at the start of every epoch, so no ``reload_dataloaders_every_n_epochs`` is
        needed. Injections are recorded (and checkpointed) with their reason.

        Args:
            num_samples: reserve samples to move into the real training pool.
            fraction_of_reserve: alternatively, a share in ``(0, 1]`` of the *initial* reserve to move.
            real_fraction: new lower bound in ``[0, 1]`` for the target real fraction (it never lowers it).
            reason: why, for the record.

        Returns:
            The injection record: ``epoch``, ``samples`` moved, ``real_fraction_floor``, ``reserve_remaining``,
            ``reason``.

        Raises:
            RuntimeError: before :meth:`setup`.
            ValueError: for samples asked of an empty reserve, or bad arguments.
        """
        if self.mixer is None:
            raise RuntimeError("MixedDataModule.inject() needs setup() first (the Trainer calls it).")
        if num_samples is not None and fraction_of_reserve is not None:
            raise ValueError("give `num_samples` or `fraction_of_reserve`, not both.")
        if fraction_of_reserve is not None:
            if not 0.0 < fraction_of_reserve <= 1.0:
                raise ValueError(f"`fraction_of_reserve` must be in (0, 1], got {fraction_of_reserve!r}.")
            num_samples = max(1, int(round(fraction_of_reserve * len(self.mixer.reserve_order))))
        if num_samples is not None and num_samples > 0 and self.mixer.reserve_remaining == 0:
            raise ValueError("the reserve is spent (or was never set: pass `reserve=` to MixedDataModule).")
        epoch = self.trainer.current_epoch if self._trainer_attached else None
        return self.mixer.inject(num_samples or 0, real_fraction, epoch, reason)

    def state_dict(self) -> dict:
        """What Lightning checkpoints for this datamodule: :meth:`MixingState.state_dict` (seed, reserve cursor, real
        fraction floor, injections, counts, the samples each rank's DataLoader worker read of every stream, and a
        fingerprint of the pools)."""
        return self.mixer.state_dict() if self.mixer is not None else dict(self._pending_state or {})

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`state_dict`'s state (kept until :meth:`setup` when called before it). Every streaming
        source then goes on from where each of its readers stopped (:meth:`train_dataloader` tells them); with
        another number of ranks or DataLoader workers it starts again from its beginning, with a warning.

        Raises:
            ValueError: when the checkpoint was written for other sources, another seed or other pools.
        """
        if self.mixer is None:
            self._pending_state = state_dict
        else:
            self._restore(state_dict)

    def _restore(self, state_dict: dict) -> None:
        """Restore the mixer; stream reads counted by other ranks or workers than this fit's are dropped, with a
        warning (each reader holds its own part of a stream)."""
        self.mixer.load_state_dict(state_dict)
        world, _ = self._world()
        for name, reads in list(self.mixer.stream_reads.items()):
            saved = (reads.shape[0], self.mixer.stream_reads_workers)
            if saved != (world, self._num_workers):
                del self.mixer.stream_reads[name]
                rank_zero_warn(
                    f"streaming source {name!r} was read by {saved[0]} rank(s) x {saved[1]} DataLoader "
                    f"worker(s) before the checkpoint, and this fit has {world} x {self._num_workers}: each reader "
                    "holds its own part of the stream, so the stream starts again from its beginning. Resume with "
                    "the same devices and `num_workers` to go on where it stopped."
                )

    def _continue_streams(self) -> None:
        """Have every reader of a stream that the next DataLoader starts (its workers, or the main process) go on
        from the samples its predecessor read: after a resume, or when Lightning reloads the training DataLoader
        (``reload_dataloaders_every_n_epochs``), whose new workers would otherwise start every stream again."""
        _, rank = self._world()
        for sid in self.mixer.stream_ids:
            source = self.mixer.sources[sid]
            reads = self.mixer.stream_reads.get(source.name)
            if isinstance(source.dataset, StreamDataset):
                source.dataset.skip = {} if reads is None else {
                    (w if self._num_workers else None): int(n) for w, n in enumerate(reads[rank].tolist()) if n}


class MixedDataModule(MixedDataModuleMixin, LightningDataModule):
    __doc__ = MixedDataModuleMixin.__doc__
