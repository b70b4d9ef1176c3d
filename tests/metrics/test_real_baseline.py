"""real_baseline: disjoint equal-size real subsets, determinism, dict and scalar metrics."""
from __future__ import annotations

from functools import partial

import pytest
import torch

from collapse_guard.metrics.functional import (
    RealBaseline,
    distinct_n,
    frechet_distance,
    prdc,
    real_baseline,
)


def test_subsets_are_disjoint_and_of_size_n():
    real = torch.arange(100).float()[:, None]
    seen = []

    def probe(a, b):
        ia, ib = set(a[:, 0].long().tolist()), set(b[:, 0].long().tolist())
        assert len(ia) == len(ib) == 30 and not ia & ib
        seen.append((frozenset(ia), frozenset(ib)))
        return torch.tensor(float(len(ia)))

    out = real_baseline(probe, real, n=30, num_splits=5)
    assert isinstance(out, RealBaseline)
    assert float(out.mean) == 30.0 and float(out.std) == 0.0 and out.values.shape == (5,)
    assert len(set(seen)) == 5  # fresh permutation per split


def test_deterministic_and_generator():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 4, generator=g)
    a = real_baseline(frechet_distance, real, n=100, num_splits=4)
    b = real_baseline(frechet_distance, real, n=100, num_splits=4)
    assert torch.equal(a.values, b.values)
    c = real_baseline(frechet_distance, real, n=100, num_splits=4, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a.values, c.values)
    assert a.mean.dtype == torch.float64 and a.mean.ndim == 0
    assert float(a.std) == pytest.approx(float(a.values.std(unbiased=True)))


def test_dict_metric_gives_dicts_and_real_noise_units():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 16, generator=g)
    base = real_baseline(partial(prdc, k=5), real, n=500, num_splits=4)
    assert set(base.mean) == {"precision", "recall", "density", "coverage"}
    assert base.values["recall"].shape == (4,)
    # a collapsed generator sits many baseline stds below the real-vs-real recall
    fake = 0.5 * torch.randn(500, 16, generator=g)
    recall = prdc(real[:500], fake, k=5)["recall"]
    z = (recall - base.mean["recall"]) / base.std["recall"]
    assert float(z) < -10


def test_sequences_of_strings():
    corpus = [f"w{i % 17} w{i % 5} w{i % 3}" for i in range(60)]
    base = real_baseline(lambda a, b: distinct_n(a + b, n=2), corpus, n=20, num_splits=3)
    assert 0 < float(base.mean) <= 1


def test_bad_arguments():
    real = torch.randn(10, 2)
    with pytest.raises(ValueError, match="disjoint"):
        real_baseline(frechet_distance, real, n=6)
    with pytest.raises(ValueError, match="num_splits"):
        real_baseline(frechet_distance, real, n=3, num_splits=1)
    with pytest.raises(ValueError, match="positive"):
        real_baseline(frechet_distance, real, n=0)
    with pytest.raises(ValueError, match="scalars"):
        real_baseline(lambda a, b: a.mean(0), real, n=3, num_splits=2)
