"""Rules over logged indicators: validation, bounds, baselines, margin, patience, non-finite values, state."""
from __future__ import annotations

import math
import warnings

import pytest

from collapse_guard.callbacks.rules import Rule, RuleState

ACC = "collapse/heldout_real/acc"


def run(rule: Rule, values):
    state = RuleState(rule)
    return state, [state.judge(v) for v in values]


# -- validation -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(mode="up", threshold=0.5), "mode"),
        (dict(baseline="last", relative=0.1), "baseline"),
        (dict(action="restore", threshold=0.5), "action"),
        (dict(), "threshold"),
        (dict(relative=0.0), "relative"),
        (dict(relative=1.5), "relative"),
        (dict(relative=-0.1), "relative"),
        (dict(threshold=0.5, patience=0), "patience"),
        (dict(relative=0.1, baseline_checks=0), "baseline_checks"),
        (dict(threshold=0.5, margin=-0.01), "margin"),
    ],
)
def test_rule_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        Rule(ACC, **kwargs)


def test_rule_label_and_defaults():
    assert Rule(ACC, threshold=0.5).label == ACC
    assert Rule(ACC, threshold=0.5, name="acc").label == "acc"
    r = Rule(ACC, relative=1.0, action="stop")
    assert (r.mode, r.baseline, r.patience, r.margin, r.action) == ("max", "best", 1, 0.0, "stop")


# -- absolute thresholds --------------------------------------------------------------------------------------------
def test_mode_max_threshold():
    _, v = run(Rule(ACC, mode="max", threshold=0.8), [0.9, 0.8, 0.79])
    assert [x.violated for x in v] == [False, False, True]
    assert [x.fired for x in v] == [False, False, True]
    assert all(x.bound == 0.8 for x in v)
    assert "0.7900" in v[2].reason and "0.8000" in v[2].reason and "below" in v[2].reason
    assert ACC in v[2].reason
    assert "at or above" in v[0].reason and "0.9000" in v[0].reason


def test_mode_min_threshold():
    _, v = run(Rule("collapse/heldout_real/loss", mode="min", threshold=1.0), [0.5, 1.0, 1.2])
    assert [x.violated for x in v] == [False, False, True]
    assert "1.2000" in v[2].reason and "above bound 1.0000" in v[2].reason
    assert "at or below" in v[0].reason


def test_margin_widens_the_bound():
    _, v = run(Rule(ACC, mode="max", threshold=0.8, margin=0.05), [0.76, 0.75, 0.74])
    assert [x.violated for x in v] == [False, False, True]
    _, v = run(Rule("loss", mode="min", threshold=1.0, margin=0.1), [1.09, 1.1, 1.11])
    assert [x.violated for x in v] == [False, False, True]


