"""Rules that accumulate small falls over checks (``Rule(accumulate="cusum" | "ewma")``: Page 1954, Roberts 1959) and
the detrended noise unit (``noise="detrended"``)."""
import math

import pytest

from collapse_guard import default_rules
from collapse_guard.callbacks.noise import accumulate, accumulation_units, detrended_sigma, ewma_limit
from collapse_guard.callbacks.rules import Rule, RuleState

KEY = "collapse/heldout_real/acc_change"


def cusum(h=3.0, k=0.5, **kwargs):
    return Rule(KEY, sigmas=h, baseline="zero", baseline_checks=1, accumulate="cusum", allowance=k, **kwargs)


def ewma(L=3.0, lam=0.3, **kwargs):
    return Rule(KEY, sigmas=L, baseline="zero", baseline_checks=1, accumulate="ewma", smoothing=lam, **kwargs)


def judge_all(rule, values, se=0.01):
    state = RuleState(rule)
    return state, [state.judge(v, se) for v in values]


# -- the statistics --------------------------------------------------------------------------------------------
def test_cusum_step_is_pages_one_sided_sum():
    assert accumulate("cusum", 0.0, 2.0, 0.5) == 1.5
    assert accumulate("cusum", 1.0, -3.0, 0.5) == 0.0   # a rise takes the falls back, never below 0
    assert accumulate("ewma", 0.0, 2.0, 0.25) == 0.5
    with pytest.raises(ValueError):
        accumulate("median", 0.0, 1.0, 0.5)


def test_units_reach_the_limit_exactly():
    # a fall of exactly the returned units puts the statistic on its limit
    for kind, stat, limit, parameter in (("cusum", 1.2, 4.0, 1.0), ("ewma", 0.7, 3.0, 0.3)):
        units = accumulation_units(kind, stat, limit, parameter)
        after = accumulate(kind, stat, units, parameter)
        target = limit if kind == "cusum" else ewma_limit(limit, parameter)
        assert after == pytest.approx(target)


def test_detrended_sigma_ignores_a_linear_trend():
    rising = [0.5 + 0.03 * t for t in range(8)]
    assert detrended_sigma(rising) == pytest.approx(0.0, abs=1e-12)
    assert detrended_sigma([0.9, 0.92]) is None
    # alternating noise of +-0.01 around a trend: second differences of 0.04 -> 0.04 / 1.652
    noisy = [0.5 + 0.03 * t + (0.01 if t % 2 else -0.01) for t in range(8)]
    assert detrended_sigma(noisy) == pytest.approx(0.04 / (0.6745 * math.sqrt(6)))


# -- the rule --------------------------------------------------------------------------------------------------
def test_cusum_catches_a_slow_fall_that_no_single_check_shows():
    slow = [0.0, -0.012, -0.015, -0.015, -0.018, -0.02, -0.02]   # 1.2-2 paired units a check
    single = Rule(KEY, sigmas=3.5, baseline="zero", baseline_checks=1)
    assert not any(v.fired for v in judge_all(single, slow)[1])
    state, verdicts = judge_all(cusum(h=3.0, k=0.5), slow)
    fired = [i for i, v in enumerate(verdicts) if v.fired]
    assert fired and fired[0] == 4            # S: 0.7, 1.7, 2.7, 4.0 > 3
    assert "CUSUM" in verdicts[fired[0]].reason


def test_cusum_violates_exactly_when_the_statistic_passes_h():
    values = [0.0, -0.01, 0.005, -0.02, -0.03, -0.005, -0.04, 0.01, -0.025]
    state = RuleState(cusum(h=2.0, k=1.0))
    stat = 0.0
    for i, v in enumerate(values):
        verdict = state.judge(v, 0.01)
        if i >= 1:  # armed after 1 check
            stat = max(0.0, stat + (0.0 - v) / 0.01 - 1.0)
            assert verdict.violated == (stat > 2.0)
            assert state.accumulated == pytest.approx(stat)


def test_healthy_noise_around_zero_does_not_fire():
    noise = [0.0, -0.01, 0.0, -0.005, -0.01, 0.0, -0.012, -0.003, 0.0, -0.008]   # within 1 unit
    assert not any(v.fired for v in judge_all(cusum(h=4.0, k=1.0), noise)[1])
    assert not any(v.fired for v in judge_all(ewma(L=3.0, lam=0.3), noise)[1])


def test_ewma_fires_on_a_sustained_fall():
    slow = [0.0] + [-0.02] * 6            # 2 units a check: Z -> 2 > 3 sqrt(0.3 / 1.7) = 1.26 at the 3rd
    state, verdicts = judge_all(ewma(L=3.0, lam=0.3), slow)
    assert [i for i, v in enumerate(verdicts) if v.fired][0] == 3
    assert verdicts[3].bound > -0.02


