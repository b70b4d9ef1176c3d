"""Seeded, DDP-aware batch sampler that draws every batch at a target real fraction.

The plan of an epoch is a pure function of (seed, epoch, pools, real fraction, batch size, batches, world
size): every rank computes the same global plan and takes its own batches, so no sample is on two ranks in
one epoch and a resumed fit replays exactly the batches of an uninterrupted one.

How a plan is drawn, for ``G = batches_per_rank * world_size`` global batches of size ``B``:

* global batch ``g`` holds ``r_g = round((g + 1) B f) - round(g B f)`` real samples, so every batch is within
  one sample of ``B f`` and the epoch total is within half a sample of ``G B f``;
* real samples come from the real pool, synthetic ones from the synthetic sources, each stream a
  concatenation of fresh permutations of its pool, so every pooled sample appears once before any repeats;
* synthetic slots are shared between sources in proportion to ``synthetic_weights`` (default: source size);
* positions are shuffled within each batch; global batch ``g`` goes to rank ``g % world_size``.

Because every rank holds the global plan, every rank also knows what *all* ranks draw: the ``k``-th batch of
every rank together is global batches ``k W .. k W + W - 1``. :attr:`EpochPlan.global_counts` holds their
per-source counts, so the counts a :class:`~collapse_guard.data.mixing.MixingState` keeps are the same on every
rank without communication (Lightning runs the ranks in lockstep, one batch each per step), and a checkpoint
written by rank 0 holds the counts of the whole fit.

The global plan depends on the number of global batches ``G``, not on how they are split between ranks: a fit
resumed on another world size with the same ``G`` draws the same global batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DistributedSampler, Sampler


@dataclass
class EpochPlan:
    """The batches one rank draws in one epoch.

    Attributes:
        batches: long tensor ``(num_batches, batch_size)`` of indices into the concatenated dataset.
        source_counts: long tensor ``(num_batches, num_sources)``: samples of each source in each batch.
        real_fraction: the target real fraction the plan was drawn at, in ``[0, 1]``.
        global_counts: long tensor ``(num_batches, num_sources)``: samples of each source in the ``k``-th batch
            of all ranks together (equal to ``source_counts`` on one process).
        rank_counts: long tensor ``(num_batches, num_replicas, num_sources)``: samples of each source in the
            ``k``-th batch of each rank (``rank_counts[:, rank]`` is ``source_counts``; the sum over ranks is
            ``global_counts``).
        epoch: the epoch the plan was drawn for.
        num_replicas: the world size it was drawn for.
    """

    batches: Tensor
    source_counts: Tensor
    real_fraction: float
    global_counts: Optional[Tensor] = None
    rank_counts: Optional[Tensor] = None
    epoch: int = 0
    num_replicas: int = 1


def real_counts_per_batch(num_batches: int, batch_size: int, real_fraction: float) -> Tensor:
    """Real samples in each of ``num_batches`` batches: within one of ``batch_size * real_fraction`` each.

    Args:
        num_batches: number of (global) batches, ``>= 1``.
        batch_size: samples per batch, ``>= 1``.
        real_fraction: target share of real samples in ``[0, 1]``.

    Returns:
        Long tensor of shape ``(num_batches,)`` with values in ``[0, batch_size]``.
    """
    edges = torch.floor(torch.arange(num_batches + 1, dtype=torch.float64) * batch_size * real_fraction + 0.5)
    return (edges[1:] - edges[:-1]).long()


def _stream(pool: Tensor, length: int, gen: torch.Generator) -> Tensor:
    """``length`` items from ``pool`` as a concatenation of fresh random permutations (no repeat within one)."""
    if length == 0:
        return pool.new_empty(0)
    reps = -(-length // len(pool))
    return torch.cat([pool[torch.randperm(len(pool), generator=gen)] for _ in range(reps)])[:length]


def _apportion(total: int, weights: Tensor) -> Tensor:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder method)."""
    share = weights.double() / weights.double().sum() * total
    parts = share.floor().long()
    remainder = total - int(parts.sum())
    if remainder:
        parts[torch.argsort(share - parts, descending=True, stable=True)[:remainder]] += 1
    return parts


