"""GenerationGuard on its own (no loop): the decision policy it shares with CollapseGuard, non-finite indicators,
the deprecated ``check`` name and checkpoints saved with the events' old ``threshold`` field."""
from __future__ import annotations

import json
import math

import pytest

from collapse_guard import Rule
from collapse_guard.loop.guard import GenerationGuard


def recall_guard(**kwargs) -> GenerationGuard:
    return GenerationGuard([Rule("recall", mode="max", relative=0.1, baseline="first")], **kwargs)


@pytest.mark.parametrize("action", ["warn", "inject"])
def test_a_nan_indicator_stops_the_loop(action):
    guard = recall_guard(action=action, real_fraction_step=0.5)
    guard.judge(0, {"recall": 0.9}, real_fraction=1.0)
    d = guard.judge(1, {"recall": math.nan}, real_fraction=0.0, reserve_size=10, reserve_remaining=10)
    assert (d.action, d.reserve_samples, d.real_fraction) == ("stop", 0, 0.0)
    assert guard.stopped and guard.injections == 0
    (event,) = guard.events
    assert event.action == "stop" and math.isnan(event.value)
    assert event.reason.startswith("recall = nan is not finite (best so far 0.9000): the model or the check diverged")
    assert event.reason.endswith("stopping the loop after generation 1")


def test_a_nan_indicator_stops_even_in_a_cooldown():
    guard = recall_guard(action="inject", cooldown=2, real_fraction_step=0.5)
    guard.judge(0, {"recall": 0.9}, real_fraction=1.0)
    assert guard.judge(1, {"recall": 0.5}, real_fraction=0.0).action == "inject"
    assert guard.judge(2, {"recall": 0.5}, real_fraction=0.5).action == "ok"  # cooldown
    assert guard.judge(3, {"recall": math.nan}, real_fraction=0.5).action == "stop"
    assert [(e.generation, e.action) for e in guard.events] == [(1, "inject"), (3, "stop")]


def test_a_nan_indicator_with_non_finite_ignore_is_skipped():
    guard = GenerationGuard([Rule("recall", relative=0.1, baseline="first", non_finite="ignore")])
    guard.judge(0, {"recall": 0.9}, real_fraction=1.0)
    assert guard.judge(1, {"recall": math.nan}, real_fraction=0.0).action == "ok"
    assert not guard.events and not guard.stopped


def test_check_is_a_deprecated_alias_of_judge():
    old, new = recall_guard(), recall_guard()
    with pytest.warns(DeprecationWarning, match="GenerationGuard.judge"):
        checked = [old.check(g, {"recall": r}, 0.0, 4, 4) for g, r in enumerate([0.9, 0.7])]
    judged = [new.judge(g, {"recall": r}, 0.0, 4, 4) for g, r in enumerate([0.9, 0.7])]
    assert [(d.action, d.real_fraction, d.reserve_samples) for d in checked] == [
        (d.action, d.real_fraction, d.reserve_samples) for d in judged] == [("ok", 0.0, 0), ("inject", 0.25, 2)]
    assert old.events == new.events and old.events[0].bound == pytest.approx(0.81)


def test_state_saved_with_the_old_threshold_field_loads():
    guard = recall_guard()
    guard.judge(0, {"recall": 0.9}, real_fraction=1.0)
    guard.judge(1, {"recall": 0.7}, real_fraction=0.0)
    state = json.loads(json.dumps(guard.state_dict()))  # JSON-ready
    for event in state["events"]:  # as a checkpoint written before the rename holds it
        event["threshold"] = event.pop("bound")
    restored = recall_guard()
    restored.load_state_dict(state)
    assert restored.events == guard.events and restored.real_fraction_floor == guard.real_fraction_floor == 0.25
    assert restored.judge(2, {"recall": 0.95}, real_fraction=0.25).action == "ok"
