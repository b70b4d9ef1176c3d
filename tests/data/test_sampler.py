"""The seeded, DDP-aware mixing sampler: real counts per batch, determinism, coverage, sharding, weights."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DistributedSampler

from collapse_guard.data.sampler import MixedBatchSampler, plan_epoch, real_counts_per_batch

from cg_testing import make_mixed, pool_layout


def plan(n_real=40, synth=(60,), f=0.4, bs=10, nb=10, seed=0, epoch=0, weights=None, world=1, rank=0):
    real_pool, pools, source_of, ns = pool_layout(n_real, list(synth))
    return plan_epoch(real_pool, pools, source_of, ns, f, bs, nb, seed, epoch, weights, world, rank), source_of


def real_per_batch(batches: torch.Tensor, n_real: int) -> torch.Tensor:
    return (batches < n_real).sum(dim=1)


# -- real_counts_per_batch --------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_batches", [1, 3, 7, 50])
@pytest.mark.parametrize("batch_size", [1, 5, 8, 33])
@pytest.mark.parametrize("f", [0.0, 0.01, 0.1, 1 / 3, 0.5, 0.77, 0.999, 1.0])
def test_real_counts_per_batch_within_one_sample(num_batches, batch_size, f):
    counts = real_counts_per_batch(num_batches, batch_size, f)
    assert counts.shape == (num_batches,) and counts.dtype == torch.long
    assert ((counts >= 0) & (counts <= batch_size)).all()
    assert ((counts.double() - batch_size * f).abs() <= 1.0).all()
    assert abs(int(counts.sum()) - num_batches * batch_size * f) <= 0.5 + 1e-9


def test_real_counts_edge_fractions_are_exact():
    assert real_counts_per_batch(4, 8, 0.0).tolist() == [0, 0, 0, 0]
    assert real_counts_per_batch(4, 8, 1.0).tolist() == [8, 8, 8, 8]
    # 0.25 of 8 is exactly 2 in every batch, not an uneven split
    assert real_counts_per_batch(5, 8, 0.25).tolist() == [2] * 5


# -- plan_epoch -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("f", [0.1, 0.3, 0.5, 0.73])
def test_plan_real_count_rule_and_source_counts(f):
    p, source_of = plan(n_real=40, synth=(30, 50), f=f, bs=12, nb=9)
    assert p.batches.shape == (9, 12)
    real = real_per_batch(p.batches, 40)
    assert ((real.double() - 12 * f).abs() <= 1.0).all()
    assert abs(int(real.sum()) - 9 * 12 * f) <= 1.0
    # source_counts is what the batches hold, per source
    expect = torch.stack([torch.bincount(source_of[b].long(), minlength=4) for b in p.batches])
    assert torch.equal(p.source_counts, expect)
    assert torch.equal(p.source_counts[:, 0], real)
    assert p.real_fraction == f


def test_plan_is_deterministic_in_seed_and_epoch():
    a, _ = plan(seed=7, epoch=2)
    b, _ = plan(seed=7, epoch=2)
    assert torch.equal(a.batches, b.batches)
    assert not torch.equal(a.batches, plan(seed=8, epoch=2)[0].batches)
    assert not torch.equal(a.batches, plan(seed=7, epoch=3)[0].batches)


def test_positions_are_shuffled_within_batches():
    p, _ = plan(n_real=40, synth=(60,), f=0.5, bs=10, nb=10)
    is_real = p.batches < 40
    # not always the real samples first: the positions of real samples vary between batches
    assert len({tuple(row.tolist()) for row in is_real}) > 1


def test_every_sample_once_per_epoch_when_epoch_matches_pools():
    # 10 batches of 10 at 0.4: exactly 40 real and 60 synthetic slots
    p, _ = plan(n_real=40, synth=(25, 35), f=0.4, bs=10, nb=10)
    drawn = p.batches.flatten().tolist()
    assert sorted(drawn) == list(range(100))


def test_no_repeat_before_pool_exhausted_on_long_epochs():
    n_real, n_synth = 13, 17
    p, _ = plan(n_real=n_real, synth=(n_synth,), f=0.5, bs=8, nb=20)  # 80 real, 80 synthetic draws
    for pool_lo, pool_hi in ((0, n_real), (n_real, n_real + n_synth)):
        stream = [int(i) for row in p.batches for i in row if pool_lo <= int(i) < pool_hi]
        n = pool_hi - pool_lo
        counts = Counter(stream)
        assert set(counts) == set(range(pool_lo, pool_hi))
        assert max(counts.values()) - min(counts.values()) <= 1
        # the stream is whole permutations back to back: after every batch, every pool sample has been drawn
        # k or k + 1 times (no sample a second time while another has not been drawn once)
        seen = Counter({j: 0 for j in range(pool_lo, pool_hi)})
        for row in p.batches:
            seen.update(int(i) for i in row if pool_lo <= int(i) < pool_hi)
            assert max(seen.values()) - min(seen.values()) <= 1


def test_real_fraction_zero_and_one():
    p0, _ = plan(n_real=40, synth=(60,), f=0.0)
    assert (p0.batches >= 40).all() and (p0.source_counts[:, 0] == 0).all()
    p1, _ = plan(n_real=40, synth=(60,), f=1.0)
    assert (p1.batches < 40).all() and (p1.source_counts[:, 2] == 0).all()
    # 1.0 needs no synthetic data, 0.0 needs no real data
    only_real, _ = plan(n_real=40, synth=(), f=1.0)
    assert (only_real.batches < 40).all()
    only_synth, _ = plan(n_real=0, synth=(60,), f=0.0)
    assert (only_synth.batches >= 0).all() and only_synth.source_counts[:, 2].sum() == 100


def test_fraction_needing_an_empty_pool_raises():
    with pytest.raises(ValueError, match="real pool is empty"):
        plan(n_real=0, synth=(60,), f=0.2)
    with pytest.raises(ValueError, match="synthetic"):
        plan(n_real=40, synth=(), f=0.9)


def test_synthetic_weights_apportion_synthetic_slots():
    # 10 batches of 10 at 0.2: 80 synthetic slots, weights 3:1 -> 60 and 20 exactly
    p, _ = plan(n_real=40, synth=(50, 50), f=0.2, bs=10, nb=10, weights=torch.tensor([3.0, 1.0]))
    per_source = p.source_counts.sum(0).tolist()
    assert per_source == [20, 0, 60, 20]
    # within a source there is no repeat before its pool is spent: 60 draws from 50 samples, at most 2 each
    a = Counter(int(i) for i in p.batches.flatten() if 40 <= int(i) < 90)
    assert len(a) == 50 and max(a.values()) == 2
    # an uneven split is the largest-remainder rounding: 80 slots at 1:1:1 -> 27, 27, 26
    q, _ = plan(n_real=40, synth=(30, 30, 30), f=0.2, bs=10, nb=10, weights=torch.tensor([1.0, 1.0, 1.0]))
    assert sorted(q.source_counts.sum(0).tolist()[2:]) == [26, 27, 27]
    # the extra slot goes to the largest remainder: 10 slots at 1:2 are 3.33 and 6.67 -> 3 and 7
    r, _ = plan(n_real=40, synth=(30, 30), f=0.0, bs=5, nb=2, weights=torch.tensor([1.0, 2.0]))
    assert r.source_counts.sum(0).tolist() == [0, 0, 3, 7]
    # a zero weight keeps a source out
    z, _ = plan(n_real=40, synth=(50, 50), f=0.2, bs=10, nb=10, weights=torch.tensor([1.0, 0.0]))
    assert z.source_counts.sum(0).tolist() == [20, 0, 80, 0]


def test_default_weights_follow_source_sizes():
    # 60 synthetic slots over sources of 20 and 40: every synthetic sample once, so exactly 20 and 40
    p, _ = plan(n_real=40, synth=(20, 40), f=0.4, bs=10, nb=10)
    assert p.source_counts.sum(0).tolist() == [40, 0, 20, 40]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_are_disjoint_and_follow_the_rule(world):
    nb, bs, f = 4, 8, 0.375  # 3 real per batch
    n_real, n_synth = 3 * nb * world, 5 * nb * world  # pools exactly as large as the global epoch
    plans = [plan(n_real=n_real, synth=(n_synth,), f=f, bs=bs, nb=nb, world=world, rank=r)[0] for r in range(world)]
    flat = [set(p.batches.flatten().tolist()) for p in plans]
    for p in plans:
        assert p.batches.shape == (nb, bs)
        assert (real_per_batch(p.batches, n_real) == 3).all()
    for i in range(world):
        for j in range(i + 1, world):
            assert not flat[i] & flat[j]
    assert set().union(*flat) == set(range(n_real + n_synth))
    # each rank takes every world-th batch of the one global plan
    glob, _ = plan(n_real=n_real, synth=(n_synth,), f=f, bs=bs, nb=nb * world)
    for r, p in enumerate(plans):
        assert torch.equal(p.batches, glob.batches[r::world])


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_obey_real_count_rule_at_uneven_fractions(world):
    f, bs, nb = 0.3, 7, 5
    plans = [plan(n_real=200, synth=(200,), f=f, bs=bs, nb=nb, world=world, rank=r)[0] for r in range(world)]
    total = 0
    for p in plans:
        real = real_per_batch(p.batches, 200)
        assert ((real.double() - bs * f).abs() <= 1.0).all()
        total += int(real.sum())
    assert abs(total - world * nb * bs * f) <= 1.0


# -- through MixedDataModule.train_dataloader() -----------------------------------------------------------------
def epoch_batches(dm, epoch: int) -> list[list[int]]:
    loader = dm.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(epoch)
    return list(loader.batch_sampler)


def test_mixed_batch_sampler_is_a_function_of_seed_and_epoch():
    dm1, dm2 = make_mixed(seed=3), make_mixed(seed=3)
    dm1.setup("fit")
    dm2.setup("fit")
    e3_first = epoch_batches(dm1, 3)
    e1_after = epoch_batches(dm1, 1)
    e1_first = epoch_batches(dm2, 1)
    e3_after = epoch_batches(dm2, 3)
    assert e1_after == e1_first and e3_first == e3_after
    assert e1_first != e3_first
    dm3 = make_mixed(seed=4)
    dm3.setup("fit")
    assert epoch_batches(dm3, 1) != e1_first
    # the collated batches the model would receive are identical as well
    l1, l2 = dm1.train_dataloader(), dm2.train_dataloader()
    for loader in (l1, l2):
        loader.batch_sampler.sampler.set_epoch(2)
    for b1, b2 in zip(l1, l2):
        assert torch.equal(b1[0], b2[0]) and torch.equal(b1[1], b2[1])


def test_mixed_batch_sampler_real_counts_via_datamodule():
    dm = make_mixed(real_fraction=0.3, batch_size=10, samples_per_epoch=120)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 12
    loader.batch_sampler.sampler.set_epoch(0)
    batches = list(loader)
    assert len(batches) == 12
    real_idx = set(dm.mixer.real_pool.tolist())
    reals = [sum(int(i) in real_idx for i in b) for b in loader.batch_sampler]
    assert all(abs(r - 3) <= 1 for r in reals) and abs(sum(reals) - 36) <= 1
    for b in batches:
        assert b[0].shape == (10, 4)


def test_mixed_batch_sampler_reads_world_size_from_distributed_sampler():
    dm = make_mixed(real_fraction=0.5, batch_size=8, samples_per_epoch=64)
    dm.setup("fit")
    shards = []
    for rank in range(2):
        dist = DistributedSampler(dm.train_set, num_replicas=2, rank=rank, shuffle=False)
        bs = MixedBatchSampler(dist, 8, True, mixer=dm.mixer)
        assert (bs.num_replicas, bs.rank) == (2, rank)
        assert len(bs) == 4
        dist.set_epoch(1)
        shards.append(list(bs))
    same_by_args = list(MixedBatchSampler(None, 8, True, mixer=dm.mixer, num_replicas=2, rank=1))
    assert same_by_args != shards[1]  # epoch 0, not the epoch 1 set on the DistributedSampler
    a = {i for b in shards[0] for i in b}
    b = {i for b in shards[1] for i in b}
    assert not a & b and len(a) == len(b) == 32


def test_lightning_ddp_rebuilds_the_batch_sampler_per_rank():
    """Under DDP Lightning re-creates the batch sampler around its DistributedSampler (no processes needed here)."""
    data_utils = pytest.importorskip("lightning_fabric.utilities.data")
    from pytorch_lightning.trainer.states import RunningStage
    from pytorch_lightning.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader

    dm = make_mixed(real_fraction=0.5, batch_size=8, samples_per_epoch=64)
    dm.setup("fit")
    with data_utils._replace_dunder_methods(DataLoader, "dataset"), data_utils._replace_dunder_methods(BatchSampler):
        loader = dm.train_dataloader()  # as Lightning requests it
    real_idx = set(dm.mixer.real_pool.tolist())
    shards = []
    for rank in range(2):
        ddp_loader = _update_dataloader(loader, DistributedSampler(loader.dataset, num_replicas=2, rank=rank),
                                        mode=RunningStage.TRAINING)
        bs = ddp_loader.batch_sampler
        assert isinstance(bs, MixedBatchSampler) and (bs.num_replicas, bs.rank) == (2, rank)
        assert bs.mixer is dm.mixer and ddp_loader.collate_fn is loader.collate_fn and len(ddp_loader) == 4
        bs.sampler.set_epoch(1)  # what Lightning does at every epoch start
        batches = list(bs)
        assert all(sum(i in real_idx for i in b) == 4 for b in batches)
        shards.append({i for b in batches for i in b})
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 32


# -- property test ----------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    epoch=st.integers(0, 1000),
    n_real=st.integers(1, 40),
    synth=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    f=st.floats(0.0, 1.0, allow_nan=False),
    bs=st.integers(1, 16),
    nb=st.integers(1, 6),
    world=st.integers(1, 3),
    weighted=st.booleans(),
)
def test_plan_properties(seed, epoch, n_real, synth, f, bs, nb, world, weighted):
    real_pool, pools, source_of, ns = pool_layout(n_real, synth)
    weights = torch.arange(1, len(synth) + 1, dtype=torch.float64) if weighted else None
    plans = [
        plan_epoch(real_pool, pools, source_of, ns, f, bs, nb, seed, epoch, weights, world, r) for r in range(world)
    ]
    again = plan_epoch(real_pool, pools, source_of, ns, f, bs, nb, seed, epoch, weights, world, world - 1)
    assert torch.equal(again.batches, plans[-1].batches)

    n_total = n_real + sum(synth)
    total_real, all_real, all_synth = 0, Counter(), Counter()
    for p in plans:
        assert p.batches.shape == (nb, bs)
        assert ((p.batches >= 0) & (p.batches < n_total)).all()
        real = real_per_batch(p.batches, n_real)
        assert ((real.double() - bs * f).abs() <= 1.0 + 1e-9).all()
        assert p.source_counts.sum(1).eq(bs).all()
        assert torch.equal(p.source_counts[:, 0], real)
        total_real += int(real.sum())
        all_real.update(int(i) for i in p.batches.flatten() if int(i) < n_real)
        all_synth.update(int(i) for i in p.batches.flatten() if int(i) >= n_real)
    assert abs(total_real - world * nb * bs * f) <= 1.0
    # real draws are whole permutations of the pool and then some: no sample drawn twice more than another
    if all_real:
        drawn = sum(all_real.values())
        assert max(all_real.values()) == math.ceil(drawn / n_real)
        assert len(all_real) == min(n_real, drawn)
    if not weighted and all_synth:
        drawn = sum(all_synth.values())
        assert max(all_synth.values()) == math.ceil(drawn / sum(synth))
    # ranks are disjoint whenever both pools are large enough for the global epoch
    if sum(all_real.values()) <= n_real and (weighted or sum(all_synth.values()) <= sum(synth)):
        if not weighted:
            sets = [set(p.batches.flatten().tolist()) for p in plans]
            assert sum(len(s) for s in sets) == len(set().union(*sets)) == world * nb * bs
