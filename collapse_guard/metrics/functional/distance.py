"""Distribution distances between synthetic and held-out real features.

The synthetic set (the papers' "fake" samples) is a synthetic source's or a generative model's samples;
the two-set functions take it as ``synthetic`` (``fake=`` still works, with a ``DeprecationWarning``).

* Fréchet distance between Gaussian fits (Dowson & Landau 1982; as FID: Heusel et al., NeurIPS 2017).
* Unbiased MMD² with an RBF kernel and the median-heuristic bandwidth (Gretton, Borgwardt, Rasch, Schölkopf,
  Smola, "A Kernel Two-Sample Test", JMLR 13, 2012).
* Variance ratio and tail mass: the plainest symptoms of collapse, a shrinking spread and lost tails
  (Shumailov et al., "AI models collapse when trained on recursively generated data", Nature 631, 2024).

Everything is computed in float64; pairwise work runs on row blocks with bounded memory.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from collapse_guard.metrics._deprecation import renamed_kwargs
from collapse_guard.metrics.functional._chunk import block_rows, check_features, check_pair

__all__ = [
    "gaussian_statistics",
    "frechet_distance_from_statistics",
    "frechet_distance",
    "median_heuristic_bandwidth",
    "maximum_mean_discrepancy",
    "total_variance",
    "variance_ratio",
    "real_quantile_range",
    "tail_mass",
    "tail_mass_ratio",
]


def _as_2d(x: Tensor, name: str) -> Tensor:
    if isinstance(x, Tensor) and x.ndim == 1:
        x = x[:, None]
    return check_features(x, name)


def gaussian_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (``ddof=1``, as ``numpy.cov``) of a feature matrix, in float64.

    Args:
        features: shape ``(N, D)``, ``N >= 2``.

    Returns:
        ``(mu, sigma)`` with shapes ``(D,)`` and ``(D, D)``, dtype float64.

    Raises:
        ValueError: if ``features`` is not a finite 2-D tensor with at least 2 rows.

    Example::

        >>> mu, sigma = gaussian_statistics(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
        >>> mu, sigma
        (tensor([1., 1.], dtype=torch.float64), tensor([[2., 2.],
                [2., 2.]], dtype=torch.float64))
    """
    check_features(features, "features")
    if features.shape[0] < 2:
        raise ValueError(f"`features` needs at least 2 samples for a covariance, got {features.shape[0]}.")
    x = features.double()
    mu = x.mean(dim=0)
    xc = x - mu
    sigma = xc.t() @ xc / (x.shape[0] - 1)
    return mu, sigma


