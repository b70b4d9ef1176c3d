"""Closed-form statistical models for self-consuming loops, vectorised over independent seeds.

Every model has the same small interface::

    model.fit(data) -> model          # maximum-likelihood refit on ``data``
    model.sample(n, rng) -> data      # ``n`` fresh samples per seed

``data`` always carries a leading *seed* (batch) axis ``S`` and a sample axis ``n`` second, so that hundreds of
independent chains run as one array computation:

=========================  =========================================================
model                      data
=========================  =========================================================
``GaussianModel``          ``(S, n)`` (univariate) or ``(S, n, d)`` (multivariate)
``GaussianMixtureModel``   ``(S, n, d)``
``CategoricalModel``       ``(S, n)`` integer tokens in ``[0, n_categories)``
``LinearRegressionModel``  a tuple ``(x, y)`` with ``x`` ``(S, n, d)`` and ``y`` ``(S, n)``
=========================  =========================================================

Use ``data[None]`` for a single chain. Models whose MLE depends on the data only through additive sufficient
statistics also provide ``stats(data)`` and ``fit_stats(stats)``; :class:`~collapse_guard.loop.SelfConsumingLoop`
uses them so that the ``accumulate`` regime costs O(1) per generation instead of refitting on a growing pile.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from collapse_guard.loop.digits import RngLike, as_rng

__all__ = ["GaussianModel", "GaussianMixtureModel", "CategoricalModel", "LinearRegressionModel"]


def _check_batched(a: np.ndarray, ndims: Tuple[int, ...], name: str) -> None:
    if a.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dims (seed axis first), got shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has no samples (shape {a.shape})")


class _FitFromStats:
    """``fit(data)`` as ``fit_stats(stats(data))``: models with additive sufficient statistics."""

    def fit(self, data: np.ndarray):
        """Fit to ``data`` (seed axis first) from its sufficient statistics; returns ``self``."""
        return self.fit_stats(self.stats(data))


class GaussianModel(_FitFromStats):
    r"""Gaussian fitted by maximum likelihood (mean and ``ddof=0`` variance / covariance), one per seed.

    The model of Shumailov et al., "AI models collapse when trained on recursively generated data",
    Nature 631 (2024), Thm 3.1: refitting on ``M`` of its own samples per generation gives
    :math:`E[\sigma_g^2] = ((M-1)/M)^g \sigma_0^2` and a median :math:`\sigma_g \approx e^{-g/M}\sigma_0`.

    Args:
        ddof: delta degrees of freedom of the variance estimate (0 = MLE, the published setting; 1 =
            unbiased variance, which still collapses, more slowly, in the median).

    Raises:
        ValueError: if data are not ``(S, n)`` or ``(S, n, d)``, or ``n <= ddof``; on ``sample`` before
            ``fit``.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> m = GaussianModel().fit(rng.normal(size=(500, 100)))   # 500 seeds, 100 samples each
        >>> x = m.sample(100, rng)
        >>> x.shape, m.std.shape
        ((500, 100), (500,))
    """

    def __init__(self, ddof: int = 0) -> None:
        if ddof < 0:
            raise ValueError(f"ddof must be >= 0, got {ddof}")
        self.ddof = int(ddof)
        self.mean: Optional[np.ndarray] = None
        self.cov: Optional[np.ndarray] = None
        self.univariate = True

    # sufficient statistics: (count, sum, sum of squares / outer products), all additive
    def stats(self, data: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Additive sufficient statistics ``(n, sum x, sum x x^T)`` per seed."""
        x = np.asarray(data, dtype=np.float64)
        _check_batched(x, (2, 3), "data")
        n = np.full(x.shape[0], x.shape[1], dtype=np.float64)
        if x.ndim == 2:
            return n, x.sum(axis=1), np.einsum("sn,sn->s", x, x)
        return n, x.sum(axis=1), np.einsum("sni,snj->sij", x, x)

    def fit_stats(self, stats: Tuple[np.ndarray, np.ndarray, np.ndarray]) -> "GaussianModel":
        """Fit from :meth:`stats` (possibly summed over several datasets)."""
        n, s1, s2 = stats
        if np.any(n <= self.ddof):
            raise ValueError(f"need more than ddof={self.ddof} samples per seed")
        self.univariate = s1.ndim == 1
        mean = s1 / n if self.univariate else s1 / n[:, None]
        if self.univariate:
            cov = (s2 - n * mean**2) / (n - self.ddof)
            cov = np.maximum(cov, 0.0)
        else:
            cov = (s2 - n[:, None, None] * np.einsum("si,sj->sij", mean, mean)) / (n - self.ddof)[:, None, None]
            cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        self.mean, self.cov = mean, cov
        return self

    def sample(self, n: int, rng: RngLike = None) -> np.ndarray:
        """Draw ``n`` samples per seed: ``(S, n)`` or ``(S, n, d)``."""
        if self.mean is None:
            raise ValueError("GaussianModel.sample called before fit")
        rng = as_rng(rng)
        S = self.mean.shape[0]
        if self.univariate:
            return self.mean[:, None] + np.sqrt(self.cov)[:, None] * rng.standard_normal((S, n))
        d = self.mean.shape[1]
        # eigh tolerates singular (collapsed) covariances where cholesky would fail
        w, v = np.linalg.eigh(self.cov)
        root = v * np.sqrt(np.maximum(w, 0.0))[:, None, :]
        return self.mean[:, None, :] + np.einsum("sij,snj->sni", root, rng.standard_normal((S, n, d)))

    @property
    def std(self) -> np.ndarray:
        """Per-seed standard deviation: ``(S,)`` (univariate) or ``sqrt(trace(cov) / d)`` (multivariate)."""
        if self.mean is None:
            raise ValueError("GaussianModel is not fitted")
        if self.univariate:
            return np.sqrt(self.cov)
        return np.sqrt(np.trace(self.cov, axis1=1, axis2=2) / self.cov.shape[1])


