"""Properties of the mixing sampler across seeds, sizes, fractions and world sizes (hypothesis).

* every batch's real count is within one sample of ``batch_size * real_fraction``, on every rank;
* every pooled sample appears once per epoch where the pool allows it (no repeat before the pool is spent, and
  when the epoch draws more than the pool, every sample ``k`` or ``k + 1`` times);
* no sample is on two ranks in one epoch (where the pools are as large as the epoch's draws);
* the sequence is a function of the seed and the epoch alone: not of the order epochs are drawn in, of the global
  random generators, of the objects that draw it, or of how the global batches are split between ranks;
* the counts every rank keeps (``global_counts``) are the sum over ranks of what each rank drew.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collapse_guard.data.mixing import MixingState
from collapse_guard.data.sampler import MixedBatchSampler, plan_epoch, real_counts_per_batch
from collapse_guard.data.sources import DataSource

from cg_testing import make_mixed, pool_layout


configs = st.fixed_dictionaries({
    "seed": st.integers(0, 2**40),
    "epoch": st.integers(0, 10_000),
    "n_real": st.integers(1, 60),
    "synth": st.lists(st.integers(1, 60), min_size=1, max_size=3),
    "f": st.one_of(st.floats(0.0, 1.0, allow_nan=False), st.sampled_from([0.0, 0.25, 1 / 3, 0.5, 1.0])),
    "bs": st.integers(1, 24),
    "nb": st.integers(1, 8),
    "world": st.integers(1, 4),
    "weighted": st.booleans(),
})


def plans_of(c, world=None, nb=None):
    world = c["world"] if world is None else world
    nb = c["nb"] if nb is None else nb
    real_pool, pools, source_of, ns = pool_layout(c["n_real"], c["synth"])
    weights = torch.arange(1, len(c["synth"]) + 1, dtype=torch.float64) if c["weighted"] else None
    return [
        plan_epoch(real_pool, pools, source_of, ns, c["f"], c["bs"], nb, c["seed"], c["epoch"], weights, world, r)
        for r in range(world)
    ], source_of


def spread_ok(counts: Counter, pool: range, draws: int) -> bool:
    """Whole permutations back to back: ``draws`` from ``pool`` give each sample floor or ceil of the mean."""
    n = len(pool)
    if draws <= n:
        return len(counts) == draws and set(counts.values()) <= {1}
    lo, hi = draws // n, math.ceil(draws / n)
    return set(counts) == set(pool) and all(lo <= v <= hi for v in counts.values())


@settings(max_examples=400, deadline=None)
@given(c=configs)
def test_every_batch_on_every_rank_is_within_one_real_sample_of_the_target(c):
    plans, _ = plans_of(c)
    target = c["bs"] * c["f"]
    total = 0
    for p in plans:
        real = (p.batches < c["n_real"]).sum(1)
        assert ((real.double() - target).abs() <= 1.0 + 1e-9).all()
        assert torch.equal(p.source_counts[:, 0], real)
        assert p.source_counts.sum(1).eq(c["bs"]).all()
        total += int(real.sum())
    assert abs(total - c["world"] * c["nb"] * target) <= 0.5 + 1e-9


@settings(max_examples=400, deadline=None)
@given(c=configs)
def test_every_pooled_sample_once_per_epoch_where_the_pool_allows(c):
    plans, source_of = plans_of(c)
    drawn = torch.cat([p.batches.flatten() for p in plans])
    src = source_of[drawn].long()
    n_real = c["n_real"]
    real = Counter(drawn[src == 0].tolist())
    assert spread_ok(real, range(n_real), int((src == 0).sum()))
    if c["weighted"]:  # each synthetic source is its own stream
        start = n_real
        for i, n in enumerate(c["synth"]):
            mine = Counter(drawn[src == i + 2].tolist())
            assert spread_ok(mine, range(start, start + n), int((src == i + 2).sum()))
            start += n
    else:  # the synthetic sources share one stream, in proportion to their sizes
        synth = Counter(drawn[src >= 2].tolist())
        assert spread_ok(synth, range(n_real, n_real + sum(c["synth"])), int((src >= 2).sum()))


@settings(max_examples=300, deadline=None)
@given(c=configs, extra=st.lists(st.integers(0, 20), min_size=4, max_size=4))
def test_no_sample_on_two_ranks_when_the_pools_cover_the_epoch(c, extra):
    total = c["world"] * c["nb"] * c["bs"]
    real_draws = int(real_counts_per_batch(c["world"] * c["nb"], c["bs"], c["f"]).sum())
    synth_draws = total - real_draws
    # pools at least as large as the epoch draws from them (each source as large as all synthetic draws)
    c = dict(c, n_real=max(1, real_draws + extra[0]),
             synth=[max(1, synth_draws + e) for e in extra[1 : 1 + len(c["synth"])]])
    plans, _ = plans_of(c)
    shards = [set(p.batches.flatten().tolist()) for p in plans]
    assert sum(len(s) for s in shards) == len(set().union(*shards)) == total


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=configs, other_seed=st.integers(0, 2**31 - 1))
def test_the_plan_is_a_function_of_seed_and_epoch_alone(c, other_seed):
    first, _ = plans_of(c)
    torch.manual_seed(other_seed)  # the global generators play no part
    torch.rand(7)
    again, _ = plans_of(c)
    for a, b in zip(first, again):
        assert torch.equal(a.batches, b.batches) and torch.equal(a.global_counts, b.global_counts)
    # the global batches do not depend on how they are split: rank r takes every world-th one of one plan
    (single,), _ = plans_of(c, world=1, nb=c["nb"] * c["world"])
    for r, p in enumerate(first):
        assert torch.equal(p.batches, single.batches[r :: c["world"]])
    # every rank's counts of the k-th batch round are the sum over ranks of what they drew
    summed = torch.stack([p.source_counts for p in first]).sum(0)
    for p in first:
        assert torch.equal(p.global_counts, summed)


def mixer(n_real, synth, f, seed, samples, reserve=0):
    real_pool, pools, source_of, ns = pool_layout(n_real + reserve, synth)
    source_of[n_real : n_real + reserve] = 1
    names = ["real", "reserve"] + [f"g{i}" for i in range(len(synth))]
    sources = [DataSource(n, None, is_real=i < 2) for i, n in enumerate(names)]
    return MixingState(sources, torch.arange(n_real), torch.arange(n_real, n_real + reserve), pools, source_of,
                       f, samples, seed)


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    epochs=st.permutations(list(range(5))),
    world=st.integers(1, 3),
    f=st.floats(0.0, 1.0, allow_nan=False),
    bs=st.integers(1, 12),
    inject=st.integers(0, 10),
)
def test_batch_samplers_replay_epochs_in_any_order_and_count_every_rank(seed, epochs, world, f, bs, inject):
    samples = bs * world * 3
    a = mixer(30, [25, 15], f, seed, samples, reserve=10)
    b = mixer(30, [25, 15], f, seed, samples, reserve=10)
    for m in (a, b):  # the same injection on both before anything is drawn
        m.inject(inject, None, 0, "test")
    drawn = {}
    for epoch in range(5):  # in order, on a
        drawn[epoch] = []
        for r in range(world):
            sampler = MixedBatchSampler(None, bs, mixer=a, num_replicas=world, rank=r)
            sampler.sampler.set_epoch(epoch)
            drawn[epoch].append(list(sampler))
    for epoch in epochs:  # in another order, on b, with the epoch set as Lightning sets it
        for r in range(world):
            sampler = MixedBatchSampler(None, bs, mixer=b, num_replicas=world, rank=r)
            sampler.sampler.set_epoch(epoch)
            assert list(sampler) == drawn[epoch][r]
    # counting a whole epoch on one rank gives the counts of all ranks together
    sampler = MixedBatchSampler(None, bs, mixer=a, num_replicas=world, rank=world - 1)
    sampler.sampler.set_epoch(2)
    for _ in sampler:
        a.count_next_batch()
    src = a.source_of[torch.tensor([i for r in range(world) for batch in drawn[2][r] for i in batch])].long()
    assert a.epoch_counts.tolist() == torch.bincount(src, minlength=4).tolist()
    assert int(a.local_epoch_counts.sum()) == samples // world
    real_per_batch = [sum(a.source_of[i] <= 1 for i in batch) for batch in drawn[2][0]]
    assert all(abs(int(n) - bs * f) <= 1 for n in real_per_batch)


def test_real_counts_rule_holds_for_awkward_fractions():
    for f in (1e-9, 1 / 7, 0.5 - 1e-12, 0.999999, 2 / 3):
        for bs in (1, 3, 7, 64):
            c = real_counts_per_batch(97, bs, f)
            assert ((c.double() - bs * f).abs() <= 1).all() and abs(int(c.sum()) - 97 * bs * f) <= 0.5 + 1e-9


def test_the_datamodule_loader_is_a_function_of_seed_and_epoch():
    batches = {}
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        dm = make_mixed(real_fraction=0.3, seed=11, batch_size=6, samples_per_epoch=60)
        dm.setup("fit")
        loader = dm.train_dataloader()
        torch.manual_seed(order[0])
        for epoch in order:
            loader.batch_sampler.sampler.set_epoch(epoch)
            got = [b[0][:, 0].tolist() for b in loader]
            assert batches.setdefault(epoch, got) == got