def _sqrtm_psd(s: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.t()


def frechet_distance_from_statistics(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Fréchet (2-Wasserstein) distance ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between Gaussians.

    ``Tr (S1 S2)^(1/2)`` is computed as ``sum sqrt(eig(S1^(1/2) S2 S1^(1/2)))`` with symmetric eigen-
    decompositions in float64 (``S1 S2`` and ``S1^(1/2) S2 S1^(1/2)`` are similar, and the latter is symmetric
    PSD), which is stable for singular covariances where ``scipy.linalg.sqrtm(S1 @ S2)`` needs an offset.

    Args:
        mu1: mean of the first Gaussian, shape ``(D,)``.
        sigma1: covariance of the first Gaussian, shape ``(D, D)``, symmetric PSD.
        mu2: mean of the second Gaussian, shape ``(D,)``.
        sigma2: covariance of the second Gaussian, shape ``(D, D)``, symmetric PSD.

    Returns:
        0-dim float64 tensor ``>= 0`` (clamped at 0 against rounding), in squared feature units.

    Raises:
        ValueError: if the shapes are inconsistent.

    Example::

        >>> eye = torch.eye(2, dtype=torch.float64)
        >>> frechet_distance_from_statistics(torch.zeros(2), eye, torch.ones(2), 4 * eye)
        tensor(4., dtype=torch.float64)
    """
    if mu1.ndim != 1 or mu2.shape != mu1.shape:
        raise ValueError(f"means must be 1-D of equal shape, got {tuple(mu1.shape)} and {tuple(mu2.shape)}.")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"covariances must have shape ({d}, {d}), got {tuple(sigma1.shape)} and {tuple(sigma2.shape)}."
        )
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    sigma1 = 0.5 * (sigma1 + sigma1.t())
    sigma2 = 0.5 * (sigma2 + sigma2.t())
    root1 = _sqrtm_psd(sigma1)
    m = root1 @ sigma2 @ root1
    tr_covmean = torch.linalg.eigvalsh(0.5 * (m + m.t())).clamp_min(0).sqrt().sum()
    diff = mu1 - mu2
    value = diff.dot(diff) + torch.trace(sigma1) + torch.trace(sigma2) - 2.0 * tr_covmean
    return value.clamp_min(0)


@renamed_kwargs(fake="synthetic")
def frechet_distance(real: Tensor, synthetic: Tensor) -> Tensor:
    """Fréchet distance between Gaussian fits of real and synthetic features (FID when features are Inception's).

    Args:
        real: real features, shape ``(N, D)``, ``N >= 2``.
        synthetic: synthetic features, shape ``(M, D)``, ``M >= 2``.

    Returns:
        0-dim float64 tensor ``>= 0`` in squared feature units; 0 when both fits coincide.

    Raises:
        ValueError: if an input is not a finite 2-D tensor with at least 2 rows, or the feature dims differ.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(5000, 2, generator=g)
        >>> round(float(frechet_distance(x, 2 * x + 1)), 1)  # |1|^2 * 2 + 2 * (1 + 4 - 2 * 2)
        4.0
    """
    check_pair(real, synthetic)
    mu1, s1 = gaussian_statistics(real)
    mu2, s2 = gaussian_statistics(synthetic)
    return frechet_distance_from_statistics(mu1, s1, mu2, s2)


def _sq_dists(a: Tensor, b: Tensor, sq_a: Tensor, sq_b: Tensor) -> Tensor:
    return torch.addmm(sq_b[None, :], a, b.t(), alpha=-2.0).add_(sq_a[:, None]).clamp_min_(0)


@renamed_kwargs(fake="synthetic")
def median_heuristic_bandwidth(
    real: Tensor,
    synthetic: Tensor,
    max_samples: int = 2000,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Median heuristic: the median Euclidean distance between distinct pooled samples (Gretton et al. 2012).

    The pooled set ``[real; synthetic]`` is subsampled to ``max_samples`` rows (without replacement, drawn with
    ``generator``, seeded 0 when ``None`` so the result is deterministic) before the ``O(n^2)`` median. The
    median of an even number of distances is the mean of the two middle ones (as ``numpy.median``).

    Args:
        real: shape ``(N, D)`` (or ``(N,)`` for scalars).
        synthetic: shape ``(M, D)`` (or ``(M,)``).
        max_samples: pooled rows used at most, ``>= 2``.
        generator: random generator for the subsample.

    Returns:
        0-dim float64 tensor ``sigma >= 0`` in feature units; 1.0 when all pooled samples coincide.

    Raises:
        ValueError: on malformed inputs or ``max_samples < 2``.
    """
    real, synthetic = _as_2d(real, "real"), _as_2d(synthetic, "synthetic")
    check_pair(real, synthetic)
    if max_samples < 2:
        raise ValueError(f"`max_samples` must be >= 2, got {max_samples}.")
    z = torch.cat([real.double(), synthetic.double()], dim=0)
    if z.shape[0] < 2:
        raise ValueError("need at least 2 pooled samples for the median heuristic.")
    if z.shape[0] > max_samples:
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        idx = torch.randperm(z.shape[0], generator=generator)[:max_samples].to(z.device)
        z = z[idx]
    d = torch.pdist(z)
    d, _ = torch.sort(d)
    n = d.numel()
    med = d[n // 2] if n % 2 else 0.5 * (d[n // 2 - 1] + d[n // 2])
    if float(med) == 0.0:
        return torch.tensor(1.0, dtype=torch.float64, device=z.device)
    return med


def _kernel_sum(a: Tensor, b: Tensor, gamma: float, same: bool, chunk_size: Optional[int]) -> Tensor:
    """Sum of ``exp(-gamma |a_i - b_j|^2)`` over all pairs (off-diagonal pairs only when ``same``)."""
    sq_a = (a * a).sum(dim=1)
    sq_b = sq_a if same else (b * b).sum(dim=1)
    rows = block_rows(b.shape[0], chunk_size)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for s in range(0, a.shape[0], rows):
        e = min(s + rows, a.shape[0])
        k = _sq_dists(a[s:e], b, sq_a[s:e], sq_b).mul_(-gamma).exp_()
        if same:
            k[:, s:e].fill_diagonal_(0.0)
        total += k.sum()
    return total


@renamed_kwargs(fake="synthetic")
def maximum_mean_discrepancy(
    real: Tensor,
    synthetic: Tensor,
    bandwidth: Optional[float] = None,
    chunk_size: Optional[int] = None,
    max_samples_bandwidth: int = 2000,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Unbiased squared maximum mean discrepancy ``MMD^2_u`` with a Gaussian RBF kernel (Gretton et al. 2012).

    ``k(x, y) = exp(-|x - y|^2 / (2 sigma^2))`` (sklearn's ``rbf_kernel`` with ``gamma = 1 / (2 sigma^2)``) and

    ``MMD^2_u = 1/(N(N-1)) sum_{i != j} k(x_i, x_j) + 1/(M(M-1)) sum_{i != j} k(y_i, y_j)
    - 2/(NM) sum_{i, j} k(x_i, y_j)``.

    Args:
        real: real samples, shape ``(N, D)`` (or ``(N,)``), ``N >= 2``.
        synthetic: synthetic samples, shape ``(M, D)`` (or ``(M,)``), ``M >= 2``.
        bandwidth: kernel width ``sigma > 0`` in feature units; ``None`` uses
            :func:`median_heuristic_bandwidth` on the pooled samples.
        chunk_size: rows per kernel block (``None``: about 2**23 entries per block).
        max_samples_bandwidth: pooled rows used by the median heuristic.
        generator: random generator of the median heuristic's subsample (seeded 0 when ``None``).

    Returns:
        0-dim float64 tensor; unbiased, so it can be slightly negative when the distributions agree. Range
        ``[-2, 2]``, 0 in expectation for identical distributions.

    Raises:
        ValueError: on malformed inputs, fewer than 2 samples per set, or ``bandwidth <= 0``.

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(500, 4, generator=g), torch.randn(500, 4, generator=g)
        >>> abs(float(maximum_mean_discrepancy(x, y))) < 0.01
        True
    """
    real, synthetic = _as_2d(real, "real"), _as_2d(synthetic, "synthetic")
    check_pair(real, synthetic)
    n, m = real.shape[0], synthetic.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"MMD^2_u needs at least 2 samples per set, got {n} and {m}.")
    if bandwidth is None:
        sigma = float(median_heuristic_bandwidth(real, synthetic, max_samples_bandwidth, generator))
    else:
        sigma = float(bandwidth)
        if not sigma > 0:
            raise ValueError(f"`bandwidth` must be > 0, got {bandwidth}.")
    gamma = 1.0 / (2.0 * sigma * sigma)
    x, y = real.double(), synthetic.double()
    kxx = _kernel_sum(x, x, gamma, True, chunk_size) / (n * (n - 1))
    kyy = _kernel_sum(y, y, gamma, True, chunk_size) / (m * (m - 1))
    kxy = _kernel_sum(x, y, gamma, False, chunk_size) / (n * m)
    return kxx + kyy - 2.0 * kxy


def total_variance(features: Tensor, unbiased: bool = True) -> Tensor:
    """Total variance ``Tr Cov(features)``: the per-dimension variances summed over the ``D`` features.

    ``sum_d 1/(N - ddof) sum_i (x_id - mean_d)^2`` with ``ddof = 1`` when ``unbiased`` (as ``numpy.cov`` and
    :func:`gaussian_statistics`) and ``ddof = 0`` otherwise (the maximum-likelihood fit, as ``numpy.var``'s
    default).

    Args:
        features: shape ``(N, D)`` (or ``(N,)`` for one feature); ``N >= 2`` when ``unbiased``, else ``N >= 1``.
        unbiased: divide by ``N - 1`` (``ddof=1``, default) or by ``N`` (``ddof=0``).

    Returns:
        0-dim float64 tensor ``>= 0``, in squared feature units.

    Raises:
        ValueError: if ``features`` is not a finite non-empty tensor of shape ``(N, D)`` or ``(N,)``, or has
            fewer samples than the ``ddof`` allows.

    Example::

        >>> x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
        >>> total_variance(x)  # (2 + 2) with ddof=1
        tensor(4., dtype=torch.float64)
        >>> total_variance(x, unbiased=False)  # (1 + 1) with ddof=0
        tensor(2., dtype=torch.float64)
    """
    x = _as_2d(features, "features")
    least = 2 if unbiased else 1
    if x.shape[0] < least:
        raise ValueError(
            f"`features` needs at least {least} samples for total_variance(unbiased={unbiased}), got {x.shape[0]}."
        )
    return x.double().var(dim=0, unbiased=bool(unbiased)).sum()


@renamed_kwargs(fake="synthetic")
def variance_ratio(real: Tensor, synthetic: Tensor) -> Tensor:
    """Total variance of the synthetic features over that of the real ones: ``Tr Cov(synthetic) / Tr Cov(real)``.

    The simplest collapse symptom (Shumailov et al. 2024: the fitted variance of a recursively refitted
    Gaussian shrinks like ``((M-1)/M)^g``). Note that it can stay near 1 while modes are lost (MAD), so read
    it together with recall and coverage.

    Args:
        real: real features, shape ``(N, D)`` (or ``(N,)``), ``N >= 2``.
        synthetic: synthetic features, shape ``(M, D)`` (or ``(M,)``), ``M >= 2``.

    Returns:
        0-dim float64 tensor ``>= 0`` (1 = same spread, < 1 = shrinking); ``inf`` if the real variance is 0.

    Raises:
        ValueError: on malformed inputs or fewer than 2 samples.

    Example::

        >>> x = torch.randn(10000, 3)
        >>> round(float(variance_ratio(x, 0.5 * x)), 3)
        0.25
    """
    real, synthetic = _as_2d(real, "real"), _as_2d(synthetic, "synthetic")
    check_pair(real, synthetic)
    return total_variance(synthetic) / total_variance(real)


def _quantile_sorted(sorted_x: Tensor, q: float) -> Tensor:
    """Linear-interpolation quantile (``numpy.quantile`` default) along dim 0 of an already sorted tensor."""
    n = sorted_x.shape[0]
    pos = q * (n - 1)
    lo = int(pos // 1)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_x[lo] + (sorted_x[hi] - sorted_x[lo]) * frac


def real_quantile_range(real: Tensor, q: float = 0.025) -> tuple[Tensor, Tensor]:
    """Per-dimension ``q`` and ``1 - q`` quantiles of the real features (linear interpolation, as numpy).

    Args:
        real: shape ``(N, D)`` (or ``(N,)``).
        q: tail probability per side, ``0 < q < 0.5``.

    Returns:
        ``(lower, upper)``, each of shape ``(D,)``, float64.
    """
    x = _as_2d(real, "real")
    if not 0.0 < q < 0.5:
        raise ValueError(f"`q` must lie in (0, 0.5), got {q}.")
    s, _ = torch.sort(x.double(), dim=0)
    return _quantile_sorted(s, q), _quantile_sorted(s, 1.0 - q)


def _outside_share(x: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    x = x.double()
    return ((x < lower) | (x > upper)).double().mean()


@renamed_kwargs(fake="synthetic")
def tail_mass(real: Tensor, synthetic: Tensor, q: float = 0.025) -> Tensor:
    """Share of synthetic values that lie in the real tails, per dimension, averaged over dimensions.

    Definition: with ``lo_d, hi_d`` the real ``q`` and ``1 - q`` quantiles of dimension ``d`` and ``syn_jd``
    dimension ``d`` of synthetic sample ``j``
    (:func:`real_quantile_range`), ``tail_mass = 1/(M D) sum_j sum_d 1[syn_jd < lo_d or syn_jd > hi_d]``.
    On the real data itself it is about ``2 q`` by construction; a collapsing generator loses its tails first
    (Shumailov et al. 2024), so it falls towards 0. Pass a 1-D statistic (e.g. sample norms, log-likelihoods or
    sequence lengths) as shape ``(N,)`` to measure the tails of that statistic.

    Args:
        real: real features, shape ``(N, D)`` or ``(N,)``.
        synthetic: synthetic features, shape ``(M, D)`` or ``(M,)``.
        q: tail probability per side, ``0 < q < 0.5``.

    Returns:
        0-dim float64 tensor in ``[0, 1]``.

    Raises:
        ValueError: on malformed inputs, mismatched feature dims or ``q`` outside ``(0, 0.5)``.

    Example::

        >>> x = torch.randn(10000, 2)
        >>> float(tail_mass(x, 0.1 * x))
        0.0
    """
    real, synthetic = _as_2d(real, "real"), _as_2d(synthetic, "synthetic")
    check_pair(real, synthetic)
    lower, upper = real_quantile_range(real, q)
    return _outside_share(synthetic, lower, upper)


@renamed_kwargs(fake="synthetic")
def tail_mass_ratio(real: Tensor, synthetic: Tensor, q: float = 0.025) -> Tensor:
    """:func:`tail_mass` of the synthetic data over that of the real data (against the same real quantiles).

    1 means the synthetic data fills the real tails as often as the real data does; it falls towards 0 as
    tails are lost and exceeds 1 when the synthetic data is heavier-tailed.

    Args:
        real: real features, shape ``(N, D)`` or ``(N,)``.
        synthetic: synthetic features, shape ``(M, D)`` or ``(M,)``.
        q: tail probability per side, ``0 < q < 0.5``.

    Returns:
        0-dim float64 tensor ``>= 0`` (``nan`` if the real data has no values outside its own range, e.g. a
        constant dimension everywhere).

    Raises:
        ValueError: as :func:`tail_mass`.

    Example::

        >>> x = torch.randn(10000, 2)
        >>> float(tail_mass_ratio(x, x))
        1.0
    """
    real, synthetic = _as_2d(real, "real"), _as_2d(synthetic, "synthetic")
    check_pair(real, synthetic)
    lower, upper = real_quantile_range(real, q)
    real_share = _outside_share(real, lower, upper)
    return _outside_share(synthetic, lower, upper) / real_share
