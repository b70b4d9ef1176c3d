"""Bad input gets a clear error before training starts: what is wrong, which argument, how to fix it.

One test per case. "Before training" is checked by the model having received no batch. Non-finite indicators
during training are handled as ``EarlyStopping(check_finite=True)`` does: stop, with a reason.
"""
from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor, Rule
from collapse_guard.callbacks.rules import NON_FINITE

from cg_testing import SYNTH_BASE, RealDM, TinyMLP, id_dataset, make_mixed, make_trainer

ACC = "collapse/heldout_real/acc"


def empty() -> TensorDataset:
    return TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))


def fit_fails(dm, callbacks=(), exc=ValueError, match=None, max_epochs=2):
    """Fit and expect ``exc`` before the model receives a single training batch."""
    model = TinyMLP()
    with pytest.raises(exc, match=match) as err:
        make_trainer(max_epochs=max_epochs, callbacks=list(callbacks)).fit(model, datamodule=dm)
    assert model.seen == {}, "the error came after training started"
    return str(err.value)


# -- empty sources and held-out sets ------------------------------------------------------------------------------
def test_empty_real_dataset():
    message = fit_fails(MixedDataModule(empty(), id_dataset(20, SYNTH_BASE), holdout=0.2), match="`real` is empty")
    assert "at least one sample" in message


def test_empty_real_datamodule():
    class NoTrain(RealDM):
        def train_dataloader(self):
            return DataLoader(self.train_set, batch_size=self.bs)

    fit_fails(MixedDataModule(NoTrain(n_train=0), id_dataset(20, SYNTH_BASE), holdout="val"), match="`real` is empty")


def test_real_left_empty_by_holdout_and_reserve():
    dm = MixedDataModule(id_dataset(4, 0), {"g": id_dataset(20, SYNTH_BASE)}, holdout=0.5, reserve=0.99)
    fit_fails(dm, match="`holdout` and `reserve` leave no real training samples: lower them")
    # with no reserve either
    dm = MixedDataModule(id_dataset(4, 0), {"g": id_dataset(20, SYNTH_BASE)}, real_fraction=0.0, holdout=0.99)
    fit_fails(dm, match=r"`real` has no training samples left after `holdout` and `reserve` \(4 real samples\): lower them")


def test_empty_synthetic_source():
    dm = make_mixed()
    dm.synthetic = {"g1": id_dataset(20, SYNTH_BASE), "gen_empty": empty()}
    fit_fails(dm, match=r"`synthetic\['gen_empty'\]` is empty")


def test_synthetic_source_emptied_by_its_holdout():
    dm = MixedDataModule(id_dataset(40, 0), {"tiny": id_dataset(1, SYNTH_BASE)}, holdout=0.2, synthetic_holdout=0.9)
    fit_fails(dm, match="synthetic source 'tiny' has no samples left after `synthetic_holdout`")


def test_empty_heldout_dataset():
    fit_fails(make_mixed(holdout=empty()), match="`holdout` is empty")


def test_heldout_fraction_leaving_nothing():
    message = fit_fails(make_mixed(holdout=0.0), match=r"`holdout=0.0` leaves no held-out real samples")
    assert "holdout=0.2" in message


def test_empty_validation_set_as_heldout():
    class NoVal(RealDM):
        def val_dataloader(self):
            return DataLoader(empty(), batch_size=4)

    dm = MixedDataModule(NoVal(), id_dataset(20, SYNTH_BASE), holdout="val")
    fit_fails(dm, match=r'`holdout="val"`: NoVal.val_dataloader\(\) gives no map-style validation set')


def test_heldout_smaller_than_the_number_of_ranks():
    dm = make_mixed(n_real=80, holdout=id_dataset(3, 50_000))
    dm.trainer = SimpleNamespace(world_size=4, global_rank=0, max_epochs=2)  # what a 4-process Trainer would say
    with pytest.raises(ValueError, match="held-out real set has 3 samples, fewer than the 4 ranks"):
        dm.setup("fit")


# -- the real fraction ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, True, "0.5", None])
def test_real_fraction_outside_zero_one(value):
    with pytest.raises(ValueError, match=r"`real_fraction` must be a real number in \[0, 1\]"):
        make_mixed(real_fraction=value)