def test_min_change_still_asks_this_checks_fall_to_be_large():
    slow = [0.0] + [-0.015] * 8
    state, verdicts = judge_all(cusum(h=2.0, k=0.5, min_change=0.02), slow)
    assert not any(v.fired for v in verdicts)     # the statistic is past h, but no fall reaches 2 points
    assert state.accumulated > 2.0


def test_patience_counts_violations_of_the_accumulated_limit():
    slow = [0.0] + [-0.02] * 6
    first = lambda r: next(i for i, v in enumerate(judge_all(r, slow)[1]) if v.fired)  # noqa: E731
    assert first(cusum(h=3.0, k=0.5, patience=2)) == first(cusum(h=3.0, k=0.5)) + 1


def test_an_action_restarts_the_statistic_and_a_checkpoint_carries_it():
    state, _ = judge_all(cusum(), [0.0, -0.02, -0.02])
    saved = state.state_dict()
    assert saved["accumulated"] == pytest.approx(state.accumulated) and state.accumulated > 0
    restored = RuleState(cusum())
    restored.load_state_dict(saved)
    assert restored.accumulated == pytest.approx(state.accumulated)
    assert restored.judge(-0.02, 0.01).violated == state.judge(-0.02, 0.01).violated
    state.reset_wait()
    assert state.accumulated == 0.0 and state.wait == 0


def test_a_state_saved_before_accumulation_loads_at_zero():
    old = {"checks": 3, "first_values": [0.0], "best": 0.0, "wait": 0, "last_stderr": 0.01,
           "values": [0.0, -0.01, -0.01]}
    state = RuleState(cusum())
    state.load_state_dict(old)
    assert state.accumulated == 0.0
    plain = RuleState(Rule(KEY, sigmas=3.0, baseline="zero"))
    assert "accumulated" not in plain.state_dict()     # rules without accumulation save what they saved before


def test_a_family_rule_accumulates_per_member():
    rule = Rule("collapse/heldout_real/class_recall_change/*", sigmas=3.0, baseline="zero", baseline_checks=1,
                accumulate="cusum", allowance=0.5)
    state = RuleState(rule)
    fired = None
    for t, fall in enumerate([0.0, -0.1, -0.1, -0.1, -0.1]):
        row = {"collapse/heldout_real/class_recall_change/0": 0.0,
               "collapse/heldout_real/class_recall_change_stderr/0": 0.05,
               "collapse/heldout_real/class_recall_change/1": fall,
               "collapse/heldout_real/class_recall_change_stderr/1": 0.05}
        verdict = state.judge_row(row)
        if verdict.fired and fired is None:
            fired = (t, verdict.members)
    assert fired == (3, ("1",))                    # class 1: 1.5 a check; 4.5 > 3 at the third fall
    assert state.members["0"].accumulated == 0.0


def test_detrended_noise_is_combined_with_the_standard_error():
    rule = Rule("collapse/heldout_real/acc", sigmas=2.0, noise="detrended", baseline="best", baseline_checks=3)
    state = RuleState(rule)
    for v in (0.80, 0.83, 0.86, 0.89):
        state.judge(v, 0.01)
    assert state.noise_unit(0.01) == pytest.approx(0.01, abs=1e-9)   # a straight line: the standard error only
    assert rule.stderr_key == "collapse/heldout_real/acc_stderr"


# -- settings --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [dict(accumulate="sum", sigmas=3.0), dict(accumulate="cusum", threshold=0.5),
                                    dict(accumulate="cusum", sigmas=3.0, allowance=-1.0),
                                    dict(accumulate="ewma", sigmas=3.0, smoothing=0.0),
                                    dict(accumulate="ewma", sigmas=3.0, smoothing=1.5)])
def test_bad_accumulation_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        Rule(KEY, **kwargs)


def test_bools_are_refused_as_accumulation_numbers():
    with pytest.raises((TypeError, ValueError)):
        Rule(KEY, sigmas=3.0, accumulate="cusum", allowance=True)


def test_the_repr_of_rules_without_accumulation_is_unchanged():
    # a guard's checkpoint key is made of its rules' repr: rules saved before round 3 must keep theirs
    text = repr(Rule(KEY, sigmas=3.5, baseline="zero"))
    assert "accumulate" not in text and "allowance" not in text and "smoothing" not in text
    assert "accumulate='cusum'" in repr(cusum())
    for rule in default_rules():
        if rule.accumulate is None:
            assert "accumulate" not in repr(rule)


def test_summary_shows_accumulation_only_where_set():
    plain = RuleState(Rule(KEY, sigmas=3.0, baseline="zero")).summary()
    assert "accumulate" not in plain and "allowance" not in plain
    summary = RuleState(cusum()).summary()
    assert summary["accumulate"] == "cusum" and summary["allowance"] == 0.5
