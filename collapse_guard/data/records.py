"""What a :class:`~collapse_guard.MixedDataModule` tells its callbacks and the report, and the guard's handle.

:class:`MixingRecordsMixin` reads the datamodule's mixing state by name (sources, samples drawn, reserve,
injections, the provenance manifest) and moves reserve data into training (:meth:`~MixingRecordsMixin.inject`), so
that nothing outside :mod:`collapse_guard.data` needs the mixer's internals; and checkpoints that state.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

from collapse_guard._numbers import check_real
from collapse_guard.data.arguments import check_fraction
from collapse_guard.data.provenance import provenance_manifest
from collapse_guard.data.wiring import drop_foreign_stream_reads


class MixingRecordsMixin:
    """The records, the guard's handle and the checkpoint of
    :class:`~collapse_guard.data.datamodule.MixedDataModuleMixin`, which sets ``mixer`` (at set-up),
    ``contamination``, ``heldout_real``, ``heldout_synthetic`` and ``_pending_state``, and gives ``_world()`` and
    the DataLoader ``_options``; a ``trainer`` may be attached."""

    # -- records: what the callbacks and the report read ------------------------------------------------------
    @property
    def source_names(self) -> list[str]:
        """The sources' names: ``real``, ``reserve``, then the synthetic ones (empty before :meth:`setup`)."""
        return self.mixer.names if self.mixer is not None else []

    @property
    def real_source_names(self) -> list[str]:
        """The names of the sources of real data, ``["real", "reserve"]`` (empty before :meth:`setup`)."""
        return self.mixer.real_names if self.mixer is not None else []

    def source_provenance(self) -> list[dict]:
        """Each source's own provenance as it was given, in :attr:`source_names` order: ``name``, ``kind``
        (``"real"`` or ``"synthetic"``), ``generator``, ``generation``, ``params``, ``size`` (``None`` for a stream;
        ``streaming: True`` then). Empty before :meth:`setup`. :meth:`provenance` adds what the fit drew.

        Example::

            [p["generation"] for p in dm.source_provenance() if p["kind"] == "synthetic"]   # e.g. [1, 2]
        """
        return [source.provenance() for source in self.mixer.sources] if self.mixer is not None else []

    def samples_by_source(self, scope: str = "fit") -> dict[str, int]:
        """Samples drawn per source, by name: ``scope="fit"`` over the fit (all ranks; checkpointed), ``"epoch"``
        this epoch (all ranks), ``"rank_epoch"`` this epoch on this rank. Empty before :meth:`setup`.

        Raises:
            ValueError: an unknown ``scope``.

        Example::

            dm.samples_by_source()  # {"real": 96, "reserve": 0, "gen1": 160}
        """
        counts = {"fit": "total_counts", "epoch": "epoch_counts", "rank_epoch": "local_epoch_counts"}
        if scope not in counts:
            raise ValueError(f"`scope` must be one of {sorted(counts)}, got {scope!r}.")
        return self.mixer.by_name(getattr(self.mixer, counts[scope])) if self.mixer is not None else {}

    @property
    def epoch_size(self) -> int:
        """Samples one epoch draws over all ranks: ``samples_per_epoch`` when given, else the real and synthetic
        training pools together (0 before :meth:`setup`)."""
        return self.mixer.samples_per_epoch if self.mixer is not None else 0

    @property
    def reserve_size(self) -> int:
        """Size of the initial reserve, injected or not (0 before :meth:`setup` or without a reserve)."""
        return len(self.mixer.reserve_order) if self.mixer is not None else 0

    @property
    def reserve_remaining(self) -> int:
        """Reserve samples not yet injected (0 before :meth:`setup`)."""
        return self.mixer.reserve_remaining if self.mixer is not None else 0

    @property
    def injections(self) -> list[dict]:
        """The injection records, oldest first (see :meth:`inject`); checkpointed with the datamodule."""
        return self.mixer.injections if self.mixer is not None else []

    @property
    def quarantines(self) -> list[dict]:
        """The quarantine records, oldest first (see :meth:`quarantine`); checkpointed with the datamodule."""
        return self.mixer.quarantines if self.mixer is not None else []

    def quarantine(self, sources: Any, weight: float = 0.0, reason: str = "") -> dict:
        """Drop or down-weight synthetic sources from the next epoch on; their slots go to the other synthetic
        sources (every synthetic source dropped: the real fraction becomes 1).

        Like :meth:`inject`, it acts through the batch sampler's plan of the next epoch (no dataloader reload), is
        recorded with its reason (:attr:`quarantines`, the provenance) and checkpointed, so a resumed fit keeps it.
        A later quarantine never raises a source's weight back.

        Args:
            sources: a synthetic source's name or a list of them.
            weight: the factor each source's weight is multiplied by, in ``[0, 1)`` (0: dropped).
            reason: why, for the record.

        Returns:
            The record: ``epoch``, ``sources``, ``weight``, ``reason``, ``shares_before`` / ``shares_after`` (each
            synthetic source's share of the next epoch's synthetic samples) and ``real_fraction_before`` /
            ``real_fraction_after`` (the next epoch's target real fraction).

        Raises:
            RuntimeError: before :meth:`setup`.
            ValueError: a name that is not a synthetic source; a ``weight`` outside ``[0, 1)`` or not a number.

        Example::

            dm.quarantine("gen20", reason="k-NN recall of gen20 fell below the real baseline")
            dm.quarantines[-1]["shares_after"]   # {"gen10": 1.0, "gen20": 0.0}
        """
        if self.mixer is None:
            raise RuntimeError("MixedDataModule.quarantine() needs setup() first: the sources are known then.")
        names = [sources] if isinstance(sources, str) else list(sources)
        synthetic = [s.name for s in self.mixer.sources[2:]]
        unknown = [n for n in names if n not in synthetic]
        if unknown or not names:
            raise ValueError(f"`sources` must name synthetic sources ({synthetic}), got {names!r}.")
        if not 0.0 <= check_real(weight, "weight") < 1.0:
            raise ValueError(f"`weight` must be in [0, 1) (0 drops the sources), got {weight!r}.")
        return self.mixer.quarantine(names, float(weight), self._epoch(), reason)

    def provenance(self) -> Optional[dict]:
        """The provenance manifest (:func:`~collapse_guard.data.provenance.provenance_manifest`): every source with
        its provenance, training pool, samples drawn and share; held-out sizes; injections; the contamination
        report; with a ``SourceAudit`` among the callbacks, its audit (``"audit"``). ``None`` before :meth:`setup`."""
        if self.mixer is None:
            return None
        manifest = provenance_manifest(self.mixer, self.contamination, getattr(self, "heldout_real", None),
                                       getattr(self, "heldout_synthetic", None))
        if getattr(self, "audit", None) is not None:
            manifest["audit"] = self.audit
        return manifest

    # -- the guard's handle ---------------------------------------------------------------------------------
    def _epoch(self) -> Optional[int]:
        """The Trainer's current epoch, ``None`` without a Trainer."""
        trainer = getattr(self, "trainer", None)
        return trainer.current_epoch if trainer is not None else None

    def current_real_fraction(self, epoch: Optional[int] = None) -> float:
        """Target real fraction of ``epoch`` (default: the current or next epoch), injections included."""
        if epoch is None:
            epoch = self._epoch() or 0
        return self.mixer.target_fraction(epoch)

    def inject(
        self,
        num_samples: Optional[int] = None,
        fraction_of_reserve: Optional[float] = None,
        min_real_fraction: Optional[float] = None,
        reason: str = "",
        *,
        real_fraction: Optional[float] = None,
    ) -> dict:
        """Move reserve real data into training and/or raise the real fraction, from the next epoch on.

        The batch sampler re-plans at the start of every epoch, so no ``reload_dataloaders_every_n_epochs`` is
        needed. Injections are recorded (and checkpointed) with their reason: :attr:`injections`.

        Args:
            num_samples: reserve samples to move into the real training pool (at most :attr:`reserve_remaining`).
            fraction_of_reserve: alternatively, a share in ``(0, 1]`` of the *initial* reserve (:attr:`reserve_size`)
                to move, at least one sample; when less than that is left, what is left moves.
            min_real_fraction: a floor in ``[0, 1]`` for the target real fraction from the next epoch on: it raises
                the target to it and never lowers it (``None``: leave the target as it is).
            reason: why, for the record.
            real_fraction: deprecated alias of ``min_real_fraction``.

        Returns:
            The injection record: ``epoch`` (the current one, ``None`` without a Trainer), ``samples`` moved,
            ``real_fraction_floor`` (the floor now in force), ``reserve_remaining``, ``reason``, and
            ``real_fraction_before`` / ``real_fraction_after``: the target real fraction of the next epoch before and
            after this injection (``None`` where a schedule has no value for it).

        Raises:
            RuntimeError: before :meth:`setup`.
            ValueError: samples asked of an empty reserve; both ``num_samples`` and ``fraction_of_reserve``; both
                ``min_real_fraction`` and ``real_fraction``; a fraction out of range.

        Example::

            if dm.reserve_remaining > 0:
                dm.inject(fraction_of_reserve=0.25, min_real_fraction=0.5, reason="held-out recall fell")
            else:
                dm.inject(min_real_fraction=0.5, reason="held-out recall fell")
        """
        if real_fraction is not None:
            warnings.warn("`inject(real_fraction=)` is deprecated: it is a floor, pass `min_real_fraction=` instead.",
                          DeprecationWarning, stacklevel=2)
            if min_real_fraction is not None:
                raise ValueError("give `min_real_fraction` or its deprecated alias `real_fraction`, not both.")
            min_real_fraction = real_fraction
        if self.mixer is None:
            raise RuntimeError("MixedDataModule.inject() needs setup() first (the Trainer calls it).")
        if num_samples is not None and fraction_of_reserve is not None:
            raise ValueError("give `num_samples` or `fraction_of_reserve`, not both.")
        if fraction_of_reserve is not None:
            if not 0.0 < fraction_of_reserve <= 1.0:
                raise ValueError(f"`fraction_of_reserve` must be in (0, 1], got {fraction_of_reserve!r}.")
            num_samples = max(1, int(round(fraction_of_reserve * self.reserve_size)))
        if num_samples is not None and num_samples > 0 and self.mixer.reserve_remaining == 0:
            raise ValueError("the reserve is spent (or was never set: pass `reserve=` to MixedDataModule).")
        if min_real_fraction is not None:
            check_fraction(min_real_fraction, "min_real_fraction")
        moved = min(num_samples or 0, self.reserve_remaining)  # fraction_of_reserve: what is left, when less is left
        return self.mixer.inject(moved, min_real_fraction, self._epoch(), reason)

    # -- checkpoints ----------------------------------------------------------------------------------------
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
        self.mixer.load_state_dict(state_dict)
        drop_foreign_stream_reads(self.mixer, self._world()[0], self._options.num_workers)