def test_min_delta_is_a_deprecated_alias_of_margin():
    with pytest.warns(DeprecationWarning, match="margin"):
        rule = Rule(ACC, threshold=0.8, min_delta=0.05)
    assert rule == Rule(ACC, threshold=0.8, margin=0.05)
    with pytest.warns(DeprecationWarning, match="Rule.margin"):
        assert rule.min_delta == 0.05
    with pytest.raises(ValueError, match="not both"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Rule(ACC, threshold=0.8, margin=0.1, min_delta=0.05)
    # the repr a guard's state_key was made of before the rename
    assert rule.legacy_repr() == repr(rule).replace("margin=0.05", "min_delta=0.05")


def test_check_is_a_deprecated_alias_of_judge():
    state, twin = RuleState(Rule(ACC, threshold=0.8)), RuleState(Rule(ACC, threshold=0.8))
    with pytest.warns(DeprecationWarning, match="judge"):
        old = state.check(0.7)
    assert old == twin.judge(0.7)


# -- relative bounds --------------------------------------------------------------------------------------------
def test_relative_to_best_mode_max():
    # first check arms the baseline (baseline_checks=1): never violated
    _, v = run(Rule(ACC, mode="max", relative=0.1), [0.5, 0.9, 0.82, 0.80, 0.95, 0.85])
    assert v[0].bound is None and not v[0].violated and "warming up" in v[0].reason
    assert v[1].bound == pytest.approx(0.45)
    assert v[2].bound == pytest.approx(0.81) and not v[2].violated  # best 0.9
    assert v[3].violated and "best baseline 0.9000" in v[3].reason and "0.8000" in v[3].reason
    assert v[4].bound == pytest.approx(0.81)
    assert v[5].bound == pytest.approx(0.855) and v[5].violated  # best is now 0.95


def test_relative_to_best_mode_min_and_negative_baseline():
    _, v = run(Rule("loss", mode="min", relative=0.5), [2.0, 1.0, 1.6])
    assert v[1].bound == pytest.approx(3.0) and v[2].bound == pytest.approx(1.5) and v[2].violated
    # a negative baseline: the bound is a share of its magnitude, still below it for "max"
    _, v = run(Rule("neg", mode="max", relative=0.5), [-2.0, -2.9, -3.1])
    assert v[1].bound == pytest.approx(-3.0) and not v[1].violated and v[2].violated


def test_relative_to_first_baseline_with_warm_up():
    rule = Rule(ACC, mode="max", relative=0.1, baseline="first", baseline_checks=3)
    state, v = run(rule, [0.1, 0.8, 0.9, 0.7, 0.9, 0.98, 0.53])
    assert [x.bound for x in v[:3]] == [None, None, None]  # warm-up: even a bad value does not count
    assert not any(x.violated for x in v[:3])
    assert all("warming up" in x.reason for x in v[:3])
    base = (0.1 + 0.8 + 0.9) / 3
    assert v[3].bound == pytest.approx(base * 0.9)
    # the first baseline stays put when later values improve ("best" would move)
    assert v[5].bound == pytest.approx(base * 0.9)
    assert not v[3].violated and v[6].violated and "first baseline" in v[6].reason
    assert state.baseline() == pytest.approx(base)


def test_best_baseline_waits_baseline_checks():
    _, v = run(Rule(ACC, mode="max", relative=0.1, baseline_checks=2), [0.9, 0.1, 0.5])
    assert v[0].bound is None and v[1].bound is None and not v[1].violated
    assert v[2].bound == pytest.approx(0.81) and v[2].violated


def test_threshold_and_relative_take_the_stricter_bound():
    _, v = run(Rule(ACC, mode="max", threshold=0.5, relative=0.1), [0.5, 0.9, 0.6])
    assert v[0].bound == 0.5  # threshold in force during the warm-up of the relative bound
    assert v[2].bound == pytest.approx(0.81) and v[2].violated
    _, v = run(Rule("loss", mode="min", threshold=1.0, relative=0.5), [1.0, 0.4, 0.7])
    assert v[2].bound == pytest.approx(0.6) and v[2].violated
    _, v = run(Rule("loss", mode="min", threshold=1.0, relative=0.5), [1.0, 0.9])
    assert v[1].bound == pytest.approx(1.0)  # 1.5 from the baseline, the threshold is stricter


# -- patience ---------------------------------------------------------------------------------------------------
def test_patience_fires_after_consecutive_violations_and_resets():
    rule = Rule(ACC, mode="max", threshold=0.8, patience=3)
    state, v = run(rule, [0.7, 0.7, 0.9, 0.7, 0.7, 0.7, 0.7])
    assert [x.violated for x in v] == [True, True, False, True, True, True, True]
    assert [x.fired for x in v] == [False, False, False, False, False, True, True]
    assert "1/3 consecutive" in v[0].reason and "3/3 consecutive" in v[5].reason
    assert state.wait == 4
    state.reset_wait()
    assert not state.judge(0.7).fired and state.wait == 1


def test_patience_one_fires_at_once():
    _, v = run(Rule(ACC, threshold=0.8), [0.7])
    assert v[0].fired


# -- non-finite values ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_fire_at_once(value):
    rule = Rule(ACC, mode="max", relative=0.1, patience=5)
    state = RuleState(rule)
    v = state.judge(value)  # even during the warm-up and with patience 5
    assert v.violated and v.fired and "not finite" in v.reason and str(value) in v.reason
    assert state.best is None  # a non-finite value never becomes the baseline
    state.judge(0.9)
    assert state.best == 0.9


# -- state ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("baseline", ["best", "first"])
def test_state_dict_round_trip(baseline):
    rule = Rule(ACC, mode="max", relative=0.1, baseline=baseline, baseline_checks=2, patience=3)
    values = [0.8, 0.9, 0.7, 0.7]
    state, _ = run(rule, values)
    saved = state.state_dict()
    assert saved == {"checks": 4, "first_values": [0.8, 0.9], "best": 0.9, "wait": 2, "last_stderr": None,
                     "values": values}
    restored = RuleState(rule)
    restored.load_state_dict(saved)
    assert restored.state_dict() == saved
    old = {k: v for k, v in saved.items() if k != "last_stderr"}  # a checkpoint from before sigmas rules
    legacy = RuleState(rule)
    legacy.load_state_dict(old)
    assert legacy.state_dict() == saved
    for value in (0.6, 0.95, 0.5):  # the two continue identically
        a, b = state.judge(value), restored.judge(value)
        assert (a.bound, a.violated, a.fired, a.reason) == (b.bound, b.violated, b.fired, b.reason)
    # fresh state would not have fired on the first 0.6
    assert not RuleState(rule).judge(0.6).fired


# -- sigmas: bounds in units of the logged standard error -------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [(dict(sigmas=0.0), "sigmas"), (dict(sigmas=-1.0), "sigmas"),
                                          (dict(sigmas=math.inf), "sigmas"), (dict(relative=0.1, stderr="x"), "stderr")])