@pytest.mark.parametrize("bad", [1.5, -0.5, math.nan, "high"])
def test_schedule_returning_a_bad_fraction(bad):
    dm = make_mixed(real_fraction=lambda e: 0.5 if e < 2 else bad)
    fit_fails(dm, match=r"`real_fraction` at epoch 2 must be a real number in \[0, 1\]", max_epochs=3)


def test_schedule_that_raises():
    steps = [0.9, 0.5]
    dm = make_mixed(real_fraction=lambda e: steps[e])
    message = fit_fails(dm, match=r"`real_fraction`: the schedule raised IndexError at epoch 2", max_epochs=4)
    assert "every epoch of the fit" in message


def test_fraction_needing_synthetic_data_without_synthetic_sources():
    dm = MixedDataModule(id_dataset(40, 0), None, real_fraction=0.5, holdout=0.2)
    fit_fails(dm, match=r"`real_fraction` is 0.5 at epoch 0 but no synthetic source was given")


# -- rules on metrics that are never logged -------------------------------------------------------------------------
def test_rule_on_a_ratio_metric_that_is_never_logged_fails_at_setup():
    guard = CollapseGuard(rules=[Rule("collapse/real_fraction_avg", threshold=0.1, action="stop")])
    message = fit_fails(make_mixed(), [RatioMonitor(), guard], match="never logs")
    assert "collapse/real_fraction_cumulative" in message and "collapse/share/g1" in message
    assert "RatioMonitor" in message and "strict=False" in message


def test_rule_on_a_heldout_metric_without_the_check_fails_at_setup():
    guard = CollapseGuard(rules=[Rule(ACC, threshold=0.5, action="stop")])
    fit_fails(make_mixed(), [RatioMonitor(), guard],
              match=r"monitors 'collapse/heldout_real/acc', which HeldOutRealCheck logs, but no HeldOutRealCheck .* "
                    r"add HeldOutRealCheck\(\)")


def test_misnamed_heldout_metric_fails_before_training_listing_the_logged_ones():
    # HeldOutRealCheck declares its keys (metric_keys): the guard rejects the rule at set-up
    guard = CollapseGuard(rules=[Rule("collapse/heldout_real/accuracy", threshold=0.5, action="stop")])
    model = TinyMLP()
    with pytest.raises(ValueError, match="collapse/heldout_real/accuracy") as err:
        make_trainer(max_epochs=3, callbacks=[HeldOutRealCheck(), guard]).fit(model, datamodule=make_mixed())
    assert ACC in str(err.value) and not model.seen and not guard.events


def test_rule_on_a_module_metric_that_is_never_logged():
    guard = CollapseGuard(rules=[Rule("val_los", mode="min", threshold=1.0)], action="stop")
    model = TinyMLP()
    with pytest.raises(RuntimeError, match=r"monitors \['val_los'\].*Logged now: \['train_loss'\]") as err:
        make_trainer(max_epochs=3, callbacks=[guard]).fit(model, datamodule=make_mixed())
    assert list(model.seen) == [0]
    assert "CollapseGuard(module_metrics=[...])" in str(err.value)


def test_rule_on_a_module_metric_not_declared_fails_at_setup_with_a_close_match():
    guard = CollapseGuard(rules=[Rule("val_los", mode="min", threshold=1.0)], action="stop",
                          module_metrics=["val_loss", "train_loss"])
    message = fit_fails(make_mixed(), [guard], match=r"monitors 'val_los'.*module_metrics=\['val_loss', 'train_loss'\]")
    assert "Did you mean 'val_loss'?" in message


def test_rule_on_a_declared_module_metric_trains():
    guard = CollapseGuard(rules=[Rule("train_loss", mode="min", threshold=99.0)], action="stop",
                          module_metrics=["train_loss"])
    model = TinyMLP()
    make_trainer(max_epochs=2, callbacks=[guard]).fit(model, datamodule=make_mixed())
    assert list(model.seen) == [0, 1] and not guard.events


def test_a_declared_module_metric_the_module_never_logs_is_named_at_the_first_check():
    guard = CollapseGuard(rules=[Rule("val_loss", mode="min", threshold=1.0)], action="stop",
                          module_metrics=["val_loss"])
    model = TinyMLP()
    with pytest.raises(RuntimeError, match=r"\['val_loss'\] are declared in `module_metrics` but TinyMLP did not"):
        make_trainer(max_epochs=3, callbacks=[guard]).fit(model, datamodule=make_mixed())
    assert list(model.seen) == [0]


