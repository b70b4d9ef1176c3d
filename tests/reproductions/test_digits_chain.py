"""Deliverable 1: class-conditional GMM on sklearn digits and chains of generations."""
import numpy as np
import pytest

from collapse_guard.loop import ClassConditionalGMM, generation_chain, to_tensor_dataset
from reproductions.digits_chain import chain_table, load_digits_split, mlp_real_accuracy, within_class_variance


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(1000, seed=0)


@pytest.fixture(scope="module")
def replace_chains(digits):
    x, y, _, _ = digits
    return {
        s: generation_chain(ClassConditionalGMM, x, y, 30, 300, regime="replace", seed=s, return_models=True)
        for s in (0, 1, 2)
    }


def test_split_format(digits):
    x, y, xt, yt = digits
    assert x.shape == (1000, 64) and xt.shape == (797, 64)
    assert x.dtype == np.float32 and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))


def test_sample_format(digits):
    x, y, _, _ = digits
    m = ClassConditionalGMM().fit(x, y)
    xs, ys = m.sample(257, rng=np.random.default_rng(3))
    assert xs.shape == (257, 64) and xs.dtype == np.float32
    assert ys.shape == (257,) and ys.dtype == np.int64
    assert xs.min() >= 0.0 and xs.max() <= 16.0
    assert set(np.unique(ys)) <= set(range(10))
    assert m.classes_alive() == 10 and m.modes_alive() == 30
    assert m.sample(0, rng=0)[0].shape == (0, 64)


def test_sample_before_fit_and_bad_args():
    with pytest.raises(ValueError):
        ClassConditionalGMM().sample(3, rng=0)
    with pytest.raises(ValueError):
        ClassConditionalGMM(covariance_type="nope")
    with pytest.raises(ValueError):
        ClassConditionalGMM().fit(np.zeros((3, 4)), np.zeros(2, dtype=int))


def test_dead_class_gets_prior_zero(digits):
    x, y, _, _ = digits
    keep = y != 7
    m = ClassConditionalGMM(n_classes=10).fit(x[keep], y[keep])
    assert m.class_prior_[7] == 0 and m.classes_alive() == 9
    _, ys = m.sample(500, rng=0)
    assert 7 not in ys


def test_single_sample_class(digits):
    x, y, _, _ = digits
    idx = np.concatenate([np.flatnonzero(y != 3), np.flatnonzero(y == 3)[:1]])
    m = ClassConditionalGMM().fit(x[idx], y[idx])
    xs, ys = m.sample(2000, rng=0)
    assert np.isfinite(xs).all() and (ys == 3).sum() >= 0


def test_chain_deterministic_by_seed(digits):
    x, y, _, _ = digits
    for regime in ("replace", "accumulate", "fresh"):
        a = generation_chain(ClassConditionalGMM, x, y, 4, 200, regime=regime, seed=11)
        b = generation_chain(ClassConditionalGMM, x, y, 4, 200, regime=regime, seed=11)
        c = generation_chain(ClassConditionalGMM, x, y, 4, 200, regime=regime, seed=12)
        assert len(a) == 4
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
        assert not np.array_equal(a[-1][0], c[-1][0])


def test_chain_format_and_first_generation_shared(digits):
    x, y, _, _ = digits
    gens = {r: generation_chain(ClassConditionalGMM, x, y, 2, 150, regime=r, seed=5) for r in
            ("replace", "accumulate", "fresh")}
    for r, g in gens.items():
        for xg, yg in g:
            assert xg.shape == (150, 64) and xg.dtype == np.float32 and yg.dtype == np.int64
            assert xg.min() >= 0 and xg.max() <= 16
    # generation 1 is sampled from the model fitted on real data in every regime
    np.testing.assert_array_equal(gens["replace"][0][0], gens["accumulate"][0][0])
    np.testing.assert_array_equal(gens["replace"][0][0], gens["fresh"][0][0])
    ds = to_tensor_dataset(*gens["replace"][0])
    assert len(ds) == 150 and ds[0][1].dtype.is_floating_point is False


def test_unknown_regime(digits):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="unknown regime"):
        generation_chain(ClassConditionalGMM, x, y, 2, 100, regime="recycle")
    with pytest.raises(ValueError):
        generation_chain(ClassConditionalGMM, x, y, 2, 100, regime="fresh", real_fraction=1.0)
    with pytest.raises(ValueError):
        generation_chain(ClassConditionalGMM, x, y, 2, 100, regime="fresh", fresh_real="sometimes")


def test_replace_collapses_accumulate_does_not(digits, replace_chains):
    x, y, _, _ = digits
    real_w = within_class_variance(x, y)
    dead_replace = 0
    w30s = []
    for s, (gens, models) in replace_chains.items():
        w1 = within_class_variance(*gens[0]) / real_w
        w30 = within_class_variance(*gens[-1]) / real_w
        w30s.append(w30)
        # 30 refits amplify last-bit differences of the BLAS/LAPACK kernels (OpenBLAS picks them by CPU), so one
        # seed's generation 30 differs between machines: seed 2 gives 0.423 with OpenBLAS's Haswell/Zen kernels and
        # 0.374 with OPENBLAS_CORETYPE=Prescott (0.384 at generation 20 either way). Over seeds 0-9 (Haswell/Zen):
        # w1 0.746-0.791, w30 0.135, 0.272, 0.423, 0.155, 0.137, 0.330, 0.253, 0.189, 0.135, 0.173. So each seed is
        # bounded loosely (max 0.423) and the collapse is asserted on the mean of seeds 0-2 (0.277; 0.261 with the
        # Prescott kernels).
        assert w1 > 0.65 and w30 < 0.5, (s, w1, w30)
        dead_replace += 10 - len(np.unique(gens[-1][1]))
        assert models[-1].modes_alive() <= models[0].modes_alive()
    assert np.mean(w30s) < 0.35, w30s
    assert dead_replace >= 2  # rare classes die out under replace (8, 8 and 10 alive at gen 30)

    for s in (0, 1):
        acc = generation_chain(ClassConditionalGMM, x, y, 20, 300, regime="accumulate", seed=s)
        w20 = within_class_variance(*acc[-1]) / real_w
        assert w20 > 0.55, (s, w20)
        assert len(np.unique(acc[-1][1])) == 10


def test_real_accuracy_falls_under_replace(digits, replace_chains):
    x, y, xt, yt = digits
    gens, models = replace_chains[1]
    rows = chain_table([gens[0], gens[-1]], x, y, xt, yt, include_real=False)
    assert rows[0]["real_acc"] > 0.85
    assert rows[1]["real_acc"] < 0.75
    assert rows[1]["within_var_ratio"] < rows[0]["within_var_ratio"]


def test_mlp_accuracy_deterministic(digits):
    x, y, xt, yt = digits
    a = mlp_real_accuracy(x[:200], y[:200], xt, yt, epochs=5, seed=1)
    b = mlp_real_accuracy(x[:200], y[:200], xt, yt, epochs=5, seed=1)
    assert a == b and 0.5 < a <= 1.0
