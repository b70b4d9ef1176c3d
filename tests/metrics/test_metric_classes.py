"""torchmetrics Metric classes: batched updates equal the functionals, state reductions, merging, reset."""
from __future__ import annotations

import pytest
import torch

from collapse_guard import metrics as M
from collapse_guard.metrics import functional as F


def _data(seed=0, n=300, d=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), 0.7 * torch.randn(n, d, generator=g) + 0.2


def _feed(metric, real, fake, batch=64):
    for s in range(0, len(real), batch):
        metric.update(real[s : s + batch], real=True)
    for s in range(0, len(fake), batch):
        metric.update(fake[s : s + batch], real=False)
    return metric


def _assert_same(a, b, rel=1e-9):
    if isinstance(b, dict):
        assert list(a) == list(b)
        for key in b:
            _assert_same(a[key], b[key], rel)
        return
    assert isinstance(a, torch.Tensor) and a.ndim == 0
    assert float(a) == pytest.approx(float(b), rel=rel, abs=1e-12)


@pytest.mark.parametrize(
    "make,fn",
    [
        (lambda: M.PrecisionRecallDensityCoverage(k=4), lambda r, f: F.prdc(r, f, k=4)),
        (lambda: M.MaximumMeanDiscrepancy(), lambda r, f: F.maximum_mean_discrepancy(r, f)),
        (lambda: M.TailMassRatio(q=0.05), lambda r, f: F.tail_mass_ratio(r, f, q=0.05)),
        (lambda: M.FrechetDistance(num_features=6), F.frechet_distance),
        (lambda: M.VarianceRatio(num_features=6), F.variance_ratio),
    ],
)
def test_feature_metrics_equal_functional(make, fn):
    real, fake = _data()
    _assert_same(_feed(make(), real, fake).compute(), fn(real, fake), rel=1e-8)


def test_state_reductions():
    prdc_m = M.PrecisionRecallDensityCoverage()
    assert prdc_m._reductions["real_features"] is not None and prdc_m._defaults["real_features"] == []
    for m in (M.FrechetDistance(3), M.VarianceRatio(3), M.VendiScore(3), M.EffectiveRank(3)):
        for name, default in m._defaults.items():
            assert isinstance(default, torch.Tensor), name  # sufficient statistics, summed across ranks


@pytest.mark.parametrize(
    "make,fn",
    [
        (lambda: M.VendiScore(num_features=6), F.vendi_score),
        (lambda: M.VendiScore(num_features=6, q=2.0), lambda x: F.vendi_score(x, q=2.0)),
        (lambda: M.EffectiveRank(num_features=6), F.effective_rank),
        (lambda: M.EffectiveRank(num_features=6, center=True), lambda x: F.effective_rank(x, center=True)),
    ],
)
def test_diversity_metrics_equal_functional(make, fn):
    x, _ = _data(1)
    m = make()
    for s in range(0, len(x), 50):
        m.update(x[s : s + 50])
    _assert_same(m.compute(), fn(x), rel=1e-7)


def test_merge_state_is_distributed_equivalent():
    """Two 'ranks' merged (what DDP sync does with the reductions) equal one metric over all data."""
    real, fake = _data(2)
    for make in (
        lambda: M.PrecisionRecallDensityCoverage(k=3),
        lambda: M.FrechetDistance(6),
        lambda: M.VarianceRatio(6),
        lambda: M.MaximumMeanDiscrepancy(bandwidth=1.5),
    ):
        a, b, whole = make(), make(), make()
        _feed(a, real[:150], fake[:150])
        _feed(b, real[150:], fake[150:])
        _feed(whole, real, fake)
        a.merge_state(b)
        _assert_same(a.compute(), whole.compute(), rel=1e-9)
    for make in (lambda: M.VendiScore(6), lambda: M.EffectiveRank(6)):
        a, b, whole = make(), make(), make()
        a.update(real[:100])
        b.update(real[100:])
        whole.update(real)
        a.merge_state(b)
        _assert_same(a.compute(), whole.compute(), rel=1e-9)


def test_text_metrics_equal_functional_and_merge():
    corpus = [f"w{i % 13} w{i % 7} w{(i * 3) % 11} w{i % 5}" for i in range(40)]
    cases = [
        (M.DistinctN(n=2), lambda c: F.distinct_n(c, n=2)),
        (M.DistinctN(n=3), lambda c: F.distinct_n(c, n=3)),
        (M.TypeTokenRatio(), F.type_token_ratio),
        (M.UnigramEntropy(), F.unigram_entropy),
    ]
    for metric, fn in cases:
        for s in range(0, 40, 7):
            metric.update(corpus[s : s + 7])
        _assert_same(metric.compute(), fn(corpus), rel=1e-12)
    a, b, whole = M.DistinctN(2), M.DistinctN(2), M.DistinctN(2)
    a.update(corpus[:25])
    b.update(corpus[25:])
    whole.update(corpus)
    a.merge_state(b)
    _assert_same(a.compute(), whole.compute(), rel=1e-12)


def test_text_metrics_token_ids_with_padding():
    ids = torch.tensor([[3, 4, 5, 0], [3, 4, 0, 0], [6, 7, 8, 9]])
    m = M.DistinctN(n=2, ignore_index=0)
    m.update(ids[:2])
    m.update(ids[2:])
    _assert_same(m.compute(), F.distinct_n(ids, n=2, ignore_index=0))


def test_vocabulary_coverage_metric():
    m = M.VocabularyCoverage()
    m.update(["a b c", "d"], real=True)
    m.update(["a x"], real=False)
    m.update(["b"], real=False)
    _assert_same(m.compute(), F.vocabulary_coverage(["a b c", "d"], ["a x", "b"]))
    empty = M.VocabularyCoverage()
    empty.update(["a"], real=True)
    assert float(empty.compute()) == 0.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_reset_and_errors():
    real, fake = _data(3)
    m = _feed(M.PrecisionRecallDensityCoverage(k=3), real, fake)
    m.compute()
    m.reset()
    with pytest.raises(ValueError, match="both real and synthetic"):
        m.compute()
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        m.update(torch.randn(3, 2, 2), real=True)
    f = M.FrechetDistance(num_features=6)
    with pytest.raises(ValueError, match="6 features"):
        f.update(torch.randn(4, 5), real=True)
    with pytest.raises(ValueError, match="at least 2"):
        f.compute()
    with pytest.raises(ValueError, match="num_features"):
        M.VendiScore(num_features=0)
    with pytest.raises(ValueError, match="no text"):
        M.DistinctN().compute()
    with pytest.raises(ValueError, match="k"):
        M.PrecisionRecallDensityCoverage(k=0)


def test_forward_and_classification_export():
    m = M.VendiScore(num_features=4)
    batch_value = m(torch.eye(4))  # forward: value on the batch, state accumulated
    assert float(batch_value) == pytest.approx(4.0)
    assert "ClassificationIndicators" in M.__all__ or not hasattr(M, "ClassificationIndicators")