@pytest.mark.parametrize("value", ["val_loss", 3, ["val_loss", ""], [None]])
def test_module_metrics_must_be_a_list_of_keys(value):
    with pytest.raises(TypeError, match="`module_metrics` must"):
        CollapseGuard(rules=[Rule("val_loss", mode="min", threshold=1.0)], module_metrics=value)


# -- inject without somewhere to inject -------------------------------------------------------------------------------
def test_inject_without_a_mixed_datamodule():
    loader = DataLoader(id_dataset(32, 0), batch_size=8)
    model = TinyMLP()
    with pytest.raises(TypeError, match=r"CollapseGuard with action 'inject' needs `trainer.fit\(model, "
                                        r"datamodule=MixedDataModule"):
        make_trainer(callbacks=[CollapseGuard(rules=[Rule("train_loss", mode="min", threshold=9.0)])]).fit(
            model, train_dataloaders=loader)
    assert model.seen == {}


def test_inject_without_a_reserve_refused_when_asked():
    guard = CollapseGuard(rules=[Rule(ACC, threshold=0.5)], action="inject", allow_fraction_only=False)
    message = fit_fails(make_mixed(reserve=0.0), [HeldOutRealCheck(), guard], match="has no reserve to inject")
    assert "reserve=0.2" in message and "allow_fraction_only=True" in message


def test_inject_without_a_reserve_allowed_to_raise_the_fraction_only():
    guard = CollapseGuard(rules=[Rule(ACC, threshold=0.5)], action="inject", allow_fraction_only=True)
    make_trainer(max_epochs=1, callbacks=[HeldOutRealCheck(), guard]).fit(TinyMLP(), datamodule=make_mixed(reserve=0.0))
    stuck = CollapseGuard(rules=[Rule(ACC, threshold=0.5)], allow_fraction_only=True, real_fraction_step=0.0)
    fit_fails(make_mixed(reserve=0.0), [HeldOutRealCheck(), stuck], match="'inject' can do nothing")


def test_the_default_datamodule_and_the_default_guard_work_together():
    # MixedDataModule(reserve=0) and CollapseGuard(action="inject"), both defaults: a warning at set-up, then the fit
    model = TinyMLP()
    with pytest.warns(UserWarning, match=r"keeps no reserve.*will only raise the real fraction"):
        make_trainer(max_epochs=1, callbacks=[HeldOutRealCheck(), CollapseGuard()]).fit(
            model, datamodule=make_mixed(reserve=0.0))
    assert list(model.seen) == [0]


@pytest.mark.parametrize("value", [1, "yes"])
def test_allow_fraction_only_must_be_a_bool_or_none(value):
    with pytest.raises(TypeError, match="`allow_fraction_only` must be True, False or None"):
        CollapseGuard(allow_fraction_only=value)


def test_a_non_finite_inject_rule_needs_a_reserve_too():
    guard = CollapseGuard(rules=[Rule("train_loss", mode="min", threshold=9.0, non_finite="inject")], action="stop",
                          allow_fraction_only=False)
    fit_fails(make_mixed(reserve=0.0), [guard], match="has no reserve to inject")


def test_stop_and_warn_guards_need_no_reserve():
    # no reserve: set-up accepts "stop" and "warn" guards, a quiet one stays "ok", a warning one warns at every check
    quiet = CollapseGuard(rules=[Rule(ACC, threshold=-1.0)], action="stop")
    warning = CollapseGuard(rules=[Rule(ACC, threshold=1.01)], action="warn", cooldown=0)
    dm = make_mixed(reserve=0.0)
    trainer = make_trainer(max_epochs=2, callbacks=[HeldOutRealCheck(), quiet, warning])
    with pytest.warns(UserWarning, match="CollapseGuard epoch 0: warn"):
        trainer.fit(TinyMLP(), datamodule=dm)
    assert trainer.current_epoch == 2 and dm.reserve_size == 0 and dm.injections == []
    assert (quiet.events, quiet.state) == ([], "ok")
    assert [(e.epoch, e.action) for e in warning.events] == [(0, "warn"), (1, "warn")] and warning.state == "warn"
    # a "stop" guard that fires stops, with no reserve to inject first
    stop = CollapseGuard(rules=[Rule(ACC, threshold=1.01)], action="stop")
    trainer = make_trainer(max_epochs=3, callbacks=[HeldOutRealCheck(), stop])
    trainer.fit(TinyMLP(), datamodule=make_mixed(reserve=0.0))
    assert trainer.current_epoch == 1 and [(e.epoch, e.action) for e in stop.events] == [(0, "stop")]
    assert stop.state == "stop" and stop.events[0].reason.endswith("stopping training")