def test_sigmas_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        Rule(ACC, **kwargs)


def test_sigmas_stderr_key_defaults_to_monitor_suffix():
    assert Rule(ACC, sigmas=2.0).stderr_key == ACC + "_stderr"
    assert Rule(ACC, sigmas=2.0, stderr="my/se").stderr_key == "my/se"
    assert Rule(ACC, relative=0.1).stderr_key is None


def test_sigmas_bound_is_best_minus_sigmas_standard_errors():
    state = RuleState(Rule(ACC, sigmas=2.0))
    first = state.judge(0.90, stderr=0.01)
    assert first.bound is None and not first.violated  # no baseline yet
    v = state.judge(0.885, stderr=0.01)  # bound 0.90 - 2 x 0.01 = 0.88
    assert v.bound == pytest.approx(0.88) and not v.violated
    v = state.judge(0.875, stderr=0.01)
    assert v.violated and v.fired
    assert "2 x noise 0.0100 (standard error 0.0100)" in v.reason and "best baseline 0.9000" in v.reason


def test_sigmas_scale_with_the_noise_of_the_evaluation_set():
    # the same fall of 4 points: noise of a large easy set (se 1 point) fires, a small hard set (se 3 points) not
    fall = [0.70, 0.66]
    _, quiet = run(Rule(ACC, sigmas=1.5), fall)
    precise = RuleState(Rule(ACC, sigmas=1.5))
    noisy = RuleState(Rule(ACC, sigmas=1.5))
    assert [precise.judge(v, stderr=0.01).fired for v in fall] == [False, True]
    assert [noisy.judge(v, stderr=0.03).fired for v in fall] == [False, False]
    assert not quiet[1].fired  # no stderr given: no sigmas bound at all


def test_sigmas_mode_min_and_the_stricter_of_several_bounds():
    state = RuleState(Rule("collapse/gap/acc", mode="min", sigmas=1.0))
    state.judge(0.05, stderr=0.02)
    assert state.judge(0.06, stderr=0.02).bound == pytest.approx(0.07)
    both = RuleState(Rule(ACC, relative=0.10, sigmas=1.0))  # relative bound 0.81, sigmas bound 0.88: 0.88 applies
    both.judge(0.90, stderr=0.02)
    assert both.judge(0.87, stderr=0.02).bound == pytest.approx(0.88)


def test_sigmas_ignore_a_non_finite_stderr():
    state = RuleState(Rule(ACC, sigmas=1.0, threshold=0.5))
    state.judge(0.9, stderr=0.01)
    assert state.judge(0.85, stderr=math.nan).bound == pytest.approx(0.5)
    assert state.last_stderr == 0.01  # the last finite one, for reports


# -- min_change: a floor on how small a fall counts ------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [(dict(sigmas=2.0, min_change=-0.01), "min_change"),
                                          (dict(sigmas=2.0, min_change=math.nan), "min_change"),
                                          (dict(threshold=0.5, min_change=0.01), "min_change")])
def test_min_change_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        Rule(ACC, **kwargs)


def test_min_change_moves_a_bound_that_is_closer_than_it():
    # a large held-out set: se 0.2 points, so 2 standard errors are 0.4 points; min_change asks for 1 point
    state = RuleState(Rule(ACC, sigmas=2.0, min_change=0.01))
    state.judge(0.950, stderr=0.002)
    v = state.judge(0.944, stderr=0.002)  # 0.6 points: beyond the noise (bound 0.946) but under 1 point
    assert v.bound == pytest.approx(0.940) and not v.violated
    assert "at least min_change 0.01" in v.reason
    v = state.judge(0.938, stderr=0.002)
    assert v.violated and v.fired
    plain = RuleState(Rule(ACC, sigmas=2.0))
    plain.judge(0.950, stderr=0.002)
    assert plain.judge(0.944, stderr=0.002).violated  # without min_change the 0.6-point fall fires


