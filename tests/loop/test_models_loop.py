"""Closed-form models and SelfConsumingLoop: interface, regimes, determinism."""
import numpy as np
import pytest

from collapse_guard.loop import (
    CategoricalModel,
    GaussianMixtureModel,
    GaussianModel,
    LinearRegressionModel,
    SelfConsumingLoop,
)


def test_gaussian_mle_ddof0_univariate_and_multivariate():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(4, 50))
    m = GaussianModel().fit(x)
    np.testing.assert_allclose(m.mean, x.mean(1))
    np.testing.assert_allclose(m.std, x.std(1))  # ddof=0
    np.testing.assert_allclose(GaussianModel(ddof=1).fit(x).std, x.std(1, ddof=1))
    xm = rng.normal(size=(3, 40, 5))
    mm = GaussianModel().fit(xm)
    for s in range(3):
        np.testing.assert_allclose(mm.cov[s], np.cov(xm[s].T, ddof=0), atol=1e-12)
    assert mm.sample(7, rng).shape == (3, 7, 5)
    assert m.sample(7, rng).shape == (4, 7)


def test_stats_accumulate_equals_concatenated_fit():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 30, 3)), rng.normal(size=(2, 20, 3))
    g = GaussianModel()
    sa, sb = g.stats(a), g.stats(b)
    g.fit_stats(tuple(x + y for x, y in zip(sa, sb)))
    h = GaussianModel().fit(np.concatenate([a, b], axis=1))
    np.testing.assert_allclose(g.cov, h.cov, atol=1e-12)
    t1, t2 = rng.integers(0, 6, size=(2, 9)), rng.integers(0, 6, size=(2, 4))
    c = CategoricalModel(6)
    c.fit_stats((c.stats(t1)[0] + c.stats(t2)[0],))
    np.testing.assert_allclose(c.probs, CategoricalModel(6).fit(np.concatenate([t1, t2], 1)).probs)


def test_categorical_counts_and_sampling():
    m = CategoricalModel(4).fit(np.array([[0, 0, 1, 3], [2, 2, 2, 2]]))
    np.testing.assert_allclose(m.probs, [[0.5, 0.25, 0, 0.25], [0, 0, 1, 0]])
    t = m.sample(1000, np.random.default_rng(0))
    assert t.shape == (2, 1000) and t.dtype == np.int64
    assert (t[1] == 2).all() and not np.isin(t[0], [2]).any()  # a dead type never comes back
    np.testing.assert_allclose(m.entropy()[1], 0.0)
    with pytest.raises(ValueError):
        CategoricalModel(4).fit(np.array([[0, 4]]))


def test_ols_recovers_coefficients():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 500, 4))
    w = np.array([1.0, -2.0, 0.5, 0.0])
    m = LinearRegressionModel().fit((x, x @ w))
    np.testing.assert_allclose(m.coef, np.broadcast_to(w, (3, 4)), atol=1e-10)
    np.testing.assert_allclose(m.test_error(w), 0.0, atol=1e-18)
    xs, ys = m.sample(10, rng)
    assert xs.shape == (3, 10, 4) and ys.shape == (3, 10)
    with pytest.raises(ValueError):
        LinearRegressionModel().fit((x[:, :2], (x @ w)[:, :2]))  # fewer samples than features


def test_gmm_em_matches_sklearn_on_separated_blobs():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-3, 1, size=(600, 2)), rng.normal(3, 0.5, size=(400, 2))])
    m = GaussianMixtureModel(2, tol=1e-8, max_iter=500).fit(x[None])
    sk = GaussianMixture(2, tol=1e-8, max_iter=500, random_state=0).fit(x)
    order, sk_order = np.argsort(m.means[0, :, 0]), np.argsort(sk.means_[:, 0])
    np.testing.assert_allclose(m.weights[0, order], sk.weights_[sk_order], atol=1e-4)
    np.testing.assert_allclose(m.means[0, order], sk.means_[sk_order], atol=1e-3)
    np.testing.assert_allclose(m.covariances[0, order], sk.covariances_[sk_order], atol=1e-3)
    assert m.sample(50, rng).shape == (1, 50, 2)


