"""The held-out indicators of language models, regressors and any per-sample loss: against direct computations
(``F.cross_entropy``, ``F.mse_loss``, torchmetrics), shift and ignore-index handling, and batch-split invariance
(the states add up, as across DDP ranks)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.regression import R2Score

from collapse_guard.metrics import ClassificationIndicators, LanguageModelIndicators, LossIndicators, RegressionIndicators
from collapse_guard.metrics.functional import mean_standard_error, ratio_standard_error
from collapse_guard.metrics.functional.language_model import labels_are_inputs


def lm_batch(n=6, t=9, v=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, t, v, generator=g) * 2
    labels = torch.randint(0, v, (n, t), generator=g)
    labels[0, 5:] = -100  # a padded sequence
    labels[3, :2] = -100
    return logits, labels


def test_language_model_indicators_match_cross_entropy_and_accuracy():
    logits, labels = lm_batch()
    m = LanguageModelIndicators()
    m.update(logits, labels)
    out = m.compute()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    scored = labels != -100
    acc = (logits.argmax(-1) == labels)[scored].float().mean()
    logp = logits.log_softmax(-1)
    entropy = (-(logp.exp() * logp).sum(-1))[scored].mean()
    assert float(out["loss"]) == pytest.approx(float(ce), rel=1e-6)
    assert float(out["perplexity"]) == pytest.approx(math.exp(float(ce)), rel=1e-6)
    assert float(out["token_acc"]) == pytest.approx(float(acc))
    assert float(out["entropy"]) == pytest.approx(float(entropy), rel=1e-6)


def test_language_model_standard_error_is_by_sequence():
    """Sequences of equal length: the ratio estimator is the standard error of the per-sequence mean losses."""
    logits, labels = lm_batch()
    labels = labels.clamp_min(0)
    m = LanguageModelIndicators()
    m.update(logits, labels)
    per_seq = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1).double()
    assert float(m.compute()["loss_stderr"]) == pytest.approx(float(per_seq.std() / math.sqrt(len(per_seq))), rel=1e-6)


def test_split_batches_give_the_values_of_one_batch():
    logits, labels = lm_batch(n=8)
    whole, parts = LanguageModelIndicators(), LanguageModelIndicators()
    whole.update(logits, labels)
    parts.update(logits[:3], labels[:3])
    parts.update(logits[3:], labels[3:])
    for key, value in whole.compute().items():
        assert float(parts.compute()[key]) == pytest.approx(float(value), rel=1e-9), key


def test_shifted_labels_score_the_next_token():
    logits, labels = lm_batch()
    ids = labels.clamp_min(0)
    shifted = LanguageModelIndicators(shift=True)
    shifted.update(logits, ids)
    aligned = LanguageModelIndicators()
    aligned.update(logits[:, :-1], ids[:, 1:])
    assert float(shifted.compute()["loss"]) == pytest.approx(float(aligned.compute()["loss"]))
    assert labels_are_inputs(ids, ids) and not labels_are_inputs(ids, ids.roll(1, dims=1))


@pytest.mark.parametrize("logits, labels", [(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long)),
                                            (torch.zeros(2, 3, 4), torch.full((2, 3), 4))])
def test_language_model_indicators_refuse_bad_shapes_and_labels(logits, labels):
    with pytest.raises(ValueError, match="language-model"):
        LanguageModelIndicators().update(logits, labels)


def test_regression_indicators_match_direct_computations():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(200, generator=g) * 3 + 1
    pred = 0.5 * y + 0.3 * torch.randn(200, generator=g)
    m = RegressionIndicators()
    m.update(pred[:70], y[:70])
    m.update(pred[70:].unsqueeze(1), y[70:])  # (N, 1) is one output, as (N,)
    out = m.compute()
    assert float(out["mse"]) == pytest.approx(float(F.mse_loss(pred, y)), rel=1e-6) and out["loss"] == out["mse"]
    assert float(out["mae"]) == pytest.approx(float((pred - y).abs().mean()), rel=1e-6)
    assert float(out["r2"]) == pytest.approx(float(R2Score()(pred, y)), rel=1e-5)
    assert float(out["pred_var_ratio"]) == pytest.approx(float(pred.var() / y.var()), rel=1e-6)
    se = (pred - y).double().pow(2).std() / math.sqrt(200)
    assert float(out["loss_stderr"]) == pytest.approx(float(se), rel=1e-6)
    beyond = ((y - pred).abs() > 2 * y.std(unbiased=False)).double().mean()
    assert float(out["residual_tail_mass"]) == pytest.approx(float(beyond))


def test_regression_to_the_mean_shows_in_the_variance_ratio_and_the_tails():
    y = torch.randn(4000, generator=torch.Generator().manual_seed(3))
    good, shrunk = RegressionIndicators(), RegressionIndicators()
    good.update(y * 0.95, y)
    shrunk.update(y * 0.1, y)  # residuals 0.9 |y|: beyond 2 sd for |y| > 2.2 sd, about 2.8% of Gaussian targets
    g, s = good.compute(), shrunk.compute()
    assert float(g["pred_var_ratio"]) > 0.85 > 0.1 > float(s["pred_var_ratio"])
    assert float(s["residual_tail_mass"]) > float(g["residual_tail_mass"]) == 0.0


def test_regression_indicators_refuse_mismatched_outputs():
    with pytest.raises(ValueError, match="regression predictions must match"):
        RegressionIndicators().update(torch.zeros(5, 2), torch.zeros(5))


def test_loss_indicators_mean_and_standard_error():
    x = torch.tensor([0.5, 1.5, 2.0, 4.0])
    m = LossIndicators()
    m.update(x[:1])
    m.update(x[1:].unsqueeze(1))
    out = m.compute()
    assert float(out["loss"]) == pytest.approx(2.0)
    assert float(out["loss_stderr"]) == pytest.approx(float(x.std() / 2))
    assert float(mean_standard_error(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1))) == 0.0
    with pytest.raises(ValueError, match=r"per-sample losses must have shape \(N,\)"):
        m.update(torch.zeros(3, 2))


def test_classifier_loss_has_its_standard_error():
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(50, 4, generator=g), torch.randint(0, 4, (50,), generator=g)
    m = ClassificationIndicators(num_classes=4)
    m.update(logits, target)
    per_sample = F.cross_entropy(logits, target, reduction="none").double()
    assert float(m.compute()["loss_stderr"]) == pytest.approx(float(per_sample.std() / math.sqrt(50)), rel=1e-6)


def test_ratio_standard_error_of_one_sequence_is_zero():
    one = torch.tensor(1.0)
    assert float(ratio_standard_error(one, one, one, one, one, torch.tensor(1))) == 0.0


@pytest.mark.parametrize("make, data", [
    (LanguageModelIndicators, lambda: lm_batch(n=10)),
    (RegressionIndicators, lambda: (torch.randn(40, 3) * 0.5, torch.randn(40, 3))),
    (LossIndicators, lambda: (torch.rand(40),)),
], ids=["language_model", "regression", "loss"])
def test_two_ranks_merged_give_the_values_of_the_whole_set(make, data):
    """What DDP's sync does with the states (``sum`` and ``cat``), by torchmetrics' own ``merge_state``."""
    args = data()
    half = args[0].shape[0] // 2
    whole, rank0, rank1 = make(), make(), make()
    whole.update(*args)
    rank0.update(*(a[:half] for a in args))
    rank1.update(*(a[half:] for a in args))
    rank0.merge_state(rank1)
    for key, value in whole.compute().items():
        assert float(rank0.compute()[key]) == pytest.approx(float(value), rel=1e-9, abs=1e-12), key