def test_min_change_leaves_a_bound_that_is_farther_than_it():
    # a small noisy set: 2 x 3 points = 6 points, farther than min_change's 1 point, so the noise bound applies
    state = RuleState(Rule(ACC, sigmas=2.0, min_change=0.01))
    state.judge(0.70, stderr=0.03)
    v = state.judge(0.66, stderr=0.03)
    assert v.bound == pytest.approx(0.64) and not v.violated and "min_change" not in v.reason


def test_min_change_mode_min_relative_and_no_bound_without_stderr():
    state = RuleState(Rule("collapse/heldout_real/loss", mode="min", relative=0.05, min_change=0.1))
    state.judge(1.0)
    assert state.judge(1.08).bound == pytest.approx(1.1)  # 5% would be 1.05; at least 0.1 above the best
    state = RuleState(Rule(ACC, sigmas=2.0, min_change=0.01))
    state.judge(0.9, stderr=0.01)
    assert state.judge(0.5).bound is None  # min_change widens a bound; it is not a bound of its own


def test_min_change_is_left_out_of_the_repr_when_unset():
    # a guard's state_key holds its rules' repr: checkpoints saved before min_change existed still match
    assert "min_change" not in repr(Rule(ACC, sigmas=2.0))
    assert "min_change=0.02" in repr(Rule(ACC, sigmas=2.0, min_change=0.02))
    assert repr(Rule(ACC, sigmas=2.0)) != repr(Rule(ACC, sigmas=2.0, min_change=0.02))


def test_zero_baseline_judges_a_paired_change_against_its_standard_error_and_min_change():
    rule = Rule("collapse/heldout_real/acc_change", sigmas=3.0, baseline="zero", min_change=0.02, baseline_checks=2)
    assert rule.stderr_key == "collapse/heldout_real/acc_change_stderr"
    state = RuleState(rule)
    row = lambda change, se: {rule.monitor: change, rule.stderr_key: se}  # noqa: E731
    assert not state.judge_row(row(0.0, 0.0)).violated  # warming up
    assert not state.judge_row(row(-0.5, 0.01)).violated  # still warming up: armed after 2 checks
    verdict = state.judge_row(row(-0.05, 0.01))  # beyond 3 x 0.01 and 0.02 below 0
    assert verdict.fired and verdict.bound == pytest.approx(-0.03)
    assert not state.judge_row(row(-0.05, 0.02)).violated  # within 3 paired standard errors
    assert state.judge_row(row(-0.025, 0.001)).bound == pytest.approx(-0.02)  # min_change: at least 2 points
    assert not state.judge_row(row(-0.015, 0.001)).violated
    with pytest.raises(ValueError, match="baseline"):
        Rule("x", sigmas=2.0, baseline="nought")


def test_a_violation_during_the_cooldown_does_not_count_towards_patience():
    from collapse_guard.callbacks.policy import RuleBook

    class Book(RuleBook):
        event_type = dict

    book = Book()
    book.set_policy([Rule("acc", threshold=0.5, patience=2)], "warn", 1.0, 0.0, 1, cooldown=1, strict=False)
    actions = []
    for value in [0.4] * 6:  # an indicator that stays below its bound (a slow recovery)
        decision = book.decide([s.judge_row({"acc": value}) for s in book.states], real_fraction=0.5)
        if decision.cooling:
            book.cooldown_left -= 1  # as both guards count a cooldown down
        elif decision.action != "ok":
            book.acted()
        actions.append(decision.action)
    # after the action and its one-check cooldown, two fresh violations again (not the first check past the cooldown)
    assert actions == ["ok", "warn", "ok", "ok", "warn", "ok"]
    book.states[0].judge_row({"acc": 0.4})
    book.acted()
    book.states[0].judge_row({"acc": 0.4})  # in the cooldown: one violation judged
    saved = book.book_state_dict()
    again = Book()
    again.set_policy(book.rules, "warn", 1.0, 0.0, 1, cooldown=1, strict=False)
    again.load_book_state_dict(saved)  # loading a cooldown does not clear the patience counters
    assert again.cooldown_left == 1 and again.book_state_dict() == saved and again.states[0].wait == 1
