"""CollapseGuard inside real Trainer.fit runs: stop, inject, escalation, warn, ordering, checkpoint state."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from collapse_guard import CollapseGuard, GuardEvent, HeldOutRealCheck, RatioMonitor, Rule, default_rules
from collapse_guard._compat import Callback

from cg_testing import TinyMLP, id_dataset, make_mixed, make_trainer

ACC = "collapse/heldout_real/acc"
LOSS = "collapse/heldout_real/loss"


def always(action=None, patience=1, name=None):
    """A rule that every check violates: held-out accuracy below 1.01."""
    return Rule(ACC, mode="max", threshold=1.01, patience=patience, action=action, name=name)


def never(action="stop"):
    return Rule(ACC, mode="max", threshold=-1.0, action=action, name="never")


class LastValues(Callback):
    """Listed last: records what HeldOutRealCheck measured at every epoch end, and every setup call."""

    def __init__(self):
        self.values: list[dict] = []
        self.setup_calls = 0

    def setup(self, trainer, pl_module, stage):
        self.setup_calls += 1

    def on_train_epoch_end(self, trainer, pl_module):
        check = next(cb for cb in trainer.callbacks if isinstance(cb, HeldOutRealCheck))
        self.values.append(dict(check.last))


def fit(guard, max_epochs=5, dm=None, extra=(), order=None, ckpt_path=None, **trainer_kwargs):
    dm = dm or make_mixed()
    ratio, check = RatioMonitor(), HeldOutRealCheck()
    callbacks = order(guard, ratio, check) if order else [ratio, check, guard]
    trainer = make_trainer(max_epochs=max_epochs, callbacks=callbacks + list(extra), **trainer_kwargs)
    trainer.fit(TinyMLP(), datamodule=dm, ckpt_path=ckpt_path)
    return trainer, dm, ratio, check


# -- constructor ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(action="restore"), "action"),
        (dict(inject_fraction=0.0), "inject_fraction"),
        (dict(inject_fraction=1.5), "inject_fraction"),
        (dict(real_fraction_step=-0.1), "real_fraction_step"),
        (dict(max_injections=-1), "max_injections"),
        (dict(cooldown=-1), "cooldown"),
        (dict(rules=[]), "rules"),
    ],
)
def test_constructor_errors(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        CollapseGuard(**kwargs)


def test_default_rules():
    guard = CollapseGuard()
    assert [r.monitor for r in guard.rules] == [r.monitor for r in default_rules()]
    assert all(guard.action_of(r) == "inject" for r in guard.rules)
    assert guard.action_of(Rule(ACC, threshold=0.5, action="warn")) == "warn"


# -- stop -------------------------------------------------------------------------------------------------------
def test_stop_rule_stops_training_with_an_event():
    guard = CollapseGuard(rules=[always("stop", patience=2, name="acc_floor")], action="warn")
    trainer, dm, ratio, check = fit(guard, max_epochs=5)
    assert trainer.current_epoch == 2 < 5  # checks at epochs 0 and 1, the second one stops
    assert len(ratio.history) == 2
    assert len(guard.events) == 1
    event = guard.events[0]
    assert isinstance(event, GuardEvent)
    assert event.epoch == 1 and event.global_step == trainer.global_step
    assert event.rule == "acc_floor" and event.monitor == ACC and event.action == "stop"
    assert event.bound == 1.01
    assert event.value == pytest.approx(check.last[ACC])
    assert f"{event.value:.4f}" in event.reason and "1.0100" in event.reason and "2/2" in event.reason
    assert guard.state == "stop"
    assert float(trainer.callback_metrics["collapse/guard/state"]) == 3.0
    assert float(trainer.callback_metrics["collapse/guard/events"]) == 1.0


def test_non_firing_rule_runs_to_max_epochs():
    guard = CollapseGuard(rules=[never()])
    trainer, *_ = fit(guard, max_epochs=3)
    assert trainer.current_epoch == 3 and not guard.events and guard.state == "ok"
    assert float(trainer.callback_metrics["collapse/guard/state"]) == 0.0


# -- inject and its escalation ------------------------------------------------------------------------------------
def test_inject_moves_reserve_and_raises_the_fraction_then_stops_after_max_injections():
    dm = make_mixed(real_fraction=0.25, reserve=0.25)  # 15 reserve samples
    guard = CollapseGuard(rules=[always()], action="inject", inject_fraction=0.5, real_fraction_step=0.25,
                          max_injections=1, cooldown=1)
    trainer, dm, ratio, _ = fit(guard, max_epochs=6, dm=dm)
    # epoch 0: inject; epoch 1: cooldown; epoch 2: fires again, max_injections reached -> stop
    assert [(e.epoch, e.action) for e in guard.events] == [(0, "inject"), (2, "stop")]
    assert trainer.current_epoch == 3 < 6
    assert dm.reserve_size - dm.reserve_remaining == 8 and dm.reserve_remaining == 7  # round(0.5 * 15)
    assert dm.injections[0]["samples"] == 8 and dm.injections[0]["real_fraction_floor"] == 0.5
    h = ratio.history
    assert h[0]["real_fraction_target"] == 0.25 and h[0]["samples"]["reserve"] == 0
    assert h[1]["real_fraction_target"] == 0.5 and h[1]["samples"]["reserve"] > 0
    assert h[1]["real_fraction"] == pytest.approx(0.5, abs=1 / 8)
    assert h[0]["real_fraction"] == pytest.approx(0.25, abs=1 / 8)
    assert "moved 8 reserve samples into training" in guard.events[0].reason and "0.25 -> 0.50" in guard.events[0].reason
    assert "after 1 injection(s)" in guard.events[1].reason
    assert guard.injections == 1 and guard.state == "stop"


def test_inject_escalates_to_stop_when_reserve_spent_and_fraction_at_one():
    dm = make_mixed(real_fraction=0.25, reserve=0.25)
    guard = CollapseGuard(rules=[always()], action="inject", inject_fraction=1.0, real_fraction_step=0.5,
                          max_injections=10, cooldown=0)
    trainer, dm, ratio, _ = fit(guard, max_epochs=6, dm=dm)
    # epoch 0: all 15 reserve samples in, 0.25 -> 0.75; epoch 1: no reserve, 0.75 -> 1.0; epoch 2: nothing left
    assert [(e.epoch, e.action) for e in guard.events] == [(0, "inject"), (1, "inject"), (2, "stop")]
    assert [i["samples"] for i in dm.injections] == [15, 0]
    assert "no reserve left" in guard.events[2].reason and "1.00" in guard.events[2].reason
    assert trainer.current_epoch == 3
    assert [round(h["real_fraction_target"], 6) for h in ratio.history] == [0.25, 0.75, 1.0]
    assert ratio.history[2]["real_fraction"] == 1.0
    assert guard.injections == 2


def test_inject_without_any_reserve_raises_the_fraction_only():
    dm = make_mixed(real_fraction=0.5, reserve=0.0)
    guard = CollapseGuard(rules=[always()], action="inject", real_fraction_step=0.5, cooldown=0, max_injections=5,
                          allow_fraction_only=True)  # without it, 'inject' with reserve=0 is an error at set-up
    _, dm, ratio, _ = fit(guard, max_epochs=4, dm=dm)
    assert [e.action for e in guard.events] == ["inject", "stop"]
    assert dm.injections[0]["samples"] == 0
    assert ratio.history[1]["real_fraction"] == 1.0


def test_strongest_action_of_fired_rules_wins():
    rules = [always("warn", name="w"), always("stop", name="s"), never("inject")]
    guard = CollapseGuard(rules=rules)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        trainer, *_ = fit(guard, max_epochs=3)
    messages = [str(w.message) for w in rec if "CollapseGuard epoch" in str(w.message)]
    assert len(messages) == 1 and ": stop — " in messages[0]  # one event, the stop (every event at warning level)
    assert trainer.current_epoch == 1
    # one event for the action, listing every fired rule
    assert [(e.rule, e.rules, e.action) for e in guard.events] == [("w", ("w", "s"), "stop")]
    assert guard.events[0].reason.startswith("2 rules fired (w, s): ")


# -- warn -------------------------------------------------------------------------------------------------------
def test_warn_emits_a_warning_and_keeps_training():
    guard = CollapseGuard(rules=[always("warn")], cooldown=0)
    with pytest.warns(UserWarning, match=r"CollapseGuard epoch \d: warn .*collapse/heldout_real/acc = ") as rec:
        trainer, *_ = fit(guard, max_epochs=3)
    assert trainer.current_epoch == 3
    assert [e.epoch for e in guard.events] == [0, 1, 2]
    assert sum("CollapseGuard epoch" in str(w.message) for w in rec) == 3
    assert guard.state == "warn"


def test_cooldown_skips_actions_after_one():
    guard = CollapseGuard(rules=[always("warn")], cooldown=2)
    with pytest.warns(UserWarning, match="CollapseGuard epoch"):
        fit(guard, max_epochs=5)
    assert [e.epoch for e in guard.events] == [0, 3]


# -- missing metrics ----------------------------------------------------------------------------------------------
def test_rule_on_a_never_logged_metric_raises_listing_logged_keys():
    # HeldOutRealCheck declares its keys, so the misnamed rule is rejected at set-up, before training
    guard = CollapseGuard(rules=[Rule("collapse/heldout_real/accuracy", threshold=0.5, action="stop")])
    with pytest.raises(ValueError, match="collapse/heldout_real/accuracy") as err:
        fit(guard, max_epochs=2)
    message = str(err.value)
    assert ACC in message and "strict=False" in message


def test_a_metric_the_module_logs_in_its_own_epoch_end_hook_is_refused_with_the_reason():
    """Lightning calls the callbacks' ``on_train_epoch_end`` before the module's: the guard says so."""
    class LogsLate(TinyMLP):
        def on_train_epoch_end(self):
            self.log("late_metric", 1.0)

    guard = CollapseGuard(rules=[Rule("late_metric", mode="min", threshold=2.0, action="warn")])
    trainer = make_trainer(max_epochs=2, callbacks=[RatioMonitor(), HeldOutRealCheck(), guard])
    with pytest.raises(RuntimeError, match="late_metric") as err:
        trainer.fit(LogsLate(), datamodule=make_mixed())
    message = str(err.value)
    assert "LogsLate defines its own `on_train_epoch_end`" in message and "on_epoch=True" in message


def test_non_strict_guard_skips_missing_metrics():
    guard = CollapseGuard(rules=[Rule("collapse/nothing", threshold=0.5, action="stop")], strict=False)
    trainer, *_ = fit(guard, max_epochs=2)
    assert trainer.current_epoch == 2 and not guard.events


# -- ordering -----------------------------------------------------------------------------------------------------
def test_guard_listed_first_reads_same_epoch_metrics():
    guard = CollapseGuard(rules=[Rule(LOSS, mode="min", threshold=-1.0, action="warn")], cooldown=0)
    last = LastValues()
    with pytest.warns(UserWarning, match="CollapseGuard epoch"):
        trainer, _, ratio, check = fit(guard, max_epochs=3, order=lambda g, r, c: [g, r, c, last])
    names = [type(cb).__name__ for cb in trainer.callbacks]
    assert names.index("CollapseGuard") > names.index("HeldOutRealCheck")
    assert names.index("CollapseGuard") > names.index("RatioMonitor")
    # every callback was set up once, also those the guard moved past
    assert last.setup_calls == 1
    # an event at every epoch with that epoch's measurement (LastValues runs before the moved guard)
    assert [e.epoch for e in guard.events] == [0, 1, 2]
    losses = [v[LOSS] for v in last.values]
    assert len(set(losses)) == 3
    assert [e.value for e in guard.events] == pytest.approx(losses)


def test_every_callback_set_up_once_when_guard_moves():
    calls = []

    class Probe(Callback):
        def __init__(self, tag):
            self.tag = tag

        @property
        def state_key(self):
            return f"Probe{self.tag}"

        def setup(self, trainer, pl_module, stage):
            calls.append(self.tag)

    guard = CollapseGuard(rules=[never()])
    fit(guard, max_epochs=1, order=lambda g, r, c: [Probe("a"), g, Probe("b"), r, Probe("c"), c, Probe("d")])
    assert sorted(calls) == ["a", "b", "c", "d"]


# -- state ------------------------------------------------------------------------------------------------------
def test_state_dict_round_trip():
    rules = [always("warn", patience=1, name="a"), Rule(LOSS, mode="min", relative=0.5, name="b")]
    guard = CollapseGuard(rules=rules, cooldown=1)
    with pytest.warns(UserWarning, match="CollapseGuard epoch"):
        fit(guard, max_epochs=3)
    state = guard.state_dict()
    other = CollapseGuard(rules=rules, cooldown=1)
    other.load_state_dict(state)
    assert other.events == guard.events and len(other.events) == 2
    assert [s.state_dict() for s in other.states] == [s.state_dict() for s in guard.states]
    assert other.states[1].checks == 3 and other.states[1].best is not None
    assert (other.injections, other.cooldown_left, other.state) == (guard.injections, guard.cooldown_left, "warn")
    assert other.state_key == guard.state_key


def test_guard_and_datamodule_state_survive_a_checkpoint_resume(tmp_path):
    def parts():
        g = CollapseGuard(rules=[always(name="acc")], action="inject", inject_fraction=0.5, real_fraction_step=0.25,
                          cooldown=0, max_injections=5)
        return g, make_mixed(real_fraction=0.25, reserve=0.25)

    guard, dm = parts()
    trainer, dm, ratio, _ = fit(guard, max_epochs=1, dm=dm)
    assert [e.action for e in guard.events] == ["inject"]
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)

    guard2, dm2 = parts()
    ratio2, check2 = RatioMonitor(), HeldOutRealCheck()
    trainer2 = make_trainer(max_epochs=2, callbacks=[ratio2, check2, guard2])
    trainer2.fit(TinyMLP(), datamodule=dm2, ckpt_path=ckpt)
    # the restored guard continues: its first event kept, one injection counted before this one
    assert [(e.epoch, e.action) for e in guard2.events] == [(0, "inject"), (1, "inject")]
    assert guard2.injections == 2 and guard2.states[0].checks == 2
    assert [i["epoch"] for i in dm2.injections] == [0, 1]
    assert dm2.reserve_remaining == 0 and dm2.current_real_fraction() == 0.75
    # the resumed epoch 1 trained at the fraction the epoch-0 injection set, with reserve data
    assert ratio2.history[0]["epoch"] == 0 and ratio2.history[1]["epoch"] == 1
    assert ratio2.history[1]["real_fraction_target"] == 0.5 and ratio2.history[1]["samples"]["reserve"] > 0
    assert sum(dm2.samples_by_source().values()) == 2 * 64


def test_a_checkpoint_saved_before_the_margin_rename_restores_its_guard(tmp_path):
    """A guard's ``state_key`` holds its rules' repr, which said ``min_delta=`` before ``Rule.margin``."""
    guard = CollapseGuard(rules=[always("warn", name="a")], action="warn", cooldown=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, *_ = fit(guard, max_epochs=1)
    ckpt = tmp_path / "old.ckpt"
    trainer.save_checkpoint(ckpt)
    checkpoint = torch.load(ckpt, weights_only=False)
    old_key = guard.state_key.replace("margin=", "min_delta=")  # the key an old Rule repr gave
    assert old_key != guard.state_key and "min_delta=0.0" in old_key
    checkpoint["callbacks"][old_key] = checkpoint["callbacks"].pop(guard.state_key)
    torch.save(checkpoint, ckpt)

    resumed = CollapseGuard(rules=[always("warn", name="a")], action="warn", cooldown=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(resumed, max_epochs=2, ckpt_path=ckpt)
    orphaned = "their baselines, patience counters and events are not restored"
    assert not [w for w in caught if orphaned in str(w.message)]
    assert [e.epoch for e in resumed.events] == [0, 1] and resumed.states[0].checks == 2


# -- set-up errors ----------------------------------------------------------------------------------------------
def test_inject_rule_without_mixed_datamodule_raises_at_setup():
    loader = DataLoader(id_dataset(32, 0), batch_size=8)
    trainer = make_trainer(max_epochs=1, callbacks=[CollapseGuard(rules=[always("inject")])])
    with pytest.raises(TypeError, match="MixedDataModule"):
        trainer.fit(TinyMLP(), train_dataloaders=loader)


def test_stop_guard_works_on_any_logged_metric_without_mixed_datamodule():
    loader = DataLoader(id_dataset(32, 0), batch_size=8)
    guard = CollapseGuard(rules=[Rule("train_loss", mode="min", threshold=-1.0, action="stop")], action="stop")
    trainer = make_trainer(max_epochs=4, callbacks=[guard])
    trainer.fit(TinyMLP(), train_dataloaders=loader)
    assert trainer.current_epoch == 1 and guard.events[0].monitor == "train_loss"
    assert guard.events[0].value == pytest.approx(float(trainer.callback_metrics["train_loss"]))


# -- freshness: a check every few epochs is judged once per measurement ------------------------------------------
def test_guard_judges_only_fresh_measurements_of_a_sparse_check():
    guard = CollapseGuard(rules=[always("warn", patience=2, name="acc_floor")], action="warn")
    ratio, check = RatioMonitor(), HeldOutRealCheck(every_n_epochs=2)
    trainer = make_trainer(max_epochs=4, callbacks=[ratio, check, guard])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(TinyMLP(), datamodule=make_mixed())
    # measured at epochs 1 and 3 only: no error at epoch 0, and the stale value of epoch 1 is not judged again at
    # epoch 2, so patience 2 is reached at the second measurement (epoch 3), not at epoch 2
    assert guard.states[0].checks == 2
    assert [e.epoch for e in guard.events] == [3]


def test_misnamed_metric_of_a_producer_raises_before_training():
    guard = CollapseGuard(rules=[Rule("collapse/heldout_real/acuracy", threshold=0.5, action="stop")])
    model = TinyMLP()
    with pytest.raises(ValueError, match="acuracy"):
        make_trainer(max_epochs=2, callbacks=[RatioMonitor(), HeldOutRealCheck(), guard]).fit(model, datamodule=make_mixed())
    assert not model.seen


# -- sigmas rules read the standard error HeldOutRealCheck logs with the value ------------------------------------
def test_sigmas_rule_judges_against_the_logged_standard_error():
    last = LastValues()
    guard = CollapseGuard(rules=[Rule(ACC, sigmas=1.0, action="warn", name="acc_se")], cooldown=0)
    trainer, *_ = fit(guard, max_epochs=4, extra=[last])
    state = guard.states[0]
    assert state.checks == 4
    values = [v[ACC] for v in last.values]
    stderrs = [v[ACC + "_stderr"] for v in last.values]
    assert all(0 < s < 0.5 for s in stderrs)
    # the bound now: the best of the four checks minus one standard error of the last
    assert state.bound(stderrs[-1]) == pytest.approx(max(values) - stderrs[-1])
    for event in guard.events:
        assert "standard error" in event.reason


def test_sigmas_rule_with_a_misnamed_stderr_key_fails_at_setup():
    guard = CollapseGuard(rules=[Rule(ACC, sigmas=1.0, stderr="collapse/heldout_real/acc_se", action="warn")])
    with pytest.raises(ValueError, match=r"reads 'collapse/heldout_real/acc_se'.*`stderr`"):
        fit(guard, max_epochs=1)


def test_default_rules_are_in_units_of_the_heldout_and_the_training_noise():
    rules = {r.name: r for r in default_rules()}  # issue 14 round 2: paired on the same held-out samples
    assert rules["heldout_real_acc"].stderr_key == ACC + "_stderr" and rules["heldout_real_acc"].baseline == "level"
    assert rules["class_change"].is_family
    assert rules["class_change"].stderr_key == "collapse/heldout_real/class_recall_change_stderr/*"
    assert rules["acc_change"].stderr_key == ACC + "_change_stderr" and rules["acc_change"].baseline == "zero"
    assert rules["heldout_real_acc"].min_change == 0.0 and rules["acc_change"].min_change == 0.02


def test_default_rules_take_a_practical_floor():
    rules = {r.name: r for r in default_rules(min_change=0.01)}
    assert rules["heldout_real_acc"].min_change == 0.01 and rules["acc_change"].min_change == 0.02  # its own floor
    assert rules["class_change"].min_change == default_rules()[2].min_change  # a floor of its own, per class
    with pytest.raises(ValueError, match="`min_change`"):
        default_rules(min_change=-0.01)


# -- restore_best: inject / stop put back the weights of the first rule's best check ----------------------------
class WeightsAtEpochEnd(Callback):
    """Listed first: the weights at every epoch end, before the guard acts, and at every epoch start."""

    def __init__(self):
        self.weights: list[dict] = []
        self.at_start: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.at_start.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_train_epoch_end(self, trainer, pl_module):
        self.weights.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("action", ["stop", "inject"])
def test_restore_best_puts_back_the_weights_of_the_best_check(action):
    recorder, last = WeightsAtEpochEnd(), LastValues()
    guard = CollapseGuard(rules=[always(action, patience=3, name="acc")], restore_best=True, max_injections=1,
                          cooldown=0)
    trainer, *_ = fit(guard, max_epochs=3 if action == "stop" else 4, order=lambda g, r, c: [recorder, r, c, g, last])
    accs = [v[ACC] for v in last.values[:3]]
    best = max(range(3), key=lambda i: (accs[i], i))  # ties: the later check
    event = guard.events[0]
    assert event.epoch == 2 and f"restored the weights of epoch {best}" in event.reason
    if action == "stop":
        assert guard.best_weights["epoch"] == best and guard.best_weights["value"] == pytest.approx(accs[best])
        assert same_weights(trainer.lightning_module.state_dict(), recorder.weights[best])
    else:  # training went on from the restored weights for one more epoch
        assert not same_weights(trainer.lightning_module.state_dict(), recorder.weights[2])
        assert same_weights(recorder.at_start[3], recorder.weights[best])


def test_restore_best_is_off_when_asked_and_checkpointed():
    guard = CollapseGuard(rules=[always("stop", patience=2)], restore_best=False)
    recorder = WeightsAtEpochEnd()
    trainer, *_ = fit(guard, max_epochs=3, order=lambda g, r, c: [recorder, r, c, g])
    assert guard.best_weights is None and "restored" not in guard.events[0].reason
    assert same_weights(trainer.lightning_module.state_dict(), recorder.weights[-1])
    # by default a stop puts the best weights back, an inject does not
    stopper = CollapseGuard(rules=[always("stop", patience=2)])
    fit(stopper, max_epochs=3)
    assert stopper.restore_best is None and "restored the weights of epoch" in stopper.events[0].reason
    injector = CollapseGuard(rules=[always("inject", patience=2)], max_injections=1)
    fit(injector, max_epochs=3)
    assert injector.events[0].action == "inject" and "restored" not in injector.events[0].reason
    keeper = CollapseGuard(rules=[always("warn", patience=5)], restore_best=True)
    fit(keeper, max_epochs=2)
    state = keeper.state_dict()
    other = CollapseGuard(rules=[always("warn", patience=5)], restore_best=True)
    other.load_state_dict(state)
    assert other.best_weights["epoch"] == keeper.best_weights["epoch"]
    assert same_weights(other.best_weights["weights"], keeper.best_weights["weights"])


# -- the progress bar ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bar", ["tqdm", "rich"])
def test_the_progress_bar_shows_the_guard_state_as_a_word(bar, tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar

    from collapse_guard import HeldOutRealCheck, RatioMonitor

    if bar == "rich":
        pytest.importorskip("rich")
    progress = TQDMProgressBar() if bar == "tqdm" else RichProgressBar()
    own = type(progress).get_metrics
    seen = []

    class Spy(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):  # after the guard (listed after it)
            seen.append(progress.get_metrics(trainer, pl_module).get("guard"))

    # fires at every check (the real fraction is always below 1.01)
    guard = CollapseGuard(rules=[Rule("collapse/real_fraction", mode="max", threshold=1.01, action="inject",
                                      patience=1)], cooldown=1, max_injections=9, verbose=False)
    trainer = pl.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=[progress, RatioMonitor(), HeldOutRealCheck(), guard, Spy()])
    trainer.fit(TinyMLP(), datamodule=make_mixed(real_fraction=0.5))
    # epoch 0 fires and injects; epoch 1 is the cooldown; epoch 2 injects again
    assert seen[:3] == ["injected", "cooling", "injected"], seen
    # the bar's own method is back after the fit, and a plain number never shows under "guard"
    assert "get_metrics" not in progress.__dict__ and type(progress).get_metrics is own
    assert "guard" not in trainer.progress_bar_metrics


def test_hiding_the_words_gives_back_a_get_metrics_set_on_the_bar_itself():
    from types import SimpleNamespace

    from collapse_guard.callbacks._progress_bar import hide_words, show_word

    class Bar:
        def get_metrics(self, trainer, pl_module):
            return {"class": 1}

    bar = Bar()
    own = lambda trainer, pl_module: {"own": 1}  # noqa: E731 - a user's override on this one instance
    bar.get_metrics = own
    trainer = SimpleNamespace(progress_bar_callback=bar)
    show_word(trainer, "guard", "ok")
    assert bar.get_metrics(trainer, None) == {"own": 1, "guard": "ok"}
    hide_words(trainer)
    assert bar.get_metrics is own and bar.get_metrics(trainer, None) == {"own": 1}
    plain = Bar()
    trainer.progress_bar_callback = plain
    show_word(trainer, "guard", "ok")
    hide_words(trainer)
    assert "get_metrics" not in plain.__dict__ and plain.get_metrics(trainer, None) == {"class": 1}


def test_state_words():
    from collapse_guard.callbacks.events import state_word

    assert state_word("ok", (), False, "ok") == "ok"
    assert state_word("inject", ("v",), False, "inject") == "injected"
    assert state_word("ok", ("v",), True, "inject") == "cooling"
    assert state_word("ok", ("v",), False, "ok") == "fired"
    assert state_word("ok", (), False, "inject") == "ok (injected)"
