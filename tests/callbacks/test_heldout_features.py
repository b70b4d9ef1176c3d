"""HeldOutRealCheck's feature-space and generative indicators, and how a failing check is handled."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from collapse_guard import CollapseGuard, HeldOutRealCheck, RatioMonitor, Rule
from collapse_guard.callbacks.features import FeatureIndicators, last_linear, penultimate_features
from collapse_guard.metrics.functional import prdc

from cg_testing import DIM, TinyMLP, make_mixed, make_trainer

FEATURE_KEYS = {
    "precision", "recall", "density", "coverage", "frechet", "mmd", "variance_ratio", "tail_mass_ratio",
    "vendi", "vendi_real", "effective_rank_real",
}


def fit_with(check, max_epochs=2, dm=None, extra=()):
    dm = dm or make_mixed(n_real=120, synth_sizes={"g1": 80})
    trainer = make_trainer(max_epochs=max_epochs, callbacks=[check, *extra])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(TinyMLP(), datamodule=dm)
    return trainer, dm


def test_penultimate_hook_captures_the_inputs_of_the_last_linear():
    model = nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 3))
    assert last_linear(model) is model[2]
    x = torch.randn(5, 4)
    with penultimate_features(model) as captured:
        model(x)
    assert len(captured) == 1 and torch.allclose(captured[0], model[1](model[0](x)))
    model(x)  # the hook is removed on exit
    assert len(captured) == 1


def test_feature_indicators_match_the_functional_prdc():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 5, generator=g), torch.randn(50, 5, generator=g) * 0.5
    ind = FeatureIndicators(5, k=3)
    ind.update(real[:30], real=True)
    ind.update(real[30:], real=True)
    ind.update(fake, real=False)
    out = ind.compute()
    ref = prdc(real, fake, k=3)
    for key in ("precision", "recall", "density", "coverage"):
        assert float(out[key]) == pytest.approx(float(ref[key]), rel=1e-6)
    direct = float(fake.var(0).sum() / real.var(0).sum())  # 0.38 for this draw of a std-0.5 set
    assert float(out["variance_ratio"]) == pytest.approx(direct, rel=1e-6) and direct < 0.5
    assert set(out) == FEATURE_KEYS


def test_feature_keys_are_logged_between_training_synthetic_and_heldout_real():
    check = HeldOutRealCheck(features=True, feature_samples=40, k=3)
    trainer, dm = fit_with(check)
    logged = {k.split("/", 2)[2] for k in trainer.callback_metrics if k.startswith("collapse/features/")}
    assert logged == FEATURE_KEYS
    # the synthetic sources here are a single class: far less diverse than the real data in feature space
    m = trainer.callback_metrics
    assert float(m["collapse/features/vendi"]) < float(m["collapse/features/vendi_real"])
    assert 0.0 <= float(m["collapse/features/coverage"]) <= 1.0


def test_custom_feature_fn_is_used():
    calls = []

    def feature_fn(pl_module, inputs):
        calls.append(inputs.shape[0])
        return inputs[:, 1:]

    check = HeldOutRealCheck(features=True, feature_fn=feature_fn, feature_samples=40, k=3)
    fit_with(check, max_epochs=1)
    assert calls and sum(calls) >= 40


def test_generative_mode_compares_samples_with_heldout_real_inputs():
    def collapsed_sampler(pl_module, n):  # a "generator" whose samples all sit at one point
        return torch.ones(n, DIM)

    check = HeldOutRealCheck(sample_fn=collapsed_sampler, features=False, feature_samples=40, k=3)
    trainer, _ = fit_with(check, max_epochs=1)
    m = trainer.callback_metrics
    assert float(m["collapse/generated/recall"]) == 0.0  # nothing generated covers the real data
    assert float(m["collapse/generated/variance_ratio"]) == pytest.approx(0.0, abs=1e-9)
    assert float(m["collapse/generated/vendi"]) == pytest.approx(1.0, abs=1e-6)
    assert not any(k.startswith("collapse/features/") for k in m)


def test_too_small_heldout_set_for_knn_is_an_error_at_setup():
    dm = make_mixed(n_real=40, holdout=0.1)  # 4 held-out samples
    with pytest.raises(ValueError, match="k=5"):
        fit_with(HeldOutRealCheck(features=True), dm=dm)


def test_failed_check_raises_by_default_and_is_skipped_with_warn():
    def broken_forward(pl_module, inputs):
        raise ArithmeticError("boom")

    with pytest.raises(ArithmeticError, match="boom"):
        fit_with(HeldOutRealCheck(forward_fn=broken_forward), max_epochs=1)

    check = HeldOutRealCheck(forward_fn=broken_forward, on_error="warn")
    guard = CollapseGuard(rules=[Rule("collapse/heldout_real/acc", threshold=1.01, action="stop")])
    trainer = make_trainer(max_epochs=2, callbacks=[RatioMonitor(), check, guard])
    with pytest.warns(UserWarning, match="failed .*ArithmeticError: boom"):
        trainer.fit(TinyMLP(), datamodule=make_mixed())
    assert trainer.current_epoch == 2  # training went on; the guard had nothing fresh to judge
    assert guard.events == [] and check.last == {}


@pytest.mark.parametrize("kwargs", [dict(k=0), dict(feature_samples=5, k=5), dict(on_error="ignore")])
def test_constructor_errors(kwargs):
    with pytest.raises(ValueError):
        HeldOutRealCheck(**kwargs)


def test_declared_keys_are_the_logged_keys():
    from collapse_guard.metrics import ClassificationIndicators

    assert set(FeatureIndicators.KEYS) == FEATURE_KEYS
    m = ClassificationIndicators(num_classes=3)
    m.update(torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]))
    per_class = {f"{k}/{c}" for k in ClassificationIndicators.CLASS_KEYS for c in range(3)}
    assert set(m.compute()) == set(ClassificationIndicators.KEYS) | per_class
    check = HeldOutRealCheck(features=True, feature_samples=40, k=3)
    trainer, _ = fit_with(check, max_epochs=1)
    logged = {k for k in trainer.callback_metrics if k.startswith(check.produces)}
    declared = check.metric_keys(trainer)
    families = {k[:-1] for k in declared if k.endswith("/*")}
    assert {k for k in logged if not k.startswith(tuple(families))} == {k for k in declared if "*" not in k}
    assert {k.rsplit("/", 1)[0] + "/" for k in logged if k.startswith(tuple(families))} == families


def test_misnamed_heldout_rule_is_rejected_before_training():
    guard = CollapseGuard(rules=[Rule("collapse/features/recal", threshold=0.5, action="stop")])
    with pytest.raises(ValueError, match="recal"):
        fit_with(HeldOutRealCheck(features=True, feature_samples=40, k=3), extra=[guard])