# -- sources whose samples do not mix -----------------------------------------------------------------------------------
class Samples(Dataset):
    def __init__(self, make, n=20):
        self.make, self.n = make, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.make(i)


def test_synthetic_samples_of_another_shape():
    dm = MixedDataModule(id_dataset(40, 0), {"wide": Samples(lambda i: (torch.zeros(7), torch.tensor(0)))},
                         holdout=0.2)
    message = fit_fails(dm, match=r"samples of sources \['real', 'wide'\] cannot be collated into one batch")
    assert "same structure, shapes and dtypes" in message


def test_synthetic_samples_of_another_dtype():
    dm = MixedDataModule(id_dataset(40, 0), {"f64": Samples(lambda i: (torch.zeros(4).double(), torch.tensor(0)))},
                         holdout=0.2)
    fit_fails(dm, match=r"synthetic source 'f64' yields samples unlike the real data's \(sample\[0\]: "
                        r"Tensor\[float64, 1-d\] where the real data has Tensor\[float32, 1-d\]\).*`.float\(\)`")


def test_synthetic_samples_of_another_structure():
    dm = MixedDataModule(id_dataset(40, 0), {"dicts": Samples(lambda i: {"x": torch.zeros(4), "y": torch.tensor(0)})},
                         holdout=0.2)
    fit_fails(dm, match=r"synthetic source 'dicts' yields samples unlike .*dict with keys \['x', 'y'\] where the "
                        r"real data has sequence of 2")


def test_synthetic_labels_as_numpy_where_real_has_tensors():
    dm = MixedDataModule(id_dataset(40, 0), {"np": Samples(lambda i: (torch.zeros(4), np.int64(0)))}, holdout=0.2)
    fit_fails(dm, match=r"sample\[1\]: numpy int64 where the real data has Tensor\[int64, 0-d\]")


def test_reserve_dataset_of_another_dtype():
    reserve = TensorDataset(torch.zeros(10, 4), torch.zeros(10, dtype=torch.int32))
    fit_fails(make_mixed(reserve=reserve), match=r"`reserve` yields samples unlike the real data's \(sample\[1\]: "
                                                  r"Tensor\[int32, 0-d\]")


def test_collate_that_fails_on_synthetic_samples():
    def strict_collate(samples):
        if any(float(s[0][0]) >= SYNTH_BASE for s in samples):
            raise KeyError("no synthetic samples here")
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])

    fit_fails(make_mixed(collate_fn=strict_collate), match=r"cannot be collated into one batch \(KeyError")


# -- other arguments --------------------------------------------------------------------------------------------------
def test_unknown_regime_names():
    from collapse_guard.loop import GaussianModel, SelfConsumingLoop, check_regime, generation_chain

    with pytest.raises(ValueError, match="unknown regime 'replce'; expected one of replace, accumulate, fresh"):
        check_regime("replce")
    with pytest.raises(ValueError, match="unknown regime 'acumulate'"):
        SelfConsumingLoop(GaussianModel(), regime="acumulate")
    with pytest.raises(ValueError, match="unknown regime 'refresh'"):
        generation_chain(GaussianModel, np.zeros((4, 2)), np.zeros(4), 2, 4, regime="refresh")


def test_verify_holdout_of_the_wrong_type():
    with pytest.raises(TypeError, match="`verify_holdout` must be True, False or a callable"):
        make_mixed(verify_holdout="yes")


def test_rule_with_an_unknown_non_finite_action():
    with pytest.raises(ValueError, match=r"`non_finite` must be one of"):
        Rule(ACC, threshold=0.5, non_finite="restart")
    assert NON_FINITE == ("warn", "inject", "stop", "ignore")