def plan_epoch(
    real_pool: Tensor,
    synthetic_pools: Sequence[Tensor],
    source_of: Tensor,
    num_sources: int,
    real_fraction: float,
    batch_size: int,
    num_batches: int,
    seed: int,
    epoch: int,
    synthetic_weights: Optional[Tensor] = None,
    num_replicas: int = 1,
    rank: int = 0,
) -> EpochPlan:
    """Draw the batches of one rank for one epoch (see the module docstring for the scheme).

    Args:
        real_pool: long tensor of dataset indices of the real samples in training.
        synthetic_pools: one long tensor of dataset indices per synthetic source.
        source_of: long tensor mapping every dataset index to its source id in ``[0, num_sources)``.
        num_sources: number of sources (real ones included).
        real_fraction: target share of real samples per batch, in ``[0, 1]``.
        batch_size: samples per batch.
        num_batches: batches per rank.
        seed: base seed; the plan depends on ``(seed, epoch)`` and the other arguments alone.
        epoch: the epoch index.
        synthetic_weights: relative share of each synthetic source (default: its size).
        num_replicas: world size.
        rank: this process's rank in ``[0, num_replicas)``.

    Returns:
        The :class:`EpochPlan` of this rank.

    Raises:
        ValueError: if the fraction needs samples from an empty pool, or ``rank`` is not in ``[0, num_replicas)``.

    Example::

        plan = plan_epoch(real_pool, [synth_pool], source_of, num_sources=3, real_fraction=0.3, batch_size=32,
                          num_batches=10, seed=0, epoch=4, num_replicas=2, rank=1)
        plan.batches  # (10, 32) dataset indices of rank 1's batches at epoch 4
    """
    if not 0 <= rank < num_replicas:
        raise ValueError(f"`rank` must be in [0, {num_replicas}), got {rank}.")
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1))
    total_batches = num_batches * num_replicas
    real_counts = real_counts_per_batch(total_batches, batch_size, real_fraction)
    n_real = int(real_counts.sum())
    n_synth = total_batches * batch_size - n_real
    if n_real and not len(real_pool):
        raise ValueError(f"real fraction {real_fraction} needs real samples but the real pool is empty")
    live = [i for i, p in enumerate(synthetic_pools) if len(p)]
    if n_synth and not live:
        raise ValueError(f"real fraction {real_fraction} < 1 needs synthetic samples but there are none")

    real_stream = _stream(real_pool, n_real, gen)
    if n_synth:
        pools = [synthetic_pools[i] for i in live]
        weights = synthetic_weights[live] if synthetic_weights is not None else torch.tensor([len(p) for p in pools])
        if synthetic_weights is None:
            synth_stream = _stream(torch.cat(pools), n_synth, gen)
        else:
            parts = [_stream(p, int(n), gen) for p, n in zip(pools, _apportion(n_synth, weights))]
            synth_stream = torch.cat(parts)[torch.randperm(n_synth, generator=gen)]
    else:
        synth_stream = real_pool.new_empty(0)

    is_real = torch.arange(batch_size)[None, :] < real_counts[:, None]
    batches = torch.empty(total_batches, batch_size, dtype=torch.long)
    batches[is_real] = real_stream
    batches[~is_real] = synth_stream
    order = torch.argsort(torch.rand(total_batches, batch_size, generator=gen), dim=1)
    batches = torch.gather(batches, 1, order)
    sources = source_of[batches].long()
    counts = torch.zeros(total_batches, num_sources, dtype=torch.long).scatter_add_(1, sources, torch.ones_like(sources))
    per_rank = counts.view(num_batches, num_replicas, num_sources)
    return EpochPlan(
        batches=batches[rank::num_replicas],
        source_counts=counts[rank::num_replicas],
        real_fraction=float(real_fraction),
        global_counts=per_rank.sum(1),
        rank_counts=per_rank,
        epoch=int(epoch),
        num_replicas=int(num_replicas),
    )


class EpochSampler(Sampler):
    """Holds the epoch Lightning sets through ``batch_sampler.sampler.set_epoch``; never iterated."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):  # pragma: no cover - the batch sampler never iterates it
        raise TypeError("EpochSampler only carries the epoch for MixedBatchSampler")


class MixedBatchSampler(BatchSampler):
    """Yields batches of dataset indices at the mixer's current real fraction, re-planned every epoch.

    It follows PyTorch's ``BatchSampler`` signature so Lightning can hand it a ``DistributedSampler`` under DDP;
    the world size and rank are then read from that sampler, else from ``num_replicas`` / ``rank``. The epoch is
    the one Lightning sets on ``batch_sampler.sampler`` at the start of every epoch.

    Args:
        sampler: a ``DistributedSampler`` (from Lightning under DDP) or ``None``; only its epoch, world size and
            rank are read.
        batch_size: samples per batch.
        drop_last: kept for the ``BatchSampler`` signature; every planned batch is full.
        mixer: the :class:`~collapse_guard.data.mixing.MixingState` that owns pools, fraction and counts.
        num_replicas: world size when no ``DistributedSampler`` is given.
        rank: this process's rank when no ``DistributedSampler`` is given.
        epoch_fn: returns the epoch about to run (``None``: unknown), read when an epoch's iteration starts, before
            the sampler's epoch. Lightning sets the sampler's epoch only after it has created the epoch's iterator,
            and DataLoader workers prefetch (so plan) the first batches when it is created: on a resumed fit the
            first epoch would be planned as epoch 0. ``MixedDataModule`` passes its Trainer's fit-loop epoch.
    """

    def __init__(
        self,
        sampler: Optional[Sampler] = None,
        batch_size: int = 32,
        drop_last: bool = True,
        *,
        mixer,
        num_replicas: int = 1,
        rank: int = 0,
        epoch_fn: Optional[Callable[[], Optional[int]]] = None,
    ) -> None:
        if isinstance(sampler, DistributedSampler):
            num_replicas, rank = sampler.num_replicas, sampler.rank
        self.sampler = sampler if sampler is not None else EpochSampler()
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.mixer = mixer
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch_fn = epoch_fn

    def __len__(self) -> int:
        return self.mixer.batches_per_rank(self.batch_size, self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        if epoch is None:
            epoch = int(getattr(self.sampler, "epoch", 0))
        plan = self.mixer.start_epoch(epoch, self.batch_size, self.num_replicas, self.rank)
        for k, batch in enumerate(plan.batches.tolist()):
            self.mixer.count_stream_reads(k)  # handed to the DataLoader: its reader reads the batch's stream samples
            yield batch
