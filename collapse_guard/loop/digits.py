"""A refittable class-conditional generator for image-like vectors (e.g. sklearn's 8x8 digits).

The model is the kind of fully-specified, maximum-likelihood generative model whose recursive refitting
Shumailov et al. (Nature 631, 2024) analyse: every generation the whole model (PCA basis, label marginal,
one Gaussian mixture per class) is re-estimated by MLE / EM from a finite sample of the previous one. The
finite-sample estimation error, not any added noise, is what makes a chain of such refits collapse: the
within-class covariance shrinks (a full covariance estimated from fewer samples than dimensions is rank
deficient), mixture components lose their weight, the tails disappear and, because the class counts of each
generation are drawn from the fitted label marginal, classes drift and die out.
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple, Union

import numpy as np

RngLike = Union[None, int, np.random.Generator]


def single_threaded_blas():
    """Context manager limiting BLAS / OpenMP thread pools to one thread (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def as_rng(rng: RngLike) -> np.random.Generator:
    """Return ``rng`` as a ``numpy.random.Generator`` (an int or ``None`` seeds a new one)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


class ClassConditionalGMM:
    r"""Class-conditional Gaussian mixture in a PCA space, refit by maximum likelihood.

    ``fit`` estimates, from the data it is given only: the mean and the top ``n_pca`` principal axes of the
    pixels, the label marginal (empirical class frequencies), and per class a Gaussian mixture with up to
    ``n_components`` components fitted by EM (``sklearn.mixture.GaussianMixture``) on the PCA coordinates.
    ``sample`` draws the class counts from the fitted label marginal (multinomial, so classes can drift and
    die out across generations), draws each sample from its class's mixture, maps it back to pixel space
    and clips it to ``value_range``: the output has the format of the real data.

    Recursive refitting of such a model is the setting of Shumailov et al., "AI models collapse when trained
    on recursively generated data", Nature 631 (2024), Sec. 3 (Gaussian / GMM approximation).

    Args:
        n_components: mixture components per class (fewer when a class has fewer samples).
        n_pca: dimension of the PCA space the mixtures live in (capped at ``n_samples - 1`` and the data
            dimension).
        covariance_type: ``"full"``, ``"diag"``, ``"tied"`` or ``"spherical"`` (as in scikit-learn).
        reg_covar: ridge added to the covariance diagonals by EM, in squared PCA units (keeps fits defined
            when a component has fewer samples than dimensions; small enough not to stop the collapse).
        n_classes: number of classes; ``None`` takes ``max(y) + 1`` at the first fit. Dead classes keep
            their index and have prior 0.
        value_range: ``(low, high)`` the samples are clipped to (``(0, 16)`` for sklearn digits), or
            ``None`` for no clipping.
        max_iter: EM iterations per mixture.
        random_state: seed of the EM initialisation (k-means), so that fits are deterministic.

    Raises:
        ValueError: on invalid arguments, on ``fit`` with empty or mismatched data, and on ``sample``
            before ``fit``.

    Example::

        >>> from sklearn.datasets import load_digits
        >>> x, y = load_digits(return_X_y=True)
        >>> model = ClassConditionalGMM(n_components=3, n_pca=40).fit(x, y)
        >>> xs, ys = model.sample(300, rng=0)
        >>> xs.shape, xs.dtype, float(xs.min()) >= 0.0, float(xs.max()) <= 16.0
        ((300, 64), dtype('float32'), True, True)
    """

    def __init__(
        self,
        n_components: int = 3,
        n_pca: int = 40,
        covariance_type: str = "full",
        reg_covar: float = 1e-2,
        n_classes: Optional[int] = None,
        value_range: Optional[Tuple[float, float]] = (0.0, 16.0),
        max_iter: int = 100,
        random_state: int = 0,
    ) -> None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if n_pca < 1:
            raise ValueError(f"n_pca must be >= 1, got {n_pca}")
        if covariance_type not in ("full", "diag", "tied", "spherical"):
            raise ValueError(
                "covariance_type must be one of 'full', 'diag', 'tied', 'spherical', "
                f"got {covariance_type!r}"
            )
        if reg_covar < 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar}")
        if value_range is not None and not value_range[0] < value_range[1]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}")
        self.n_components = int(n_components)
        self.n_pca = int(n_pca)
        self.covariance_type = covariance_type
        self.reg_covar = float(reg_covar)
        self.n_classes = n_classes
        self.value_range = value_range
        self.max_iter = int(max_iter)
        self.random_state = int(random_state)
        self._fitted = False

    # ------------------------------------------------------------------ fit
    def fit(self, x: np.ndarray, y: np.ndarray) -> "ClassConditionalGMM":
        """Fit PCA, label marginal and one mixture per present class to ``(x, y)``.

        Args:
            x: ``(n, d)`` array of samples (flattened images).
            y: ``(n,)`` integer class labels.

        Returns:
            ``self``.

        Raises:
            ValueError: if ``x`` is empty, not 2-D, or its length differs from ``y``'s.
        """
        # Small matrices: multi-threaded BLAS only adds contention (x50 slower on a loaded 2-core machine).
        with single_threaded_blas():
            return self._fit(x, y)

    def _fit(self, x: np.ndarray, y: np.ndarray) -> "ClassConditionalGMM":
        from collapse_guard._optional import require

        GaussianMixture = require("sklearn.mixture", "demo", "ClassConditionalGMM").GaussianMixture

        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y).astype(np.int64).ravel()
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"x must be a non-empty 2-D array, got shape {x.shape}")
        if len(x) != len(y):
            raise ValueError(f"x and y lengths differ: {len(x)} vs {len(y)}")
        if y.min() < 0:
            raise ValueError("labels must be non-negative integers")
        if self.n_classes is None:
            self.n_classes = int(y.max()) + 1
        elif y.max() >= self.n_classes:
            raise ValueError(f"label {int(y.max())} out of range for n_classes={self.n_classes}")

        n, d = x.shape
        self.dim_ = d
        self.mean_ = x.mean(axis=0)
        k = max(1, min(self.n_pca, d, n - 1))
        _, _, vt = np.linalg.svd(x - self.mean_, full_matrices=False)
        self.components_ = vt[:k]  # (k, d), orthonormal rows
        z = (x - self.mean_) @ self.components_.T

        counts = np.bincount(y, minlength=self.n_classes).astype(np.float64)
        self.class_prior_ = counts / counts.sum()
        self.mixtures_ = {}
        for c in np.flatnonzero(counts):
            zc = z[y == c]
            if len(zc) == 1:  # a single sample: a point mass widened by reg_covar
                zc = np.concatenate([zc, zc])
            gm = GaussianMixture(
                n_components=min(self.n_components, len(zc)),
                covariance_type=self.covariance_type,
                reg_covar=self.reg_covar,
                max_iter=self.max_iter,
                random_state=self.random_state,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ConvergenceWarning on tiny / degenerate classes
                gm.fit(zc)
            self.mixtures_[int(c)] = (gm.weights_.copy(), gm.means_.copy(), self._full_cholesky(gm))
        self.n_fit_samples_ = n
        self._fitted = True
        return self

    def _full_cholesky(self, gm) -> np.ndarray:
        """Cholesky factors ``(m, k, k)`` of each component's covariance, whatever the covariance type."""
        m, k = gm.means_.shape
        cov = gm.covariances_
        if self.covariance_type == "full":
            full = cov
        elif self.covariance_type == "tied":
            full = np.broadcast_to(cov, (m, k, k))
        elif self.covariance_type == "diag":
            full = np.stack([np.diag(v) for v in cov])
        else:  # spherical
            full = np.stack([np.eye(k) * v for v in cov])
        return np.linalg.cholesky(full)

    # --------------------------------------------------------------- sample
    def sample(self, n: int, rng: RngLike = None) -> Tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` labelled samples.

        Class counts are multinomial with the fitted label marginal; the order of the samples is shuffled.

        Args:
            n: number of samples.
            rng: a ``numpy.random.Generator`` or a seed.

        Returns:
            ``(x, y)``: ``x`` float32 ``(n, d)`` clipped to ``value_range``, ``y`` int64 ``(n,)``.

        Raises:
            ValueError: if the model is not fitted or ``n < 0``.
        """
        if not self._fitted:
            raise ValueError("ClassConditionalGMM.sample called before fit")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = as_rng(rng)
        with single_threaded_blas():
            return self._sample(n, rng)

    def _sample(self, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        k = self.components_.shape[0]
        counts = rng.multinomial(n, self.class_prior_)
        zs, ys = [np.empty((0, k))], [np.empty(0, dtype=np.int64)]
        for c in np.flatnonzero(counts):
            m = int(counts[c])
            weights, means, chol = self.mixtures_[int(c)]
            comp = rng.choice(len(weights), size=m, p=weights / weights.sum())
            eps = rng.standard_normal((m, k))
            zs.append(means[comp] + np.einsum("nij,nj->ni", chol[comp], eps))
            ys.append(np.full(m, c, dtype=np.int64))
        z = np.concatenate(zs)
        y = np.concatenate(ys)
        x = z @ self.components_ + self.mean_
        if self.value_range is not None:
            x = np.clip(x, self.value_range[0], self.value_range[1])
        order = rng.permutation(n)
        return x[order].astype(np.float32), y[order]

    # ---------------------------------------------------------------- stats
    def classes_alive(self) -> int:
        """Number of classes with a non-zero fitted prior."""
        self._check_fitted()
        return int(np.count_nonzero(self.class_prior_))

    def modes_alive(self, min_weight: Optional[float] = None) -> int:
        """Number of mixture components (over all classes) whose overall weight is at least ``min_weight``.

        Args:
            min_weight: threshold on ``class prior * component weight``; default ``1 / n_fit_samples``
                (a component worth at least one of the samples it was fitted on).

        Returns:
            The count of live components.
        """
        self._check_fitted()
        if min_weight is None:
            min_weight = 1.0 / self.n_fit_samples_
        alive = 0
        for c, (weights, _, _) in self.mixtures_.items():
            alive += int(np.sum(self.class_prior_[c] * weights >= min_weight * (1 - 1e-9)))
        return alive

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise ValueError("ClassConditionalGMM is not fitted")

    def __repr__(self) -> str:
        return (
            f"ClassConditionalGMM(n_components={self.n_components}, n_pca={self.n_pca}, "
            f"covariance_type={self.covariance_type!r}, reg_covar={self.reg_covar})"
        )
