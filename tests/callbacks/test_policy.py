"""The one decision policy of both guards (``callbacks/policy.py``), without a Trainer: strongest action, cooldown,
non-finite values, escalation, injection size; and the guards' events under their new and old field names."""
from __future__ import annotations

import math
import warnings

import pytest

from collapse_guard import GuardEvent
from collapse_guard.callbacks.policy import EXHAUSTED, PERSISTS, Decision, RuleBook, decide, inject_size
from collapse_guard.callbacks.rules import Rule, RuleState, Verdict
from collapse_guard.loop.guard import GenerationEvent

ACC = "collapse/heldout_real/acc"


def fired(action=None, non_finite="stop", value=0.1) -> Verdict:
    """A verdict that fires: ``value`` below a 0.5 threshold (NaN: the rule's ``non_finite``)."""
    return RuleState(Rule(ACC, threshold=0.5, action=action, non_finite=non_finite)).judge(value)


def quiet() -> Verdict:
    return RuleState(Rule(ACC, threshold=0.5)).judge(0.9)


ROOM = dict(max_injections=2, real_fraction=0.5, real_fraction_step=0.25, inject_fraction=0.5, reserve_size=10,
            reserve_remaining=10)


def test_nothing_fired_is_ok():
    assert decide([quiet()], "inject", **ROOM) == Decision("ok")
    assert decide([], "stop") == Decision("ok")


def test_the_strongest_action_of_the_fired_verdicts_wins():
    assert decide([fired("warn"), quiet()], "inject", **ROOM).action == "warn"
    decision = decide([fired("warn"), fired("stop"), fired()], "inject", **ROOM)
    assert (decision.action, decision.asked, len(decision.fired)) == ("stop", "stop", 3)
    # a rule without an action takes the guard's default
    assert decide([fired()], "warn", **ROOM).action == "warn"


@pytest.mark.parametrize("default", ["warn", "inject"])
def test_a_nan_value_stops_whatever_the_rule_and_guard_ask(default):
    verdict = fired(action=default, value=math.nan)
    assert verdict.non_finite and verdict.action == "stop"
    assert decide([verdict], default, **ROOM).action == "stop"


def test_non_finite_asks_for_its_own_action():
    assert decide([fired("stop", non_finite="warn", value=math.inf)], "stop", **ROOM).action == "warn"
    ignored = fired(non_finite="ignore", value=math.nan)
    assert not ignored.fired and decide([ignored], "stop", **ROOM).action == "ok"


def test_a_cooldown_holds_every_action_but_a_non_finite_one():
    held = decide([fired("stop")], "inject", cooldown_left=1, **ROOM)
    assert (held.action, held.cooling) == ("ok", True)
    assert decide([quiet()], "inject", cooldown_left=2, **ROOM).cooling
    urgent = decide([fired("warn"), fired(value=math.nan)], "inject", cooldown_left=3, **ROOM)
    assert (urgent.action, urgent.cooling) == ("stop", False)


def test_inject_raises_the_real_fraction_and_sizes_the_injection():
    decision = decide([fired("inject")], "warn", **ROOM)
    assert (decision.action, decision.real_fraction, decision.samples) == ("inject", 0.75, 5)
    capped = decide([fired("inject")], "warn", **{**ROOM, "real_fraction": 0.9, "reserve_remaining": 3})
    assert (capped.real_fraction, capped.samples) == (1.0, 3)
    # an earlier injection's floor is raised, not the share of the data just judged
    floored = decide([fired("inject")], "warn", **{**ROOM, "real_fraction": 0.0}, real_fraction_floor=0.5)
    assert floored.real_fraction == 0.75
    assert decide([fired("inject")], "warn", **{**ROOM, "max_real_fraction": 0.6}).real_fraction == 0.6


def test_inject_escalates_to_stop():
    persists = decide([fired("inject")], "warn", **{**ROOM, "injections": 2})
    assert (persists.action, persists.asked, persists.escalated) == ("stop", "inject", PERSISTS)
    spent = decide([fired("inject")], "warn", **{**ROOM, "real_fraction": 1.0, "reserve_remaining": 0})
    assert (spent.action, spent.escalated) == ("stop", EXHAUSTED)
    # no reserve but a real fraction that can still rise: inject the fraction only
    fraction_only = decide([fired("inject")], "warn", **{**ROOM, "reserve_size": 0, "reserve_remaining": 0})
    assert (fraction_only.action, fraction_only.samples, fraction_only.real_fraction) == ("inject", 0, 0.75)


def test_inject_size():
    assert inject_size(0.5, reserve_size=15, reserve_remaining=15) == 8  # round(7.5), banker's rounding: 8
    assert inject_size(0.01, reserve_size=15, reserve_remaining=15) == 1  # at least one
    assert inject_size(0.5, reserve_size=15, reserve_remaining=2) == 2
    assert inject_size(0.5, reserve_size=0, reserve_remaining=0) == 0


def test_rule_book_decides_with_its_own_state_and_changes_nothing():
    class Book(RuleBook):
        event_type = GuardEvent
        rules = [Rule(ACC, threshold=0.5)]
        action, cooldown, max_injections, inject_fraction, real_fraction_step = "inject", 1, 1, 0.5, 0.5

    book = Book()
    book.reset_book()
    verdicts = [s.judge(0.1) for s in book.states]
    assert book.decide(verdicts, real_fraction=0.2, reserve_size=4, reserve_remaining=4).real_fraction == 0.7
    book.injections = 1
    assert book.decide(verdicts, real_fraction=0.2).escalated == PERSISTS
    book.acted()
    assert book.decide(verdicts, real_fraction=0.2).cooling and book.cooldown_left == 1


@pytest.mark.parametrize("event_type, extra", [
    (GuardEvent, dict(epoch=1, global_step=8)),
    (GenerationEvent, dict(generation=2, real_fraction_before=0.0, real_fraction_after=0.5)),
])
def test_events_hold_the_bound_and_load_from_old_checkpoints(event_type, extra):
    event = event_type(rule="acc", monitor=ACC, value=0.4, bound=0.5, action="stop", reason="r", rules=("acc",),
                       **extra)
    with pytest.warns(DeprecationWarning, match="bound"):
        assert event.threshold == 0.5
    assert event_type.from_state(event.state_dict()) == event
    old = {("threshold" if k == "bound" else k): v for k, v in event.state_dict().items()}
    assert "threshold" in old and event_type.from_state(old) == event
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert event.bound == 0.5  # the new name warns nothing
