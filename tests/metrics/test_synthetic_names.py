"""The set compared with held-out real data is called ``synthetic``; the old ``fake`` names still work, with a
``DeprecationWarning`` that points at the caller. ``total_variance(unbiased=)`` chooses ``ddof`` 1 or 0."""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

import collapse_guard.metrics as M
import collapse_guard.metrics.functional as F

TWO_SET_FUNCTIONS = {
    "prdc": dict(k=3),
    "knn_precision": dict(k=3),
    "knn_recall": dict(k=3),
    "density": dict(k=3),
    "coverage": dict(k=3),
    "frechet_distance": {},
    "median_heuristic_bandwidth": {},
    "maximum_mean_discrepancy": {},
    "variance_ratio": {},
    "tail_mass": dict(q=0.1),
    "tail_mass_ratio": dict(q=0.1),
}


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(80, 4, generator=g), 0.7 * torch.randn(60, 4, generator=g)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(TWO_SET_FUNCTIONS))
def test_two_set_functions_take_synthetic(name):
    fn = getattr(F, name)
    params = list(inspect.signature(fn).parameters)
    assert params[:2] == ["real", "synthetic"]
    real, synthetic = _pair()
    kwargs = TWO_SET_FUNCTIONS[name]
    by_position = fn(real, synthetic, **kwargs)
    by_keyword = fn(real=real, synthetic=synthetic, **kwargs)
    assert _same(by_position, by_keyword)


@pytest.mark.parametrize("name", sorted(TWO_SET_FUNCTIONS))
def test_fake_keyword_is_a_deprecated_alias(name):
    fn = getattr(F, name)
    real, synthetic = _pair()
    kwargs = TWO_SET_FUNCTIONS[name]
    with pytest.warns(DeprecationWarning, match="`fake` is deprecated.*use `synthetic`") as record:
        old = fn(real, fake=synthetic, **kwargs)
    assert record[0].filename == __file__  # stacklevel=2: the warning names the caller's line
    assert _same(old, fn(real, synthetic, **kwargs))
    with pytest.raises(TypeError, match="both `fake` and `synthetic`"):
        fn(real, fake=synthetic, synthetic=synthetic, **kwargs)


def test_synthetic_name_warns_nothing():
    real, synthetic = _pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.prdc(real, synthetic=synthetic, k=3)
        F.vocabulary_coverage(["a b c"], synthetic_tokens=["a b"])


def test_vocabulary_coverage_fake_tokens_is_a_deprecated_alias():
    assert list(inspect.signature(F.vocabulary_coverage).parameters)[:2] == ["real_tokens", "synthetic_tokens"]
    with pytest.warns(DeprecationWarning, match="`fake_tokens` is deprecated.*use `synthetic_tokens`"):
        old = F.vocabulary_coverage(["a b c d"], fake_tokens=["a a b"])
    assert float(old) == float(F.vocabulary_coverage(["a b c d"], synthetic_tokens=["a a b"])) == 0.5


@pytest.mark.parametrize(
    "make, old, new",
    [
        (lambda: M.PrecisionRecallDensityCoverage(k=3), "fake_features", "synthetic_features"),
        (lambda: M.MaximumMeanDiscrepancy(), "fake_features", "synthetic_features"),
        (lambda: M.FrechetDistance(4), "fake_n", "synthetic_n"),
        (lambda: M.VarianceRatio(4), "fake_sum", "synthetic_sum"),
        (lambda: M.VarianceRatio(4), "fake_second", "synthetic_second"),
    ],
)
def test_feature_metric_states_keep_their_old_names_as_deprecated_attributes(make, old, new):
    metric = make()
    real, synthetic = _pair()
    metric.update(real, real=True)
    metric.update(synthetic, real=False)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated"):
        value = getattr(metric, old)
    assert value is getattr(metric, new)


def test_vocabulary_coverage_metric_keeps_fake_types_as_a_deprecated_attribute():
    m = M.VocabularyCoverage()
    m.update(["a b c d"], real=True)
    m.update(["a a b"], real=False)
    with pytest.warns(DeprecationWarning, match="fake_types is deprecated"):
        assert m.fake_types is m.synthetic_types
    assert float(m.compute()) == 0.5


@pytest.mark.parametrize("shape", [(50, 3), (7, 1), (50,)])
@pytest.mark.parametrize("unbiased, ddof", [(True, 1), (False, 0)])
def test_total_variance_matches_numpy(shape, unbiased, ddof):
    x = np.random.default_rng(0).standard_normal(shape) * np.linspace(0.5, 2.0, shape[-1] if len(shape) > 1 else 1)
    expected = np.var(x.reshape(shape[0], -1), axis=0, ddof=ddof).sum()
    got = F.total_variance(torch.from_numpy(x), unbiased=unbiased)
    assert got.dtype == torch.float64 and got.shape == ()
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_total_variance_default_is_unbiased_and_sample_counts_are_checked():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert float(F.total_variance(x)) == 4.0 and float(F.total_variance(x, unbiased=False)) == 2.0
    assert float(F.total_variance(x[:1], unbiased=False)) == 0.0
    with pytest.raises(ValueError, match="at least 2 samples"):
        F.total_variance(x[:1])


def test_unigram_metrics_keep_their_signatures_and_bases():
    for cls in (M.TypeTokenRatio, M.UnigramEntropy):
        assert list(inspect.signature(cls).parameters) == ["ignore_index", "tokenizer", "kwargs"]
    assert issubclass(M.TypeTokenRatio, M.DistinctN)
    ttr, ent = M.TypeTokenRatio(ignore_index=0), M.UnigramEntropy(ignore_index=0)
    assert ttr.n == ent.n == 1 and ttr.ignore_index == ent.ignore_index == 0
    tokens = torch.tensor([[1, 2, 2, 3, 0]])
    ttr.update(tokens)
    ent.update(tokens)
    assert float(ttr.compute()) == float(F.type_token_ratio(tokens, ignore_index=0)) == 0.75
    assert float(ent.compute()) == pytest.approx(float(F.unigram_entropy(tokens, ignore_index=0)))


@pytest.mark.parametrize("cls", [M.VendiScore, M.EffectiveRank, M.FrechetDistance, M.VarianceRatio])
@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_sum_state_metrics_check_num_features(cls, bad):
    with pytest.raises(ValueError, match="`num_features` must be a positive integer"):
        cls(bad)
