"""Vendi score and effective rank: against the ``vendi-score`` package, numpy and closed forms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from vendi_score import vendi

from collapse_guard.metrics.functional import effective_rank, vendi_score


@pytest.mark.parametrize("n,d,seed", [(200, 16, 0), (30, 64, 1), (64, 64, 2), (300, 3, 3)])
def test_vendi_matches_package(n, d, seed):
    """Dual (D x D) route when D < n and the n x n kernel otherwise; both equal score_dual and score_X."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) + 0.3 * rng.standard_normal(d)
    ours = float(vendi_score(torch.from_numpy(x)))
    assert ours == pytest.approx(float(vendi.score_dual(x)), rel=1e-5)
    assert ours == pytest.approx(float(vendi.score_X(x)), rel=1e-5)


@pytest.mark.parametrize("q", [0.5, 2.0])
def test_vendi_order_q_matches_package(q):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((100, 8))
    assert float(vendi_score(torch.from_numpy(x), q=q)) == pytest.approx(float(vendi.score_dual(x, q=q)), rel=1e-5)


def test_vendi_closed_forms():
    assert float(vendi_score(torch.eye(5))) == pytest.approx(5.0, rel=1e-12)
    assert float(vendi_score(3.0 * torch.ones(20, 4))) == pytest.approx(1.0, rel=1e-12)
    # k equally frequent orthogonal modes -> k, whatever the scale of each sample
    modes = torch.eye(6)[:3]
    x = torch.cat([modes * s for s in (1.0, 2.0, 5.0, 0.1)])
    assert float(vendi_score(x)) == pytest.approx(3.0, rel=1e-12)
    assert float(vendi_score(torch.eye(4), q=float("inf"))) == pytest.approx(4.0, rel=1e-12)


def test_vendi_falls_under_mode_collapse():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 32, generator=g)
    diverse = centers[torch.arange(500) % 10] + 0.1 * torch.randn(500, 32, generator=g)
    collapsed = centers[torch.arange(500) % 2] + 0.1 * torch.randn(500, 32, generator=g)
    assert float(vendi_score(collapsed)) < 0.5 * float(vendi_score(diverse))


def numpy_effective_rank(x: np.ndarray) -> float:
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("n,d,seed", [(100, 10, 0), (10, 40, 1)])
def test_effective_rank_matches_numpy(n, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.linspace(0.1, 2.0, d)
    assert float(effective_rank(torch.from_numpy(x))) == pytest.approx(numpy_effective_rank(x), rel=1e-10)
    xc = x - x.mean(0)
    assert float(effective_rank(torch.from_numpy(x), center=True)) == pytest.approx(
        numpy_effective_rank(xc), rel=1e-10
    )


def test_effective_rank_closed_forms():
    assert float(effective_rank(torch.eye(7))) == pytest.approx(7.0, rel=1e-12)
    assert float(effective_rank(torch.ones(9, 4))) == pytest.approx(1.0, rel=1e-9)
    # singular values (3, 1): p = (0.75, 0.25)
    x = torch.diag(torch.tensor([3.0, 1.0]))
    expected = np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    assert float(effective_rank(x)) == pytest.approx(expected, rel=1e-12)
    assert float(effective_rank(torch.zeros(3, 3))) == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        vendi_score(torch.randn(10))
    with pytest.raises(ValueError, match="NaN"):
        effective_rank(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="q"):
        vendi_score(torch.randn(4, 2), q=-1.0)
