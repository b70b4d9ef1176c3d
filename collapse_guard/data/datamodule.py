"""``MixedDataModule``: the user's real data and synthetic sources, mixed at a target real fraction.

This module is the Lightning face: hooks, loaders and the guard's handle. The work is done by functions of explicit
inputs, one job a module: argument checks (:mod:`~collapse_guard.data.arguments`), splits and index layout
(:mod:`~collapse_guard.data.splits`), stream wiring (:mod:`~collapse_guard.data.wiring`), content checks and the
contamination report (:mod:`~collapse_guard.data.checks`), loaders and sharding (:mod:`~collapse_guard.data.loaders`),
the mixing state and counts (:mod:`~collapse_guard.data.mixing`) and the provenance manifest
(:mod:`~collapse_guard.data.provenance`).

All of its code lives in :class:`MixedDataModuleMixin`, which is bound to a Lightning namespace's
``LightningDataModule`` in one line: :class:`MixedDataModule` here for ``pytorch_lightning``, and
``collapse_guard.lightning.MixedDataModule`` for ``lightning.pytorch`` (whose classes do not mix with
``pytorch_lightning``'s: a ``Trainer`` of one namespace rejects the other's DataModules).
"""
from __future__ import annotations

import numbers
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from collapse_guard._collective import run_collectively
from collapse_guard._compat import LightningDataModule, is_datamodule
from collapse_guard.data import checks, loaders, rank_split, splits, wiring
from collapse_guard.data.arguments import check_mixing_arguments
from collapse_guard.data.finite import FiniteScan
from collapse_guard.data.first_epoch import FirstEpochScan, scanned
from collapse_guard.data.from_column import from_provenance_column
from collapse_guard.data.mixing import MixingState, RealFraction
from collapse_guard.data.attach import TrainerNamespaceMixin
from collapse_guard.data.records import MixingRecordsMixin
from collapse_guard.data.sampler import MixedBatchSampler
from collapse_guard.data.sources import SyntheticSource, resolve_synthetic

DEFAULT_BATCH_SIZE = 32

#: The types of ``real`` and ``synthetic`` as LightningCLI (jsonargparse) reads them from YAML: the classes first, so
#: ``class_path`` entries are checked and their ``init_args`` can be overridden from the command line; ``Any`` last,
#: for everything else Python code may pass (a ``datasets.Dataset``, a ``lightning.pytorch`` DataModule, ...).
RealData = Union[LightningDataModule, Dataset, Any]
SourceData = Union[Dataset, SyntheticSource, LightningDataModule, Any]
SyntheticData = Optional[Union[Dataset, Mapping[str, SourceData], Any]]


