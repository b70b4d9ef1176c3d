"""Mixing state: the training pools, the target real fraction, injections and the per-source sample counts.

One object owns everything that decides which samples are drawn, so the batch sampler stays stateless
between epochs and a checkpoint of this state is enough to replay a fit.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from collapse_guard.data.arguments import check_fraction
from collapse_guard.data.sampler import EpochPlan, plan_epoch
from collapse_guard.data.sources import DataSource

RealFraction = Union[float, Callable[[int], float]]

__all__ = ["MixingState", "RealFraction", "check_fraction"]


class MixingState:
    """Pools, fraction schedule, injections and counts of a :class:`~collapse_guard.MixedDataModule`.

    Counts: :attr:`epoch_counts` and :attr:`total_counts` are the samples of each source that *all ranks
    together* received (this epoch, and since the fit began), read off the global plan batch by batch, so they
    are the same on every rank and a checkpoint written by rank 0 holds the whole fit's counts;
    :attr:`local_epoch_counts` are this rank's own (what ``RatioMonitor`` sums over ranks to measure the epoch).

    Stream reads: for every streaming source, :attr:`stream_reads` holds how many samples each rank's
    DataLoader worker (``loader_workers`` of them per rank, batch ``k`` of an epoch going to worker
    ``k % loader_workers``, as PyTorch's DataLoader assigns them; one column without workers) has read off the
    stream: counted off the global plan as the batch sampler hands each batch out (:meth:`count_stream_reads`), so
    rank 0's checkpoint holds every rank's. A resumed fit, or a reloaded training DataLoader, fast-forwards each
    new reader by its count (:meth:`MixedDataModule.train_dataloader`).

    What a checkpoint holds (:meth:`state_dict`): the seed, the reserve cursor, the real fraction floor set by
    injections, the injections made, the counts, the stream reads, and a fingerprint of the pools. Together with the
    constructor's arguments (the same data, splits, schedule, batch size and samples per epoch) that is all a
    resumed fit needs to draw exactly the batches of an uninterrupted one: the plan of an epoch is a pure function
    of ``(seed, epoch, pools, target fraction, batch size, batches, world size)``, and the sampler keeps no other
    random state.

    Args:
        sources: all sources in dataset order: ``real``, ``reserve``, then the synthetic ones.
        real_pool: long tensor of dataset indices of real training samples.
        reserve_order: long tensor of reserve dataset indices, in the seeded order they are injected.
        synthetic_pools: one long tensor of dataset indices per synthetic source (its training part).
        source_of: tensor mapping each dataset index to its source id.
        real_fraction: target real share, a float in ``[0, 1]`` or a function ``epoch -> float``.
        samples_per_epoch: samples drawn per epoch over all ranks.
        seed: sampler seed.
        synthetic_weights: relative share of each synthetic source, or ``None`` for their sizes.
    """

    def __init__(
        self,
        sources: Sequence[DataSource],
        real_pool: Tensor,
        reserve_order: Tensor,
        synthetic_pools: Sequence[Tensor],
        source_of: Tensor,
        real_fraction: RealFraction,
        samples_per_epoch: int,
        seed: int,
        synthetic_weights: Optional[Tensor] = None,
    ) -> None:
        self.sources, self._stream_ids = list(sources), None
        self.base_real_pool, self.reserve_order, self.synthetic_pools = real_pool, reserve_order, list(synthetic_pools)
        self.source_of, self.synthetic_weights = source_of, synthetic_weights
        self.schedule, self.samples_per_epoch, self.seed = real_fraction, samples_per_epoch, seed
        # everything below is state: saved and restored with checkpoints
        self.reserve_cursor = 0
        self.real_fraction_floor = 0.0
        self.injections: list[dict] = []
        self.quarantines: list[dict] = []  # what :attr:`quarantined` is read off
        self.total_counts = torch.zeros(len(self.sources), dtype=torch.long)
        self.epoch_counts = torch.zeros(len(self.sources), dtype=torch.long)
        self.local_epoch_counts = torch.zeros(len(self.sources), dtype=torch.long)
        self.current_epoch: Optional[int] = None
        self.plan: Optional[EpochPlan] = None
        self.batch_cursor = 0
        #: DataLoader workers per rank (set by the datamodule; 0: the main process reads)
        self.loader_workers = 0
        #: streaming source name -> long tensor ``(world size, max(loader_workers, 1))`` of samples read
        self.stream_reads: dict[str, Tensor] = {}
        #: the ``loader_workers`` the restored :attr:`stream_reads` were counted with
        self.stream_reads_workers: Optional[int] = None

    # -- what is drawn ---------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """The sources' names in id order (``real``, ``reserve``, then the synthetic ones)."""
        return [s.name for s in self.sources]

    @property
    def real_names(self) -> list[str]:
        """The names of the sources of real data (the real training data and the reserve)."""
        return [s.name for s in self.sources if s.is_real]

    def source_id(self, name: str) -> int:
        """The id of the source called ``name`` (its position in the counts and in :attr:`source_of`).

        Raises:
            KeyError: no source has that name.
        """
        for i, source in enumerate(self.sources):
            if source.name == name:
                return i
        raise KeyError(f"no source named {name!r}; the sources are {self.names}.")

    def by_name(self, counts: Tensor) -> dict[str, int]:
        """Per-source ``counts`` (a tensor in id order, e.g. :attr:`total_counts`) as ``{name: count}``."""
        return dict(zip(self.names, [int(c) for c in counts.tolist()]))

    @property
    def real_pool(self) -> Tensor:
        """Real training indices now in play: the real pool and the reserve injected so far."""
        return torch.cat([self.base_real_pool, self.reserve_order[: self.reserve_cursor]])

    @property
    def reserve_remaining(self) -> int:
        """Reserve samples not yet injected."""
        return len(self.reserve_order) - self.reserve_cursor

    def scheduled_fraction(self, epoch: int) -> float:
        """The user's target real fraction at ``epoch``, before any injection raised it.

        Raises:
            ValueError: when the schedule returns something other than a number in ``[0, 1]``, or raises.
        """
        if not callable(self.schedule):
            return check_fraction(self.schedule, "real_fraction")
        try:
            value = self.schedule(epoch)
        except Exception as err:  # noqa: BLE001 - re-raised with the argument and the epoch
            raise ValueError(
                f"`real_fraction`: the schedule raised {type(err).__name__} at epoch {epoch}: {err}. A schedule must "
                "return a number in [0, 1] for every epoch of the fit (max_epochs; 100 epochs when unbounded)."
            ) from err
        return check_fraction(value, "real_fraction", epoch)

    def target_fraction(self, epoch: int) -> float:
        """Target real fraction at ``epoch``: the schedule, raised to the floor set by injections (1 once every
        synthetic source is quarantined away)."""
        if self.quarantined and not any(len(p) for p in self.effective_synthetic()[0]):
            return 1.0
        return max(self.scheduled_fraction(epoch), self.real_fraction_floor)

    @property
    def quarantined(self) -> dict[str, float]:
        """Synthetic source name -> the factor its weight is multiplied by from the next epoch (0: dropped): the
        lowest ``weight`` of the :attr:`quarantines` naming it (a later quarantine never raises it back)."""
        factors: dict[str, float] = {}
        for record in self.quarantines:
            for name in record["sources"]:
                factors[name] = min(float(record["weight"]), factors.get(name, 1.0))
        return factors

    def _base_weights(self) -> Tensor:
        """Each synthetic source's weight as given, else its pool size: float64, shape ``(S,)``."""
        if self.synthetic_weights is not None:
            return self.synthetic_weights.double()
        return torch.tensor([float(len(p)) for p in self.synthetic_pools], dtype=torch.float64)

    def effective_synthetic(self) -> tuple[list[Tensor], Optional[Tensor]]:
        """The synthetic pools and weights the next epoch draws from: as given, or, after :meth:`quarantine`, each
        source's weight (its given weight, else its size) times its quarantine factor, a dropped source's pool
        empty."""
        quarantined = self.quarantined
        if not quarantined:
            return self.synthetic_pools, self.synthetic_weights
        factor = torch.tensor([quarantined.get(s.name, 1.0) for s in self.sources[2:]], dtype=torch.float64)
        weights = self._base_weights() * factor
        return [p if w > 0 else p[:0] for p, w in zip(self.synthetic_pools, weights)], weights

    def synthetic_shares(self) -> dict[str, float]:
        """Each synthetic source's share of the synthetic samples the next epoch draws, by name (sums to 1, or 0
        when nothing synthetic is drawn)."""
        pools, weights = self.effective_synthetic()
        w = weights if weights is not None else self._base_weights()
        drawn = torch.tensor([len(p) > 0 for p in pools], dtype=torch.bool)  # bool even with no synthetic source
        w = torch.where(drawn, w.double(), torch.zeros_like(w, dtype=torch.float64))
        total = float(w.sum())
        return {s.name: (float(x) / total if total else 0.0) for s, x in zip(self.sources[2:], w)}

    def quarantine(self, names: Sequence[str], weight: float, epoch: Optional[int], reason: str) -> dict:
        """Multiply the weight of the synthetic sources ``names`` by ``weight`` from the next epoch on (0: drop them;
        never raised back by a later call), their slots going to the other synthetic sources.

        Returns:
            A record ``{"epoch", "sources", "weight", "reason", "shares_before", "shares_after",
            "real_fraction_before", "real_fraction_after"}``: synthetic shares and target real fraction of the next
            epoch before and after.
        """
        before, fraction_before = self.synthetic_shares(), self._next_target(epoch)
        record = {"epoch": epoch, "sources": list(names), "weight": float(weight), "reason": reason}
        self.quarantines.append(record)  # in force from here: the shares and fraction after read it
        record.update(shares_before=before, shares_after=self.synthetic_shares(),
                      real_fraction_before=fraction_before, real_fraction_after=self._next_target(epoch))
        return record

    def batches_per_rank(self, batch_size: int, num_replicas: int) -> int:
        return max(1, self.samples_per_epoch // (batch_size * num_replicas))

    def start_epoch(self, epoch: int, batch_size: int, num_replicas: int, rank: int) -> EpochPlan:
        """Plan ``epoch`` (called by the batch sampler when the epoch's iteration starts) and reset its counts."""
        pools, weights = self.effective_synthetic()
        self.plan = plan_epoch(
            real_pool=self.real_pool,
            synthetic_pools=pools,
            source_of=self.source_of,
            num_sources=len(self.sources),
            real_fraction=self.target_fraction(epoch),
            batch_size=batch_size,
            num_batches=self.batches_per_rank(batch_size, num_replicas),
            seed=self.seed,
            epoch=epoch,
            synthetic_weights=weights,
            num_replicas=num_replicas,
            rank=rank,
        )
        self.current_epoch = epoch
        self.epoch_counts = torch.zeros(len(self.sources), dtype=torch.long)
        self.local_epoch_counts = torch.zeros(len(self.sources), dtype=torch.long)
        self.batch_cursor = 0
        return self.plan

    def count_next_batch(self) -> None:
        """Add the next planned batch of this epoch to the counts (called once per batch the model receives).

        This rank's batch goes to :attr:`local_epoch_counts`; the batches every rank receives at the same step go
        to :attr:`epoch_counts` and :attr:`total_counts` (Lightning steps all ranks together).
        """
        if self.plan is None or self.batch_cursor >= len(self.plan.source_counts):
            return
        self.local_epoch_counts += self.plan.source_counts[self.batch_cursor]
        counts = self.plan.global_counts[self.batch_cursor]
        self.epoch_counts += counts
        self.total_counts += counts
        self.batch_cursor += 1

    @property
    def stream_ids(self) -> list[int]:
        """Source ids of the streaming sources (read at every batch handed out: kept, the sources do not change)."""
        if self._stream_ids is None:
            self._stream_ids = [i for i, source in enumerate(self.sources) if getattr(source, "streaming", False)]
        return self._stream_ids

    def count_stream_reads(self, batch: int) -> None:
        """Add the stream samples of batch ``batch`` of this epoch, of every rank, to the reads of the worker that
        loads it (called by the batch sampler as it hands the batch to the DataLoader).

        Counted when handed out, not when trained on: a DataLoader's workers read every batch they are handed,
        also the ones prefetched beyond an epoch cut short (``limit_train_batches``) or before Lightning recreates
        an iterator, so the counts are where each worker's stream stands.
        """
        rank_counts = self.plan.rank_counts if self.plan is not None else None
        if rank_counts is None or not self.stream_ids:
            return
        workers = max(self.loader_workers, 1)
        worker = batch % workers
        for sid in self.stream_ids:
            name = self.sources[sid].name
            reads = self.stream_reads.get(name)
            if reads is None or reads.shape != (rank_counts.shape[1], workers):
                reads = self.stream_reads[name] = torch.zeros(rank_counts.shape[1], workers, dtype=torch.long)
                self.stream_reads_workers = self.loader_workers
            reads[:, worker] += rank_counts[batch, :, sid]

    # -- injection ------------------------------------------------------------------------------------------
    def _next_target(self, epoch: Optional[int]) -> Optional[float]:
        """Target real fraction of the epoch after ``epoch`` (epoch 0 when ``None``); ``None`` when the schedule
        has no value there (a schedule checked only up to ``max_epochs``)."""
        try:
            return self.target_fraction(0 if epoch is None else epoch + 1)
        except ValueError:
            return None

    def inject(
        self, num_samples: int, min_real_fraction: Optional[float], epoch: Optional[int], reason: str
    ) -> dict:
        """Move ``num_samples`` reserve samples (at most what is left) into the real pool and raise the real fraction
        floor to ``min_real_fraction`` (never lowered).

        Returns:
            A record ``{"epoch", "samples", "real_fraction_floor", "reserve_remaining", "reason",
            "real_fraction_before", "real_fraction_after"}``: the last two are the target real fraction of the next
            epoch before and after this injection.
        """
        floor = None if min_real_fraction is None else check_fraction(min_real_fraction, "min_real_fraction")
        before = self._next_target(epoch)
        moved = min(int(num_samples), self.reserve_remaining)
        self.reserve_cursor += moved
        if floor is not None:
            self.real_fraction_floor = max(self.real_fraction_floor, floor)
        record = {
            "epoch": epoch,
            "samples": moved,
            "real_fraction_floor": self.real_fraction_floor,
            "reserve_remaining": self.reserve_remaining,
            "reason": reason,
            "real_fraction_before": before,
            "real_fraction_after": self._next_target(epoch),
        }
        self.injections.append(record)
        return record

    # -- checkpointing --------------------------------------------------------------------------------------
    def pools_fingerprint(self) -> dict:
        """Sizes of the pools and a digest of their indices: what a resumed fit must have to replay this one."""
        h = hashlib.sha1()
        for pool in [self.base_real_pool, self.reserve_order, *self.synthetic_pools]:
            h.update(pool.long().numpy().tobytes())
            h.update(b"|")
        return {
            "real": len(self.base_real_pool),
            "reserve": len(self.reserve_order),
            "synthetic": [len(p) for p in self.synthetic_pools],
            "digest": h.hexdigest(),
        }

    def state_dict(self) -> dict:
        """Plain data (JSON-ready): seed, reserve cursor, real fraction floor, injections, counts, pools."""
        return {
            "seed": self.seed,
            "reserve_cursor": self.reserve_cursor,
            "real_fraction_floor": self.real_fraction_floor,
            "injections": [dict(i) for i in self.injections],
            **({"quarantined": dict(self.quarantined), "quarantines": [dict(q) for q in self.quarantines]}
               if self.quarantines else {}),
            "total_counts": self.total_counts.tolist(),
            "epoch_counts": self.epoch_counts.tolist(),
            "current_epoch": self.current_epoch,
            "names": self.names,
            "pools": self.pools_fingerprint(),
            **({"stream_reads": {k: v.tolist() for k, v in self.stream_reads.items()},
                "stream_reads_workers": self.stream_reads_workers} if self.stream_reads else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s state.

        Raises:
            ValueError: when the checkpoint was written for other sources, another seed or other pools (the
                reserve cursor and the sampler plan would then point at other samples).
        """
        if state.get("names", self.names) != self.names:
            raise ValueError(
                f"checkpoint mixes sources {state['names']} but this MixedDataModule has {self.names}; "
                "resume with the same real and synthetic sources."
            )
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(
                f"checkpoint was written by a MixedDataModule with seed={state['seed']}, this one has "
                f"seed={self.seed}: the splits and the batches would differ. Resume with seed={state['seed']}."
            )
        pools = state.get("pools")
        if pools is not None and pools != self.pools_fingerprint():
            mine = {k: v for k, v in self.pools_fingerprint().items() if k != "digest"}
            theirs = {k: v for k, v in pools.items() if k != "digest"}
            raise ValueError(
                f"checkpoint was written for other training pools ({theirs}) than this MixedDataModule splits "
                f"({mine}{'' if mine != theirs else ', same sizes, other samples'}): resume with the same data, "
                "`holdout`, `reserve`, `synthetic_holdout` and seed."
            )
        self.reserve_cursor = int(state["reserve_cursor"])
        self.real_fraction_floor = float(state["real_fraction_floor"])
        self.injections = [dict(i) for i in state["injections"]]
        self.quarantines = [dict(q) for q in state.get("quarantines", [])]
        self.total_counts = torch.tensor(state["total_counts"], dtype=torch.long)
        if "epoch_counts" in state:
            self.epoch_counts = torch.tensor(state["epoch_counts"], dtype=torch.long)
        self.current_epoch = state.get("current_epoch", self.current_epoch)
        self.stream_reads = {k: torch.tensor(v, dtype=torch.long) for k, v in state.get("stream_reads", {}).items()}
        self.stream_reads_workers = state.get("stream_reads_workers")