class CategoricalModel(_FitFromStats):
    r"""Categorical distribution fitted by empirical frequencies (MLE), one per seed.

    The discrete case of Shumailov et al., Nature 631 (2024): a type whose count is 0 in one generation has
    probability 0 forever after, so the support shrinks and the entropy falls (tails vanish first).

    Args:
        n_categories: vocabulary size ``V``; tokens are integers in ``[0, V)``.
        shuffle: shuffle the tokens of each sample (off: tokens come sorted by type, which is enough for
            fitting and faster).

    Raises:
        ValueError: for tokens outside ``[0, V)`` or data that are not ``(S, n)``; on ``sample`` before
            ``fit``.

    Example::

        >>> m = CategoricalModel(5).fit(np.array([[0, 0, 1, 4], [2, 2, 2, 2]]))
        >>> m.probs
        array([[0.5 , 0.25, 0.  , 0.  , 0.25],
               [0.  , 0.  , 1.  , 0.  , 0.  ]])
        >>> m.support_size().tolist()
        [3, 1]
    """

    def __init__(self, n_categories: int, shuffle: bool = False) -> None:
        if n_categories < 1:
            raise ValueError(f"n_categories must be >= 1, got {n_categories}")
        self.n_categories = int(n_categories)
        self.shuffle = bool(shuffle)
        self.probs: Optional[np.ndarray] = None

    def stats(self, data: np.ndarray) -> Tuple[np.ndarray]:
        """Additive sufficient statistics: ``(counts,)`` with counts ``(S, V)``."""
        t = np.asarray(data)
        _check_batched(t, (2,), "data")
        if not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"tokens must be integers, got dtype {t.dtype}")
        if t.min() < 0 or t.max() >= self.n_categories:
            raise ValueError(f"tokens must lie in [0, {self.n_categories})")
        S, V = t.shape[0], self.n_categories
        flat = (t + (np.arange(S) * V)[:, None]).ravel()
        return (np.bincount(flat, minlength=S * V).reshape(S, V).astype(np.float64),)

    def fit_stats(self, stats: Tuple[np.ndarray]) -> "CategoricalModel":
        """Fit from :meth:`stats` (possibly summed over several datasets)."""
        (counts,) = stats
        self.probs = counts / counts.sum(axis=1, keepdims=True)
        return self

    def sample(self, n: int, rng: RngLike = None) -> np.ndarray:
        """Draw ``n`` tokens per seed: int64 ``(S, n)``."""
        if self.probs is None:
            raise ValueError("CategoricalModel.sample called before fit")
        rng = as_rng(rng)
        S, V = self.probs.shape
        counts = rng.multinomial(n, self.probs)  # (S, V), each row sums to n
        tokens = np.repeat(np.tile(np.arange(V, dtype=np.int64), S), counts.ravel()).reshape(S, n)
        if self.shuffle:
            tokens = rng.permuted(tokens, axis=1)
        return tokens

    def support_size(self) -> np.ndarray:
        """Number of types with non-zero probability, per seed."""
        return np.count_nonzero(self.probs, axis=1)

    def entropy(self) -> np.ndarray:
        """Shannon entropy in nats, per seed."""
        p = self.probs
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