class MixedDataModuleMixin(TrainerNamespaceMixin, MixingRecordsMixin):
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
            string of each sample). A held-out real sample found in the real training data or the reserve is an
            error; synthetic samples identical to held-out real ones (a generator that memorised them) are warned
            about and recorded in :attr:`contamination`. Data with bulk access is read a block of rows at a time
            (see :mod:`collapse_guard.data.bulk`): a ``TensorDataset``, a numpy / memory-mapped array, a
            ``StackDataset`` over arrays, a ``Dataset`` with a ``row_arrays()`` method returning the arrays its
            samples are rows of, a Hugging Face dataset of numeric columns; anything else sample by sample. A
            synthetic source of 20,000 samples or more without bulk access is not read at set-up: its samples are
            hashed as the first training epoch reads them (in the DataLoader workers), and copies found then are
            warned about at the end of that epoch and recorded in :attr:`contamination` (``"deferred": True``).
            Large datasets' digests are cached in the process (a resume or a second fit does not recompute them).
            ``False`` skips the check; a callable ``sample -> part`` hashes only that part of each sample (e.g.
            ``lambda s: s[0]`` for the inputs; every dataset is then read sample by sample). Samples are hashed as
            ``dataset[i]`` returns them: a dataset that augments at random in ``__getitem__`` defeats the check (it
            never moves the global random generators). Streaming sources are not scanned (``contamination`` marks
            them ``"streaming": True``).
        stream_heldout_samples: held-out samples read off each streaming source at :meth:`setup` (at most
            ``2 * stream_heldout_samples / synthetic_holdout`` samples are read to find them).

    Attributes:
        heldout_real: the held-out real dataset (after :meth:`setup`).
        heldout_synthetic: the held-out part of the synthetic sources, or ``None``.
        mixer: the :class:`~collapse_guard.data.mixing.MixingState`: pools, fraction, injections, counts.
        Records (after :meth:`setup`; empty or ``None`` before): :attr:`source_names`, :meth:`samples_by_source`,
            :attr:`reserve_size`, :attr:`reserve_remaining`, :attr:`injections`, :meth:`provenance`.
        contamination: after :meth:`setup` with ``verify_holdout``: per synthetic source, how many of its samples
            are exact copies of held-out real samples (``{"checked": True, "heldout_real": n, "sources": {name:
            {"size", "duplicates", "in_training", "heldout_real_matched", "examples"}}}``); ``{"checked": False}``
            when the check is off.

    Raises:
        ValueError: a fraction outside its range (or a schedule returning or raising one), an empty source or
            held-out set, ``holdout="val"`` without a validation set, a fraction that needs an empty pool, sources
            whose samples differ in structure or dtype or do not collate together, synthetic (or ``reserve``) samples
            holding NaN or an infinity (a source of 20,000 samples or more without bulk access, and a stream, as
            training reads them: the fit stops before the batch holding one), held-out real samples that are
            also training or reserve samples, a held-out set smaller than the number of ranks, a streaming source
            without ``samples_per_epoch`` or with fewer Hugging Face shards than DataLoader workers; a count,
            ``seed`` or synthetic weight that is not a number of the right kind (a bool, a str, ``1.5`` for a count,
            NaN); synthetic weights negative, all zero or for an unknown source; a source name that is empty or
            holds ``/`` or whitespace (names end metric keys, ``collapse/share/<name>``).
        TypeError: an argument of an unsupported type (a streaming ``real`` included, or a real DataModule whose
            training set is an ``IterableDataset``: real data is split by index); a source name that is not a str.

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
        check_mixing_arguments(real, real_fraction, holdout, reserve, synthetic_holdout, batch_size,
                               samples_per_epoch, verify_holdout, stream_heldout_samples, synthetic=synthetic,
                               synthetic_weights=synthetic_weights, seed=seed, num_workers=num_workers)
        self.real, self.synthetic, self.real_fraction = real, synthetic, real_fraction
        self.holdout, self.reserve, self.synthetic_holdout = holdout, reserve, float(synthetic_holdout)
        self.batch_size, self.samples_per_epoch = batch_size, samples_per_epoch
        self.synthetic_weights, self.seed = synthetic_weights, int(seed)
        self.num_workers, self.collate_fn = num_workers, collate_fn
        self.verify_holdout, self.stream_heldout_samples = verify_holdout, stream_heldout_samples
        self.contamination: dict = {"checked": False}
        self.audit: Optional[dict] = None  # a SourceAudit callback's audit of the synthetic sources, after set-up
        self._scan: Optional[FirstEpochScan] = None
        self._finite: Optional[FiniteScan] = None
        self.mixer: Optional[MixingState] = None
        self._pending_state: Optional[dict] = None
        self._counting = True

    from_provenance_column = classmethod(from_provenance_column)

    # -- set-up ---------------------------------------------------------------------------------------------
    @property
    def real_datamodule(self) -> Optional[LightningDataModule]:
        """The real data's ``LightningDataModule`` (either namespace), or ``None`` when ``real`` is a Dataset."""
        return self.real if is_datamodule(self.real) else None

    def prepare_data(self) -> None:
        if self.real_datamodule is not None:
            self.real_datamodule.prepare_data()

    def setup(self, stage: str) -> None:
        """Resolve sources, split held-out real, reserve and held-out synthetic data, and check the collate.

        Under several processes the checks run on every rank together
        (:func:`~collapse_guard._collective.run_collectively`): a check failing on one rank raises its error there and,
        on every other rank, a ``RuntimeError`` naming that rank and the error, instead of leaving them waiting.
        The held-out check's reading of a large real dataset without bulk access is split across the ranks
        (:func:`~collapse_guard.data.rank_split.read_across_ranks`): each reads its share.
        """
        dm = self.real_datamodule
        if dm is not None:
            dm.trainer = self.trainer
        if self.mixer is not None:
            return

        def build() -> splits.Layout:
            real_dataset, self._options = loaders.real_training_data(
                self.real, self.collate_fn, self.batch_size, self.num_workers, DEFAULT_BATCH_SIZE)
            return self._build(real_dataset)

        layout = self._together("MixedDataModule set-up", build)
        if self.verify_holdout is not False:
            if self._trainer_attached and not callable(self.verify_holdout):  # large opaque data: a share per rank
                rank_split.read_across_ranks(self.trainer, [self.heldout_real, layout.datasets[0], layout.reserve_data])
            self._together("MixedDataModule held-out check", lambda: self._verify(layout))
        if self._pending_state is not None:
            self._restore(self._pending_state)
            self._pending_state = None

    def _together(self, who: str, fn: Callable[[], Any]) -> Any:
        """``fn()``; under a Trainer on every rank together: a failure on one rank stops every rank, naming it."""
        return run_collectively(self.trainer, who, fn) if self._trainer_attached else fn()

    def _build(self, real_dataset: Dataset) -> splits.Layout:
        """Lay the sources out (:mod:`~collapse_guard.data.splits`), build the mixer, run the content checks."""
        gen = torch.Generator().manual_seed(self.seed)
        layout = splits.split_real(real_dataset, self.holdout, self.reserve, gen,
                                    lambda: splits.validation_set(self.real_datamodule))
        synthetic = resolve_synthetic(self.synthetic)
        world, rank = self._world()
        wiring.wrap_streams(synthetic, self.samples_per_epoch, self.synthetic_holdout, self._options.num_workers,
                            world, rank)
        splits.lay_out(layout, synthetic, gen, self.synthetic_holdout, lambda stream: wiring.stream_heldout_set(
            stream, self.stream_heldout_samples, self.synthetic_holdout))
        weights = splits.synthetic_weights(synthetic, self.synthetic_weights)
        self.heldout_real, self.train_set = layout.heldout_real, layout.train_set()
        self.heldout_synthetic = Subset(self.train_set, layout.heldout_synthetic) if layout.heldout_synthetic else None
        n_train = len(layout.real_pool) + sum(len(p) for p in layout.synthetic_pools)
        self.mixer = MixingState(layout.sources, layout.real_pool, layout.reserve_order, layout.synthetic_pools,
                                 layout.source_of(), self.real_fraction, self.samples_per_epoch or n_train, self.seed,
                                 synthetic_weights=weights)
        self._check(layout)
        self.mixer.loader_workers = self._options.num_workers
        return layout

    def _check(self, layout: splits.Layout) -> None:
        """The content checks of :mod:`~collapse_guard.data.checks` on a fresh layout; the contamination report."""
        max_epochs = getattr(self.trainer, "max_epochs", None) if self._trainer_attached else None
        epochs = range(max_epochs if max_epochs and max_epochs > 0 else 100) if callable(self.real_fraction) else [0]
        self._finite = checks.check_layout(layout, self.mixer, self.train_set, self._options.collate_fn, epochs,
                                           reserve_given=not isinstance(self.reserve, numbers.Real))
        checks.check_world_size(self._world()[0], self.heldout_real, self.heldout_synthetic)

    def _verify(self, layout: splits.Layout) -> None:
        """The held-out check of :func:`~collapse_guard.data.checks.verify_holdout`; the contamination report."""
        label = (f'`holdout="val"` ({type(self.real).__name__}\'s validation set)' if self.holdout == "val"
                 else "`holdout`")
        key = self.verify_holdout if callable(self.verify_holdout) else None
        self.contamination = checks.verify_holdout(
            self.heldout_real, layout.datasets[0], layout.real_pool, layout.reserve_data, layout.synthetic,
            layout.synthetic_pools, layout.spans, key=key, holdout_label=label)
        checks.warn_heldout_copies(self.contamination)
        world, rank = self._world()
        self._scan = checks.first_epoch_scan(self.heldout_real, self.contamination, layout.synthetic,
                                             layout.spans, key=key, rank=rank, world_size=world)

    @property
    def _trainer_attached(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def _world(self) -> tuple[int, int]:
        """``(world size, global rank)`` of the attached Trainer, ``(1, 0)`` without one."""
        if not self._trainer_attached:
            return 1, 0
        return int(self.trainer.world_size), int(self.trainer.global_rank)

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
        options = self._options
        return checks.heldout_classes(self.heldout_real, options.collate_fn, options.batch_size, batch_fn)

    # -- loaders --------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer if self._trainer_attached else None
        sampler = MixedBatchSampler(None, self._options.batch_size, True, mixer=self.mixer,
                                    num_replicas=trainer.world_size if trainer else 1,
                                    rank=trainer.global_rank if trainer else 0,
                                    epoch_fn=lambda: loaders.epoch_to_run(trainer))
        wiring.continue_streams(self.mixer, self._world()[1], self._options.num_workers)
        scan, workers = self._scan, self._options.num_workers
        # a large source without bulk access: checked as the first epoch reads it; with workers only under a Trainer,
        # whose batches drain what the workers send (unread, their pipe would fill and block them)
        scanning = scan is not None and scan.active and (workers == 0 or trainer is not None)
        dataset = scanned(self.train_set, [scan if scanning else None, self._finite], workers)
        return self._options.loader(dataset, batch_sampler=sampler)

    def val_dataloader(self) -> Any:
        """The real DataModule's own validation loader when there is one, else the held-out real data.

        Lightning shards it between ranks itself (``use_distributed_sampler``), so it is not sharded here.
        """
        dm = self.real_datamodule
        if dm is not None and self.holdout == "val":
            return dm.val_dataloader()
        return self.heldout_real_dataloader(shard=False)

    def test_dataloader(self) -> Any:
        return self._delegated("test")

    def predict_dataloader(self) -> Any:
        return self._delegated("predict")

    def _delegated(self, stage: str) -> Any:
        """The real DataModule's own ``test`` / ``predict`` loader (it is set up for that stage first).

        Raises:
            NotImplementedError: ``real`` is no LightningDataModule (pass the loader to ``trainer.test`` /
                ``trainer.predict`` yourself).
        """
        dm = self.real_datamodule
        if dm is None:
            raise NotImplementedError(f"`real` is not a LightningDataModule: it has no {stage} set to delegate to; pass "
                                      f"the loader to `trainer.{stage}(model, dataloaders=...)`.")
        dm.setup(stage)
        return getattr(dm, f"{stage}_dataloader")()

    def _in_order(self, dataset: Optional[Dataset], batch_size: Optional[int], shard: Optional[bool]) -> Any:
        """``dataset`` sharded between ranks (unless ``shard=False``), in order; ``None`` for no dataset."""
        if dataset is None:
            return None
        return self._options.loader(loaders.shard(dataset, *self._world(), enabled=shard),
                                    batch_size=batch_size or self._options.batch_size, shuffle=False)

    def heldout_real_dataloader(self, batch_size: Optional[int] = None, shard: Optional[bool] = None) -> DataLoader:
        """Held-out real data, in order, never trained on.

        Under several processes each rank gets every ``world_size``-th sample from its rank on (no padding, no
        sample on two ranks), so metrics whose states are summed over ranks (torchmetrics' sync) count every
        held-out sample exactly once. ``shard=False`` gives every rank all of it.
        """
        return self._in_order(self.heldout_real, batch_size, shard)

    def heldout_synthetic_dataloader(
        self, batch_size: Optional[int] = None, shard: Optional[bool] = None, max_samples: Optional[int] = None
    ) -> Optional[DataLoader]:
        """Held-out synthetic data (``synthetic_holdout`` of every source), or ``None``; sharded as the real one.

        ``max_samples`` keeps at most that many held-out synthetic samples: a random subset drawn with ``seed``
        (the same at every call), in order, then sharded between ranks like the whole set (``None``: all).
        """
        dataset = self.heldout_synthetic
        if dataset is not None and max_samples is not None and max_samples < len(dataset):
            dataset = Subset(dataset, loaders.seeded_subset(len(dataset), max_samples, self.seed).tolist())
        return self._in_order(dataset, batch_size, shard)

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
        train_set = getattr(self, "train_set", None)
        return self._in_order(loaders.synthetic_training_set(train_set, self.mixer, max_samples, self.seed),
                              batch_size, shard)

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
            for scan in (self._scan, self._finite):
                if scan is not None and scan.active:  # after the first epoch: one attribute read a batch
                    scan.after_batch(self.trainer.current_epoch, self.trainer.num_training_batches, self._gather)
        dm = self.real_datamodule
        return dm.on_after_batch_transfer(batch, dataloader_idx) if dm is not None else batch

    def _gather(self, obj: Any) -> Optional[list]:
        """``[every rank's obj]`` under several processes (``torch.distributed.all_gather_object``, a collective),
        else ``None``. Called once, at the end of the first epoch, not at every batch."""
        world = self._world()[0]
        if world < 2 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return None
        out: list = [None] * world
        torch.distributed.all_gather_object(out, obj)
        return out

    def teardown(self, stage: str) -> None:
        """End the first-epoch scan of :attr:`contamination` if the fit stopped within its first epoch."""
        for scan in (self._scan, self._finite):
            if scan is not None and stage == "fit":
                scan.finish()
        super().teardown(stage)

    @contextmanager
    def counting_paused(self) -> Iterator[None]:
        """Batches moved to the device inside this block are not training batches: do not count them."""
        self._counting = False
        try:
            yield
        finally:
            self._counting = True


class MixedDataModule(MixedDataModuleMixin, LightningDataModule):
    __doc__ = MixedDataModuleMixin.__doc__
