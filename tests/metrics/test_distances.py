"""Fréchet distance, MMD², variance ratio and tail mass: against scipy / scikit-learn and closed forms."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import pdist
from sklearn.metrics.pairwise import rbf_kernel

from collapse_guard.metrics.functional import (
    frechet_distance,
    frechet_distance_from_statistics,
    gaussian_statistics,
    maximum_mean_discrepancy,
    median_heuristic_bandwidth,
    real_quantile_range,
    tail_mass,
    tail_mass_ratio,
    total_variance,
    variance_ratio,
)


def scipy_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """The pytorch-fid / torchmetrics recipe: numpy means and covariances, scipy.linalg.sqrtm of the product."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n,m,d,seed", [(200, 300, 8, 0), (500, 400, 16, 1), (100, 100, 3, 2)])
def test_frechet_matches_scipy_sqrtm(n, m, d, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    x = rng.standard_normal((n, d)) @ a
    y = 0.7 * rng.standard_normal((m, d)) @ a.T + 0.3
    ours = float(frechet_distance(torch.from_numpy(x), torch.from_numpy(y)))
    assert ours == pytest.approx(scipy_frechet(x, y), rel=1e-5)


def test_gaussian_statistics_match_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 4))
    mu, sigma = gaussian_statistics(torch.from_numpy(x).float())
    assert mu.dtype == sigma.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), x.astype(np.float32).mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.astype(np.float32), rowvar=False), rtol=1e-5, atol=1e-7)


def test_frechet_closed_form_known_gaussians():
    """Diagonal covariances: |mu1 - mu2|^2 + sum (a + b - 2 sqrt(a b))."""
    a = torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64)
    b = torch.tensor([4.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    mu1 = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, 1.0, 0.0, 3.0], dtype=torch.float64)
    expected = float(((mu1 - mu2) ** 2).sum() + (a + b - 2 * (a * b).sqrt()).sum())
    got = frechet_distance_from_statistics(mu1, torch.diag(a), mu2, torch.diag(b))
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # a rotation applied to both does not change it
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    rot = frechet_distance_from_statistics(q @ mu1, q @ torch.diag(a) @ q.t(), q @ mu2, q @ torch.diag(b) @ q.t())
    # (one eigenvalue is 0: sqrt of its rounding noise, ~1e-15, limits the agreement to ~1e-7)
    assert float(rot) == pytest.approx(expected, abs=1e-6)


def test_frechet_closed_form_non_commuting():
    """1-D check of the general formula: W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1-m2)^2 + (s1-s2)^2."""
    got = frechet_distance_from_statistics(
        torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[0.25]])
    )
    assert float(got) == pytest.approx(9.0 + 1.5**2, rel=1e-12)


def test_frechet_sampled_gaussians():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    y = 2.0 * torch.randn(20000, 2, generator=g, dtype=torch.float64) + 1.0
    # |1|^2 * 2 + 2 * (1 + 4 - 2 * 2) = 4
    assert float(frechet_distance(x, y)) == pytest.approx(4.0, abs=0.15)
    assert float(frechet_distance(x, x)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_singular_covariance_is_finite_and_nonnegative():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 20, generator=g), torch.randn(6, 20, generator=g)  # N < D: singular fits
    v = frechet_distance(x, y)
    assert torch.isfinite(v) and float(v) >= 0


