"""Every setting is checked for its type and for being finite when the object is built (or, where only then
knowable, at set-up), with a message naming the argument; and a non-finite held-out loss stops the default guard
at the first check (issue 16).
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from pytorch_lightning.trainer import call
from torch.utils.data import DataLoader, IterableDataset

from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, Rule
from collapse_guard.callbacks.rules import RuleState, default_rules, heldout_loss_rule
from collapse_guard.loop.guard import GenerationGuard

from cg_testing import SYNTH_BASE, RealDM, TinyMLP, id_dataset, make_mixed, make_trainer

ACC = "collapse/heldout_real/acc"
NAN = float("nan")


# -- Rule ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(threshold=NAN), "threshold"),
        (dict(threshold=0.5, margin=NAN), "margin"),
        (dict(threshold=0.5, margin=math.inf), "margin"),
        (dict(relative=NAN), "relative"),
        (dict(sigmas=True), "sigmas"),
        (dict(relative=0.1, min_change=NAN), "min_change"),
        (dict(threshold=0.5, patience=1.5), "patience"),
        (dict(threshold=0.5, patience=True), "patience"),
        (dict(relative=0.1, baseline_checks=1.5), "baseline_checks"),
        (dict(threshold=True), "threshold"),
        (dict(threshold="0.5"), "threshold"),
        (dict(relative="0.1"), "relative"),
    ],
)
def test_rule_refuses_numbers_of_the_wrong_kind(kwargs, argument):
    with pytest.raises(ValueError, match=rf"Rule\('{ACC}'\): `{argument}` must be"):
        Rule(ACC, **kwargs)


def test_rule_refuses_a_nan_min_delta_by_its_name():
    with pytest.raises(ValueError, match="`min_delta` must be a finite real number"):
        Rule(ACC, threshold=0.5, min_delta=NAN)


@pytest.mark.parametrize("kwargs", [dict(monitor=""), dict(monitor=3), dict(monitor=ACC, name=""),
                                    dict(monitor=ACC, sigmas=2.0, stderr=5)])
def test_rule_refuses_strings_of_the_wrong_kind(kwargs):
    with pytest.raises(TypeError, match="`monitor`|`name`|`stderr`"):
        Rule(threshold=0.5, **kwargs)


def test_rule_keeps_numbers_as_given():
    # the guard's state_key is made of the rules' repr: an int threshold stays an int (no checkpoint key moves)
    assert "threshold=1," in repr(Rule(ACC, threshold=1))
    assert Rule(ACC, threshold=-math.inf).threshold == -math.inf  # an infinite bound is a bound


# -- the guards' settings ------------------------------------------------------------------------------------------
GUARD_CASES = [
    (dict(max_injections=NAN), "max_injections"),
    (dict(max_injections=1.5), "max_injections"),
    (dict(cooldown=1.5), "cooldown"),
    (dict(cooldown=True), "cooldown"),
    (dict(inject_fraction=NAN), "inject_fraction"),
    (dict(inject_fraction="0.5"), "inject_fraction"),
    (dict(real_fraction_step=NAN), "real_fraction_step"),
    (dict(real_fraction_step="0.5"), "real_fraction_step"),
]


@pytest.mark.parametrize("kwargs, argument", GUARD_CASES)
def test_collapse_guard_refuses_numbers_of_the_wrong_kind(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` must be"):
        CollapseGuard(**kwargs)


@pytest.mark.parametrize("kwargs, argument", GUARD_CASES + [(dict(max_real_fraction=NAN), "max_real_fraction"),
                                                           (dict(max_real_fraction="1"), "max_real_fraction")])
def test_generation_guard_refuses_numbers_of_the_wrong_kind(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}` must be"):
        GenerationGuard([Rule("acc", threshold=0.5)], **kwargs)


@pytest.mark.parametrize("guard", [CollapseGuard, GenerationGuard])
def test_a_metric_key_for_a_rule_says_to_wrap_it(guard):
    with pytest.raises(TypeError, match=r"`rules\[0\]` is the str 'collapse/heldout_real/acc', not a Rule: wrap it "
                                        r"in `Rule\('collapse/heldout_real/acc'"):
        guard(rules=[ACC])
    with pytest.raises(TypeError, match="`rules` must be a list of Rule objects"):
        guard(rules=ACC)
    with pytest.raises(TypeError, match=r"`rules\[1\]` must be a Rule, got int"):
        guard(rules=[Rule(ACC, threshold=0.5), 3])


@pytest.mark.parametrize("guard", [CollapseGuard, GenerationGuard])
def test_one_rule_alone_is_taken_as_a_list_of_one(guard):
    rule = Rule(ACC, threshold=0.5)
    assert guard(rules=rule).rules == [rule]


def test_guard_arguments_refused_before_the_first_step():
    # built before the Trainer: nothing trains
    model = TinyMLP()
    with pytest.raises(ValueError, match="`cooldown`"):
        make_trainer(max_epochs=1, callbacks=[HeldOutRealCheck(), CollapseGuard(cooldown=1.5)]).fit(
            model, datamodule=make_mixed())
    assert model.seen == {}


# -- MixedDataModule -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(seed="abc"), ValueError, "`seed` must be an integer"),
        (dict(seed=1.5), ValueError, "`seed` must be an integer"),
        (dict(batch_size=True), ValueError, "`batch_size` must be a positive integer"),
        (dict(batch_size=8.0), ValueError, "`batch_size` must be a positive integer"),
        (dict(samples_per_epoch="64"), ValueError, "`samples_per_epoch` must be a positive integer"),
        (dict(num_workers=-1), ValueError, "`num_workers` must be an integer >= 0"),
        (dict(synthetic_weights={"g1": NAN}), ValueError, r"`synthetic_weights\['g1'\]` must be a finite real"),
        (dict(synthetic_weights={"g1": -1.0}), ValueError, r"`synthetic_weights\['g1'\]` must be >= 0"),
        (dict(synthetic_weights={"g1": "1"}), ValueError, r"`synthetic_weights\['g1'\]` must be a finite real"),
        (dict(synthetic_weights={"g1": 0.0}), ValueError, "`synthetic_weights` are all zero"),
        (dict(synthetic_weights={"g2": 1.0}), ValueError, r"`synthetic_weights` names unknown sources \['g2'\]"),
        (dict(synthetic_weights=[1.0]), TypeError, "`synthetic_weights` must be a mapping"),
    ],
)
def test_datamodule_refuses_settings_when_built(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_mixed(**kwargs)


@pytest.mark.parametrize(
    "name, exc",
    [("", ValueError), (3, TypeError), ("a/b", ValueError), ("gen 1", ValueError), ("gen\t1", ValueError)],
)
def test_source_names_fit_for_metric_keys(name, exc):
    with pytest.raises(exc, match=r"a source name must be a non-empty str without '/' or whitespace \(it ends metric "
                                  r"keys such as collapse/share/<name>\)"):
        MixedDataModule(id_dataset(40, 0), {name: id_dataset(20, SYNTH_BASE)}, holdout=0.2)


def test_valid_names_and_weights_still_pass():
    dm = make_mixed(synth_sizes={"g1": 30, "gen-2.v1": 30}, synthetic_weights={"g1": 1, "gen-2.v1": 0.0}, seed=3)
    dm.setup("fit")
    assert dm.source_names == ["real", "reserve", "g1", "gen-2.v1"]


class Stream(IterableDataset):
    def __iter__(self):
        return iter(id_dataset(40, 0))


class StreamingRealDM(RealDM):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(Stream(), batch_size=self.bs)


def test_a_real_datamodule_over_an_iterable_dataset_is_refused_at_setup():
    model = TinyMLP()
    dm = MixedDataModule(StreamingRealDM(), {"g": id_dataset(20, SYNTH_BASE)})
    with pytest.raises(TypeError, match=r"`real`: StreamingRealDM.train_dataloader\(\) iterates over a Stream, an "
                                        r"IterableDataset \(no len\(\)\).*map-style.*synthetic source.*"
                                        r"`samples_per_epoch`"):
        make_trainer(max_epochs=1).fit(model, datamodule=dm)
    assert model.seen == {}


# -- a non-finite held-out loss ------------------------------------------------------------------------------------
class NanMLP(TinyMLP):
    """Outputs NaN from the start: the loss is NaN, accuracy and recall stay finite (argmax takes the NaNs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * NAN


def test_the_default_guard_stops_at_the_first_check_on_a_nan_heldout_loss():
    guard = CollapseGuard(verbose=False)
    model = NanMLP()
    trainer = make_trainer(max_epochs=2, callbacks=[HeldOutRealCheck(), guard])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=make_mixed())
    assert guard.state == "stop" and trainer.current_epoch == 1  # one epoch: the first check stopped it
    assert "heldout_real_loss" in [e.rule for e in guard.events]
    assert list(model.seen) == [0]