def test_heldout_real_set_of_one_class():
    held = id_dataset(12, 50_000, label=1)  # every held-out sample of class 1
    guard = CollapseGuard(rules=[Rule("collapse/heldout_real/worst_class_recall", relative=0.1)], action="stop")
    message = fit_fails(make_mixed(holdout=held), [HeldOutRealCheck(), guard],
                        match=r"held-out real set \(12 samples\) holds 1 class \(\[1\]\)")
    assert "at least 2" in message
    # without rules on held-out real indicators the guard does not ask
    other = CollapseGuard(rules=[Rule("collapse/real_fraction", threshold=0.0)], action="stop")
    make_trainer(max_epochs=1, callbacks=[RatioMonitor(), HeldOutRealCheck(features=False), other]).fit(
        TinyMLP(), datamodule=make_mixed(holdout=held))


# -- non-finite indicators during training -------------------------------------------------------------------------------
class NaNAfter(TinyMLP):
    """Logs ``score``: finite at epochs 0-1, NaN from epoch 2 on."""

    def training_step(self, batch, batch_idx):
        score = math.nan if self.current_epoch >= 2 else 0.5 + 0.1 * self.current_epoch
        self.log("score", score, on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)


def nan_fit(rule: Rule, **guard_kwargs):
    guard = CollapseGuard(rules=[rule], **guard_kwargs)
    dm = make_mixed()
    trainer = make_trainer(max_epochs=5, callbacks=[guard])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(NaNAfter(), datamodule=dm)
    return trainer, guard, dm


def test_non_finite_value_stops_even_an_inject_guard():
    trainer, guard, dm = nan_fit(Rule("score", mode="max", threshold=0.0, patience=3), action="inject")
    assert trainer.current_epoch == 3  # stopped at epoch 2
    assert [(e.epoch, e.action) for e in guard.events] == [(2, "stop")]
    reason = guard.events[0].reason
    assert "score = nan is not finite (best so far 0.6000): the model or the check diverged" in reason
    assert "stopping training" in reason
    assert math.isnan(guard.events[0].value) and not dm.injections
    assert float(trainer.callback_metrics["collapse/guard/state"]) == 3.0


def test_non_finite_value_is_acted_on_during_a_cooldown():
    # fires (warn) at epoch 1, so epoch 2 is in the cooldown: the NaN still stops
    trainer, guard, _ = nan_fit(Rule("score", mode="max", threshold=0.65, action="warn"), cooldown=3)
    assert [(e.epoch, e.action) for e in guard.events] == [(0, "warn"), (2, "stop")]
    assert trainer.current_epoch == 3


def test_non_finite_value_with_a_rule_that_says_inject():
    trainer, guard, dm = nan_fit(Rule("score", mode="max", threshold=0.0, non_finite="inject"), action="stop",
                                 cooldown=0, max_injections=1)
    # epoch 2: inject; epoch 3: still NaN, one injection made: escalates to stop
    assert [(e.epoch, e.action) for e in guard.events] == [(2, "inject"), (3, "stop")]
    assert dm.injections[0]["epoch"] == 2


def test_non_finite_value_ignored_when_the_rule_says_so():
    trainer, guard, _ = nan_fit(Rule("score", mode="max", threshold=0.0, non_finite="ignore"), action="stop")
    assert trainer.current_epoch == 5 and not guard.events
    assert guard.states[0].checks == 2 and guard.states[0].best == pytest.approx(0.6)


def test_non_finite_heldout_loss_stops_with_its_reason():
    class Diverging(TinyMLP):
        def forward(self, x):
            out = super().forward(x)
            return out * math.inf if (not self.training and self.current_epoch >= 1) else out

    guard = CollapseGuard(rules=[Rule("collapse/heldout_real/loss", mode="min", relative=0.5, patience=2)])
    trainer = make_trainer(max_epochs=4, callbacks=[HeldOutRealCheck(features=False, synthetic=False), guard])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Diverging(), datamodule=make_mixed())
    assert [(e.epoch, e.action) for e in guard.events] == [(1, "stop")]
    assert "collapse/heldout_real/loss = nan is not finite" in guard.events[0].reason