class LinearRegressionModel:
    r"""Ordinary least squares ``y = x w + noise``, refit per seed; samples are fresh inputs relabelled by the fit.

    The setting of Dohmatob, Feng & Kempe, "Model collapse demystified: the case of regression" (2024) and
    Gerstgrasser et al., "Is model collapse inevitable?" (2024), Thm 2: with ``x ~ N(0, I_d)``, ``T`` samples
    per round and noise variance :math:`\sigma^2`, the test error :math:`\|\hat w_n - w^*\|^2` grows as
    :math:`n \sigma^2 d / (T - d - 1)` when each round replaces the data, and stays below
    :math:`\sigma^2 d/(T-d-1) \cdot \pi^2/6` when data accumulate.

    Args:
        noise_std: standard deviation :math:`\sigma` of the fresh label noise added by :meth:`sample`.
        x_std: standard deviation of the fresh isotropic Gaussian inputs drawn by :meth:`sample`.

    Raises:
        ValueError: for malformed data or fewer samples than features; on ``sample`` before ``fit``.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(300, 200, 50)); w = np.ones(50)
        >>> m = LinearRegressionModel().fit((x, x @ w + rng.normal(size=(300, 200))))
        >>> x2, y2 = m.sample(200, rng)
        >>> x2.shape, y2.shape, m.coef.shape
        ((300, 200, 50), (300, 200), (300, 50))
    """

    def __init__(self, noise_std: float = 1.0, x_std: float = 1.0) -> None:
        if noise_std < 0 or x_std <= 0:
            raise ValueError("noise_std must be >= 0 and x_std > 0")
        self.noise_std = float(noise_std)
        self.x_std = float(x_std)
        self.coef: Optional[np.ndarray] = None

    def stats(self, data: Tuple[np.ndarray, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """Additive sufficient statistics ``(X^T X, X^T y)`` per seed."""
        x, y = (np.asarray(a, dtype=np.float64) for a in data)
        _check_batched(x, (3,), "x")
        if y.shape != x.shape[:2]:
            raise ValueError(f"y must have shape {x.shape[:2]}, got {y.shape}")
        return np.einsum("sni,snj->sij", x, x), np.einsum("sni,sn->si", x, y)

    def fit_stats(self, stats: Tuple[np.ndarray, np.ndarray]) -> "LinearRegressionModel":
        """Fit from :meth:`stats` (possibly summed over several datasets)."""
        xtx, xty = stats
        try:
            self.coef = np.linalg.solve(xtx, xty[..., None])[..., 0]
        except np.linalg.LinAlgError as e:
            raise ValueError("X^T X is singular: need at least as many samples as features") from e
        return self

    def fit(self, data: Tuple[np.ndarray, np.ndarray]) -> "LinearRegressionModel":
        """OLS fit of ``(x, y)`` with ``x`` ``(S, n, d)`` and ``y`` ``(S, n)``.

        Returns:
            ``self``.
        """
        return self.fit_stats(self.stats(data))

    def sample(self, n: int, rng: RngLike = None) -> Tuple[np.ndarray, np.ndarray]:
        """Fresh inputs ``x ~ N(0, x_std^2 I)`` labelled ``x @ coef + N(0, noise_std^2)``: ``(x, y)``."""
        if self.coef is None:
            raise ValueError("LinearRegressionModel.sample called before fit")
        rng = as_rng(rng)
        S, d = self.coef.shape
        x = self.x_std * rng.standard_normal((S, n, d))
        y = np.einsum("snd,sd->sn", x, self.coef) + self.noise_std * rng.standard_normal((S, n))
        return x, y

    def test_error(self, w_star: np.ndarray) -> np.ndarray:
        r"""Excess test error :math:`\|\hat w - w^*\|^2` (times ``x_std^2``) per seed."""
        if self.coef is None:
            raise ValueError("LinearRegressionModel is not fitted")
        return self.x_std**2 * np.sum((self.coef - np.asarray(w_star)) ** 2, axis=-1)


class GaussianMixtureModel:
    r"""Gaussian mixture with full covariances fitted by EM, vectorised over seeds.

    The GMM experiment of Shumailov et al., Nature 631 (2024) (official notebook): a 2-component mixture
    refit every generation on samples of the previous one loses its tails and its variance.

    EM starts from a deterministic split of the data into ``n_components`` slices along each seed's first
    principal axis (close to a k-means start), or, with ``warm_start=True`` and a previous fit, from the
    previous parameters; it stops when every seed's mean log-likelihood improves by less than ``tol`` or
    after ``max_iter`` iterations.

    Args:
        n_components: number of components ``K``.
        max_iter: EM iterations at most.
        tol: convergence threshold on the per-sample log-likelihood gain (as scikit-learn's ``tol``).
        reg_covar: ridge added to the covariance diagonals (as scikit-learn's ``reg_covar``).
        warm_start: start each refit from the current parameters.

    Raises:
        ValueError: for invalid arguments, data not ``(S, n, d)``, fewer samples than components; on
            ``sample`` before ``fit``.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> m = GaussianMixtureModel(2).fit(rng.normal(size=(8, 1000, 2)))   # 8 seeds
        >>> m.weights.shape, m.means.shape, m.covariances.shape
        ((8, 2), (8, 2, 2), (8, 2, 2, 2))
        >>> m.sample(1000, rng).shape
        (8, 1000, 2)
    """

    def __init__(
        self,
        n_components: int = 2,
        max_iter: int = 100,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        warm_start: bool = False,
    ) -> None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if reg_covar < 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar}")
        self.n_components = int(n_components)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.reg_covar = float(reg_covar)
        self.warm_start = bool(warm_start)
        self.weights: Optional[np.ndarray] = None
        self.means: Optional[np.ndarray] = None
        self.covariances: Optional[np.ndarray] = None
        self.n_iter_: int = 0

    # --------------------------------------------------------------- EM steps
    def _init_resp(self, x: np.ndarray) -> np.ndarray:
        S, n, _ = x.shape
        K = self.n_components
        xc = x - x.mean(axis=1, keepdims=True)
        cov = np.einsum("sni,snj->sij", xc, xc) / n
        _, v = np.linalg.eigh(cov)
        proj = np.einsum("snd,sd->sn", xc, v[:, :, -1])
        rank = np.argsort(np.argsort(proj, axis=1), axis=1)
        label = (rank * K) // n
        return (label[:, :, None] == np.arange(K)).astype(np.float64)

    def _m_step(self, x: np.ndarray, resp: np.ndarray) -> None:
        S, n, d = x.shape
        nk = resp.sum(axis=1) + 10 * np.finfo(np.float64).eps  # (S, K)
        self.weights = nk / n
        rt = np.swapaxes(resp, 1, 2)  # (S, K, n)
        self.means = (rt @ x) / nk[:, :, None]  # (S, K, d)
        diff = x[:, None, :, :] - self.means[:, :, None, :]  # (S, K, n, d)
        cov = np.swapaxes(diff * rt[..., None], -1, -2) @ diff / nk[:, :, None, None]
        cov = 0.5 * (cov + np.swapaxes(cov, -1, -2))
        self.covariances = cov + self.reg_covar * np.eye(d)

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        """``log w_k + log N(x | mu_k, Sigma_k)``: ``(S, n, K)``."""
        d = x.shape[2]
        inv = np.linalg.inv(self.covariances)  # (S, K, d, d)
        _, logdet = np.linalg.slogdet(self.covariances)  # (S, K)
        diff = x[:, None, :, :] - self.means[:, :, None, :]  # (S, K, n, d)
        maha = ((diff @ inv) * diff).sum(axis=-1)  # (S, K, n)
        logp = -0.5 * (maha + logdet[:, :, None] + d * np.log(2 * np.pi)) + np.log(self.weights)[:, :, None]
        return np.moveaxis(logp, 1, 2)

    def fit(self, data: np.ndarray) -> "GaussianMixtureModel":
        """Fit by EM, per seed.

        Args:
            data: ``(S, n, d)`` samples.

        Returns:
            ``self``.
        """
        x = np.asarray(data, dtype=np.float64)
        _check_batched(x, (3,), "data")
        if x.shape[1] < self.n_components:
            raise ValueError(f"need at least n_components={self.n_components} samples per seed")
        if not (self.warm_start and self.means is not None and self.means.shape[0] == x.shape[0]):
            self._m_step(x, self._init_resp(x))
        prev = np.full(x.shape[0], -np.inf)
        for it in range(1, self.max_iter + 1):
            logp = self._log_prob(x)
            mx = logp.max(axis=2, keepdims=True)
            lse = mx + np.log(np.exp(logp - mx).sum(axis=2, keepdims=True))
            ll = lse[:, :, 0].mean(axis=1)
            resp = np.exp(logp - lse)
            self._m_step(x, resp)
            self.n_iter_ = it
            if np.all(np.abs(ll - prev) < self.tol):
                break
            prev = ll
        return self

    def sample(self, n: int, rng: RngLike = None) -> np.ndarray:
        """Draw ``n`` samples per seed: ``(S, n, d)``."""
        if self.means is None:
            raise ValueError("GaussianMixtureModel.sample called before fit")
        rng = as_rng(rng)
        S, K, d = self.means.shape
        cum = np.cumsum(self.weights / self.weights.sum(axis=1, keepdims=True), axis=1)
        comp = (rng.random((S, n, 1)) > cum[:, None, :]).sum(axis=2)
        comp = np.minimum(comp, K - 1)  # (S, n)
        w, v = np.linalg.eigh(self.covariances)
        root = v * np.sqrt(np.maximum(w, 0.0))[..., None, :]  # (S, K, d, d)
        idx = np.arange(S)[:, None]
        eps = rng.standard_normal((S, n, d))
        return self.means[idx, comp] + np.einsum("snij,snj->sni", root[idx, comp], eps)

    def component_std(self) -> np.ndarray:
        """Weight-averaged component standard deviation ``sqrt(trace(Sigma_k) / d)`` per seed."""
        if self.means is None:
            raise ValueError("GaussianMixtureModel is not fitted")
        d = self.means.shape[2]
        s = np.sqrt(np.trace(self.covariances, axis1=2, axis2=3) / d)
        return np.sum(self.weights * s, axis=1)