@pytest.mark.parametrize("value", [0.0, 1e300, 2.3, -5.0])
def test_the_loss_rule_never_fires_on_a_finite_loss(value):
    state = RuleState(heldout_loss_rule())
    assert not any(state.judge(value).fired for _ in range(5))
    assert state.judge(math.inf).fired and state.judge(NAN).fired


def test_default_rules_end_with_the_loss_rule():
    rules = default_rules()
    assert rules[-1] == heldout_loss_rule() and rules[-1].non_finite == "stop" and rules[-1].patience == 1
    assert rules[-1].monitor == "collapse/heldout_real/loss" and rules[-1].threshold == math.inf


# -- a default guard checkpointed before the loss rule joined the defaults -----------------------------------------
@pytest.mark.parametrize("legacy", [False, True], ids=["margin", "min_delta"])
def test_an_old_default_guard_state_loads_into_the_new_default_guard(legacy):
    old = CollapseGuard(rules=default_rules()[:3])  # the default guard before the loss rule
    for value in (0.9, 0.8):
        for state in old.states:
            state.judge(value, 0.01)
    old.injections, old.state = 1, "inject"
    old_key = old._legacy_state_key if legacy else old.state_key
    checkpoint = {"callbacks": {old_key: old.state_dict()}, "pytorch-lightning_version": "2.6.0"}

    new = CollapseGuard()
    assert new.state_key != old_key
    trainer = make_trainer(max_epochs=1, callbacks=[new])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call._call_callbacks_on_load_checkpoint(trainer, checkpoint)  # what Lightning does on resume
        call._call_callbacks_load_state_dict(trainer, checkpoint)
    assert not [w for w in caught if "no guard of this Trainer has" in str(w.message)]
    assert [s.state_dict() for s in new.states[:3]] == [s.state_dict() for s in old.states]
    assert new.states[3].state_dict() == RuleState(heldout_loss_rule()).state_dict()  # fresh
    assert new.injections == 1 and new.state == "inject"