@pytest.mark.parametrize("model", [GaussianModel(), CategoricalModel(3), LinearRegressionModel(), GaussianMixtureModel()])
def test_sample_before_fit_raises(model):
    with pytest.raises(ValueError, match="before fit"):
        model.sample(3, 0)


def test_unknown_regime_is_a_clear_value_error():
    with pytest.raises(ValueError, match="unknown regime 'recycle'.*replace, accumulate, fresh"):
        SelfConsumingLoop(GaussianModel(), "recycle")
    with pytest.raises(ValueError):
        SelfConsumingLoop(GaussianModel(), "fresh", real_fraction=1.5)
    with pytest.raises(ValueError):
        SelfConsumingLoop(GaussianModel(), "fresh", fresh_real="maybe")
    with pytest.raises(ValueError):
        SelfConsumingLoop(GaussianModel(), "fresh", n_real=50).run(np.zeros((2, 10)), 3)
    with pytest.raises(ValueError):
        SelfConsumingLoop(GaussianModel()).run(np.zeros((2, 10)), 3, record=[4])


@pytest.mark.parametrize("regime", ["replace", "accumulate", "fresh"])
def test_loop_deterministic_by_seed(regime):
    real = np.random.default_rng(0).normal(size=(5, 40))
    kw = dict(real_fraction=0.2, fresh_real="resample") if regime == "fresh" else {}
    run = lambda s: SelfConsumingLoop(GaussianModel(), regime, metrics={"std": lambda m, x: m.std}, **kw).run(real, 20, seed=s)
    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a.metrics["std"], b.metrics["std"])
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.metrics["std"], c.metrics["std"])
    assert a.metrics["std"].shape == (20, 5)


def test_accumulate_with_and_without_stats_agree():
    class NoStats:  # the same Gaussian, without sufficient statistics: the loop concatenates
        def __init__(self):
            self.g = GaussianModel()

        def fit(self, data):
            self.g.fit(data)
            return self

        def sample(self, n, rng):
            return self.g.sample(n, rng)

    real = np.random.default_rng(0).normal(size=(3, 25))
    a = SelfConsumingLoop(GaussianModel(), "accumulate", metrics={"s": lambda m, x: m.std}).run(real, 6, seed=4)
    b = SelfConsumingLoop(NoStats(), "accumulate", metrics={"s": lambda m, x: m.g.std}).run(real, 6, seed=4)
    np.testing.assert_allclose(a.metrics["s"], b.metrics["s"], rtol=1e-10)


def test_fresh_fixed_share_trains_on_real_subset():
    seen = []

    class Spy(GaussianModel):
        def fit(self, data):
            seen.append(np.array(data))
            return super().fit(data)

    real = np.arange(20, dtype=float).reshape(1, 20) + 1000.0
    SelfConsumingLoop(Spy(), "fresh", samples_per_generation=10, n_real=4, fresh_real="fixed").run(real, 4, seed=0)
    assert seen[0].shape == (1, 20)  # generation 1 fits all real data
    shares = [s[0, :4] for s in seen[1:]]
    assert all(s.shape == (10 + 4,) for s in (x[0] for x in seen[1:]))
    assert all(np.isin(s, real).all() for s in shares) and all(np.array_equal(shares[0], s) for s in shares)


def test_tuple_data_through_fresh_and_replace():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 80, 3))
    y = x @ np.ones(3)
    for regime in ("replace", "fresh"):
        res = SelfConsumingLoop(LinearRegressionModel(), regime, real_fraction=0.25,
                                metrics={"e": lambda m, d: m.test_error(np.ones(3))}).run((x, y), 5, seed=0)
        assert res.metrics["e"].shape == (5, 4)
        assert isinstance(res.data, tuple) and res.data[0].shape == (4, 80, 3)


def test_replace_collapses_accumulate_does_not():
    real = np.random.default_rng(0).normal(size=(200, 20))
    std = {"std": lambda m, x: m.std}
    rep = SelfConsumingLoop(GaussianModel(), "replace", metrics=std).run(real, 100, seed=0, record=[100])
    acc = SelfConsumingLoop(GaussianModel(), "accumulate", metrics=std).run(real, 100, seed=0, record=[100])
    assert rep.median("std", 100) < 0.1 < 0.8 < acc.median("std", 100)