def test_frechet_bad_input():
    with pytest.raises(ValueError, match="feature dimension"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(torch.randn(1, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match="shape"):
        frechet_distance_from_statistics(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2))


def sklearn_mmd2(x: np.ndarray, y: np.ndarray, gamma: float) -> float:
    kxx, kyy, kxy = rbf_kernel(x, x, gamma=gamma), rbf_kernel(y, y, gamma=gamma), rbf_kernel(x, y, gamma=gamma)
    n, m = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


@pytest.mark.parametrize("n,m,d,shift,seed", [(120, 150, 5, 0.5, 0), (200, 200, 3, 0.0, 1), (80, 60, 10, 1.0, 2)])
def test_mmd_matches_sklearn_rbf_kernel(n, m, d, shift, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = 1.2 * rng.standard_normal((m, d)) + shift
    sigma = float(np.median(pdist(np.concatenate([x, y]))))
    assert float(median_heuristic_bandwidth(torch.from_numpy(x), torch.from_numpy(y))) == pytest.approx(
        sigma, rel=1e-12
    )
    gamma = 1.0 / (2 * sigma**2)
    ref = sklearn_mmd2(x, y, gamma)
    ours = float(maximum_mean_discrepancy(torch.from_numpy(x), torch.from_numpy(y)))
    assert ours == pytest.approx(ref, rel=1e-5, abs=1e-12)
    # explicit bandwidth and small chunks give the same value
    ours_chunked = float(
        maximum_mean_discrepancy(torch.from_numpy(x), torch.from_numpy(y), bandwidth=sigma, chunk_size=7)
    )
    assert ours_chunked == pytest.approx(ref, rel=1e-5, abs=1e-12)


def test_mmd_behaviour():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g)
    same = float(maximum_mean_discrepancy(x, y))
    shrunk = float(maximum_mean_discrepancy(x, 0.3 * y))
    assert abs(same) < 0.01 < shrunk
    # 1-D inputs are accepted as (N, 1)
    assert float(maximum_mean_discrepancy(x[:, 0], 0.3 * y[:, 0])) > 0.01


def test_median_heuristic_subsample_is_deterministic():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3000, 3, generator=g), torch.randn(3000, 3, generator=g)
    a = median_heuristic_bandwidth(x, y, max_samples=500)
    b = median_heuristic_bandwidth(x, y, max_samples=500)
    assert torch.equal(a, b)
    full = float(np.median(pdist(torch.cat([x, y])[:2000].double().numpy())))
    assert float(a) == pytest.approx(full, rel=0.05)
    assert float(median_heuristic_bandwidth(torch.ones(5, 2), torch.ones(5, 2))) == 1.0


def test_mmd_bad_input():
    with pytest.raises(ValueError, match="bandwidth"):
        maximum_mean_discrepancy(torch.randn(10, 2), torch.randn(10, 2), bandwidth=0.0)
    with pytest.raises(ValueError, match="at least 2"):
        maximum_mean_discrepancy(torch.randn(1, 2), torch.randn(10, 2))
    with pytest.raises(ValueError, match="feature dimension"):
        maximum_mean_discrepancy(torch.randn(10, 2), torch.randn(10, 3))


def test_variance_ratio():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 6, generator=g, dtype=torch.float64)
    assert float(variance_ratio(x, 0.5 * x + 3.0)) == pytest.approx(0.25, rel=1e-12)
    expected = np.var(x.numpy(), axis=0, ddof=1).sum()
    assert float(total_variance(x)) == pytest.approx(expected, rel=1e-12)
    assert float(variance_ratio(x[:, 0], 2 * x[:, 0])) == pytest.approx(4.0, rel=1e-12)
    with pytest.raises(ValueError, match="feature dimension"):
        variance_ratio(x, x[:, :3])


def test_tail_mass_definition_and_numpy_quantiles():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((1001, 3))
    fake = 1.5 * rng.standard_normal((500, 3))
    lo, hi = real_quantile_range(torch.from_numpy(real), q=0.05)
    np.testing.assert_allclose(lo.numpy(), np.quantile(real, 0.05, axis=0), rtol=1e-12)
    np.testing.assert_allclose(hi.numpy(), np.quantile(real, 0.95, axis=0), rtol=1e-12)
    expected = ((fake < np.quantile(real, 0.05, axis=0)) | (fake > np.quantile(real, 0.95, axis=0))).mean()
    got = tail_mass(torch.from_numpy(real), torch.from_numpy(fake), q=0.05)
    assert got.dtype == torch.float64 and float(got) == pytest.approx(expected, rel=1e-12)
    real_share = ((real < np.quantile(real, 0.05, axis=0)) | (real > np.quantile(real, 0.95, axis=0))).mean()
    ratio = tail_mass_ratio(torch.from_numpy(real), torch.from_numpy(fake), q=0.05)
    assert float(ratio) == pytest.approx(expected / real_share, rel=1e-12)
    assert float(ratio) > 1.5  # heavier tails


def test_tail_mass_collapse():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g)
    assert float(tail_mass(x, x)) == pytest.approx(0.05, abs=0.001)
    assert float(tail_mass_ratio(x, 0.5 * x)) < 0.05  # shrunk std: the 2-sigma tails are gone
    assert float(tail_mass_ratio(x, x)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="q"):
        tail_mass(x, x, q=0.5)