@pytest.mark.parametrize("version,with_loss_rule", [(0, True), (1, True), (2, False)])  # round 1; before issue 14
def test_a_guard_saved_with_the_earlier_default_rules_resumes_its_events_with_fresh_rules(version, with_loss_rule):
    from collapse_guard.callbacks._state_keys import earlier_default_rules

    rules = earlier_default_rules()[version]
    old = CollapseGuard(rules=rules)
    for state in old.states:
        state.judge(0.9, 0.01)
    old.injections, old.state = 1, "inject"
    checkpoint = {"callbacks": {old.state_key: old.state_dict()}, "pytorch-lightning_version": "2.6.0"}
    new = CollapseGuard()
    trainer = make_trainer(max_epochs=1, callbacks=[new])
    with pytest.warns(UserWarning, match="earlier version's default rules") as caught:
        call._call_callbacks_on_load_checkpoint(trainer, checkpoint)
        call._call_callbacks_load_state_dict(trainer, checkpoint)
    assert not [w for w in caught if "no guard of this Trainer has" in str(w.message)]
    assert new.injections == 1 and new.state == "inject"
    fresh = [s for s in new.states if s.checks == 0]
    assert [s.rule.name for s in fresh] == ["heldout_real_acc", "acc_change", "class_change"] + (
        [] if with_loss_rule else ["heldout_real_loss"])
    if with_loss_rule:  # the same rule then and now: its state carries over
        assert new.states[3].checks == 1


def test_an_unrelated_old_state_is_not_adopted():
    other = CollapseGuard(rules=[Rule(ACC, threshold=0.5)])
    checkpoint = {"callbacks": {other.state_key: other.state_dict()}, "pytorch-lightning_version": "2.6.0"}
    new = CollapseGuard()
    trainer = make_trainer(max_epochs=1, callbacks=[new])
    with pytest.warns(UserWarning, match="no guard of this Trainer has"):
        call._call_callbacks_on_load_checkpoint(trainer, checkpoint)
    assert other.state_key in checkpoint["callbacks"] and new.state_key not in checkpoint["callbacks"]
