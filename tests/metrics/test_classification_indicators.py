"""ClassificationIndicators against direct computations and torchmetrics."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from collapse_guard.metrics.classification import ClassificationIndicators


def compute(logits, target, num_classes, chunks=1, **kwargs):
    m = ClassificationIndicators(num_classes=num_classes, **kwargs)
    for lg, t in zip(logits.chunk(chunks), target.chunk(chunks)):
        m.update(lg, t)
    return {k: float(v) for k, v in m.compute().items()}


def random_case(n=400, c=5, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g) * scale
    logits[torch.arange(n), target] += 1.0  # better than chance, not perfect
    return logits, target


def entropy_of_counts(counts):
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


@pytest.mark.parametrize("chunks", [1, 7])
@pytest.mark.parametrize("scale", [0.3, 2.0, 8.0])
def test_against_direct_computations(chunks, scale):
    logits, target = random_case(scale=scale)
    out = compute(logits, target, 5, chunks=chunks)
    preds = logits.argmax(-1)
    probs = logits.softmax(-1)
    assert out["acc"] == pytest.approx(float((preds == target).double().mean()), abs=1e-12)
    assert out["loss"] == pytest.approx(float(F.cross_entropy(logits.double(), target)), abs=1e-5)
    entropy = float(torch.special.entr(probs.double()).sum(-1).mean())
    assert out["entropy"] == pytest.approx(entropy, abs=1e-5)
    recalls = [float((preds[target == k] == k).double().mean()) for k in range(5)]
    assert out["worst_class_recall"] == pytest.approx(min(recalls), abs=1e-12)
    pred_counts, true_counts = torch.bincount(preds, minlength=5), torch.bincount(target, minlength=5)
    eff_pred, eff_true = math.exp(entropy_of_counts(pred_counts)), math.exp(entropy_of_counts(true_counts))
    assert out["eff_classes"] == pytest.approx(eff_pred, rel=1e-9)
    assert out["eff_classes_ratio"] == pytest.approx(eff_pred / eff_true, rel=1e-9)
    p, q = pred_counts.double() / 400, true_counts.double() / 400
    assert out["label_tv"] == pytest.approx(float(0.5 * (p - q).abs().sum()), abs=1e-12)
    assert out["label_kl"] == pytest.approx(float((q * (q / p).log()).sum()), abs=1e-4)
    expected_ece = multiclass_calibration_error(logits, target, num_classes=5, n_bins=15, norm="l1")
    assert out["calibration_error"] == pytest.approx(float(expected_ece), abs=1e-6)


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_calibration_error_matches_torchmetrics_with_other_bins(n_bins):
    logits, target = random_case(n=300, c=3, scale=1.5, seed=n_bins)
    out = compute(logits, target, 3, n_bins=n_bins)
    expected = multiclass_calibration_error(logits, target, num_classes=3, n_bins=n_bins, norm="l1")
    assert out["calibration_error"] == pytest.approx(float(expected), abs=1e-6)


def test_calibration_error_with_saturated_confidence():
    # an overconfident model: softmax gives exactly 1.0 in float32, right and wrong
    logits = torch.tensor([[math.log(19.0), 0.0], [40.0, 0.0], [0.0, 50.0], [0.3, 0.0], [0.0, 2.0]])
    target = torch.tensor([0, 1, 1, 0, 1])
    assert (logits.softmax(-1).max(-1).values == 1.0).sum() == 2
    out = compute(logits, target, 2)
    expected = multiclass_calibration_error(logits, target, num_classes=2, n_bins=15, norm="l1")
    assert out["calibration_error"] == pytest.approx(float(expected), abs=1e-6)


def test_calibration_error_on_bin_edges():
    # tied logits give a confidence of exactly 1/2, a bin edge for 10 bins: it belongs to the bin [0.5, 0.6)
    a, b = math.log(0.45 / 0.55), math.log(0.55 / 0.45)
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [a, 0.0], [b, 0.0], [b, 0.0]])
    target = torch.tensor([0, 0, 0, 1, 1])
    edges = torch.linspace(0, 1, 11)
    assert (logits.softmax(-1).max(-1).values[:2] == edges[5]).all()
    out = compute(logits, target, 2, n_bins=10)
    expected = multiclass_calibration_error(logits, target, num_classes=2, n_bins=10, norm="l1")
    assert out["calibration_error"] == pytest.approx(float(expected), abs=1e-6)


def test_closed_forms_of_the_effective_number_of_classes():
    c = 4
    target = torch.arange(c).repeat(25)  # uniform real labels: effective number 4
    # perfect predictions: as diverse as the real labels
    perfect = F.one_hot(target, c).float() * 10
    out = compute(perfect, target, c)
    assert out["eff_classes"] == pytest.approx(4.0) and out["eff_classes_ratio"] == pytest.approx(1.0)
    assert out["acc"] == 1.0 and out["worst_class_recall"] == 1.0 and out["label_tv"] == pytest.approx(0.0)
    assert out["label_kl"] == pytest.approx(0.0, abs=1e-9)
    # collapse onto one class: effective number 1, ratio 1/4, worst recall 0
    collapsed = torch.zeros(100, c)
    collapsed[:, 2] = 5.0
    out = compute(collapsed, target, c)
    assert out["eff_classes"] == pytest.approx(1.0) and out["eff_classes_ratio"] == pytest.approx(0.25)
    assert out["worst_class_recall"] == 0.0 and out["acc"] == pytest.approx(0.25)
    assert out["label_tv"] == pytest.approx(0.75)
    assert out["label_kl"] > 5.0  # KL(real || predicted) grows large when classes are never predicted
    # two of four classes, evenly: effective number 2
    half = F.one_hot(target % 2, c).float() * 5
    assert compute(half, target, c)["eff_classes"] == pytest.approx(2.0)
    # uniform predictive distributions: entropy log C
    assert compute(torch.zeros(100, c), target, c)["entropy"] == pytest.approx(math.log(c), abs=1e-6)


def test_absent_classes_do_not_count_in_worst_recall():
    target = torch.tensor([0, 0, 1, 1])
    logits = F.one_hot(torch.tensor([0, 0, 1, 0]), 3).float() * 5
    out = compute(logits, target, 3)  # class 2 has no support
    assert out["worst_class_recall"] == pytest.approx(0.5)


def test_reset_and_input_errors():
    m = ClassificationIndicators(num_classes=3)
    logits, target = random_case(n=50, c=3)
    m.update(logits, target)
    first = {k: float(v) for k, v in m.compute().items()}
    m.reset()
    m.update(logits, target)
    assert {k: float(v) for k, v in m.compute().items()} == first
    with pytest.raises(ValueError, match="logits"):
        m.update(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        m.update(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationIndicators(num_classes=1)


def test_standard_errors_are_agresti_coull_on_the_right_support():
    from collapse_guard.metrics.functional import binomial_standard_error, worst_class_recall_standard_error

    def agresti_coull(k, n):
        p = (k + 2) / (n + 4)
        return math.sqrt(p * (1 - p) / (n + 4))

    # 3 classes: supports 10, 40, 50; class 0 recall 0.5 (worst), class 1 0.75, class 2 0.9
    confmat = torch.tensor([[5, 5, 0], [5, 30, 5], [0, 5, 45]])
    target = torch.cat([torch.full((int(r.sum()),), i) for i, r in enumerate(confmat)])
    preds = torch.cat([torch.repeat_interleave(torch.arange(3), r) for r in confmat])
    logits = F.one_hot(preds, 3).float() * 5
    out = compute(logits, target, 3)
    assert out["acc"] == pytest.approx(80 / 100)
    assert out["acc_stderr"] == pytest.approx(agresti_coull(80, 100), rel=1e-12)
    assert out["worst_class_recall"] == pytest.approx(0.5)
    assert out["worst_class_recall_stderr"] == pytest.approx(agresti_coull(5, 10), rel=1e-12)
    # close to the textbook sqrt(p(1-p)/n) for moderate p; never 0 at p = 1
    assert float(binomial_standard_error(torch.tensor(342), torch.tensor(360))) == pytest.approx(
        math.sqrt(0.95 * 0.05 / 360), rel=0.05)
    assert float(binomial_standard_error(torch.tensor(360), torch.tensor(360))) > 0
    # ties: the class with the smallest support (the noisiest) is taken
    tied = torch.tensor([[5, 5], [20, 20]])
    assert float(worst_class_recall_standard_error(tied)) == pytest.approx(agresti_coull(5, 10))
    assert math.isnan(float(worst_class_recall_standard_error(torch.zeros(2, 2, dtype=torch.long))))
