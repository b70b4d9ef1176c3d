"""The running state of a :class:`~collapse_guard.callbacks.rules.Rule` and its verdicts.

:class:`RuleState` keeps what a rule has seen (the values judged, its baseline, patience counter; one state per
member for a family rule) and judges new values: :meth:`RuleState.judge` one value, :meth:`RuleState.judge_row` a
dict of logged values (what ``CollapseGuard``, ``GenerationGuard`` and the benchmarks' replays all call).
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field, fields
from typing import Mapping, Optional

from collapse_guard.callbacks.noise import (accumulate, accumulation_units, best_level, check_to_check_sigma,
                                            combined_sigma, detrended_sigma)
from collapse_guard.callbacks.rules import Rule


@dataclass
class Verdict:
    """The outcome of one check of one rule.

    ``action`` overrides the rule's action for this verdict (a non-finite value's ``Rule.non_finite``);
    ``non_finite`` tells such a verdict apart. For a family rule, ``member`` names the member the value and bound
    are of (the first that fired, else the one nearest its bound) and ``members`` every member that fired.
    """

    rule: Rule
    value: float
    bound: Optional[float]
    violated: bool
    fired: bool
    reason: str
    action: Optional[str] = None
    non_finite: bool = False
    member: Optional[str] = None
    members: tuple = ()

    @property
    def label(self) -> str:
        """The rule's name, with the member for a family (``"class 3"``)."""
        return f"{self.rule.label} {self.member}" if self.member is not None else self.rule.label

    @property
    def monitor(self) -> str:
        """The logged key the value is of (the member's key for a family rule)."""
        return self.rule.member_key(self.member) if self.member is not None else self.rule.monitor


def natural_order(name: str) -> tuple:
    """Sort key putting ``"2"`` before ``"10"``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def beyond(rule: Rule, value: float, bound: float) -> bool:
    """Whether ``value`` violates ``bound``: beyond it by more than ``rule.margin`` on the bad side of ``rule.mode``
    (below for ``"max"``, above for ``"min"``); both in the metric's units.

    Example::

        >>> beyond(Rule("acc", mode="max", threshold=0.5), 0.4, 0.5)
        True
    """
    return value < bound - rule.margin if rule.mode == "max" else value > bound + rule.margin


def _accumulation_parameter(rule: Rule) -> float:
    """``Rule.accumulate``'s parameter: the CUSUM's allowance ``k`` or the EWMA's weight ``λ``."""
    return rule.allowance if rule.accumulate == "cusum" else rule.smoothing

@dataclass
class RuleState:
    """The running state of a :class:`Rule`: the values judged, baseline, best value, consecutive violations
    (checkpointed); for a family rule, one state per member (:attr:`members`)."""

    rule: Rule
    checks: int = 0
    first_values: list = field(default_factory=list)
    best: Optional[float] = None
    wait: int = 0
    #: the standard error given with the last judged value (what a ``sigmas`` bound was measured in)
    last_stderr: Optional[float] = None
    #: the finite values judged, in order (the check-to-check noise and the ``"level"`` baseline read them)
    values: list = field(default_factory=list)
    #: a family rule's member states, by member name
    members: dict = field(default_factory=dict)
    #: ``Rule.accumulate``'s statistic after the last check (the CUSUM's ``S`` or the EWMA's ``Z``; 0 before)
    accumulated: float = 0.0

    def baseline(self) -> Optional[float]:
        """The baseline in force (``None`` while warming up, and for a family rule, whose members have their own)."""
        rule = self.rule
        if rule.baseline == "first":
            if len(self.first_values) < rule.baseline_checks:
                return None
            return sum(self.first_values) / len(self.first_values)
        if self.checks < rule.baseline_checks:
            return None
        if rule.baseline == "zero":  # the value is a change from a reference already
            return 0.0
        return best_level(self.values, rule.mode) if rule.baseline == "level" else self.best

    def noise_unit(self, stderr: Optional[float] = None) -> Optional[float]:
        """The unit of a ``sigmas`` bound now, by ``Rule.noise`` (``None``: not known yet).

        Args:
            stderr: the standard error logged with the value being judged (``None`` or NaN: not known).
        """
        se = abs(stderr) if stderr is not None and math.isfinite(stderr) else None
        if self.rule.noise == "stderr":
            return se
        movement = self._movement()
        return movement if self.rule.noise == "checks" else combined_sigma(se, movement)

    def _movement(self) -> Optional[float]:
        """The check-to-check part of the unit, by ``Rule.noise``: around the trend (``"detrended"``), else the
        moving range; ``None`` for ``"stderr"`` (no such part) or too few checks."""
        if self.rule.noise == "stderr":
            return None
        return (detrended_sigma if self.rule.noise == "detrended" else check_to_check_sigma)(self.values)

    def units(self) -> Optional[float]:
        """The noise units of the ``sigmas`` bound at this check: ``Rule.sigmas``, or with ``Rule.accumulate`` the
        units this check's fall must reach for the accumulated statistic to pass ``sigmas``
        (:func:`~collapse_guard.callbacks.noise.accumulation_units`)."""
        rule = self.rule
        if rule.sigmas is None or rule.accumulate is None:
            return rule.sigmas
        return accumulation_units(rule.accumulate, self.accumulated, rule.sigmas, _accumulation_parameter(rule))

    def _accumulate(self, value: float, stderr: Optional[float]) -> None:
        """Add this check's fall in noise units to ``Rule.accumulate``'s statistic (before the value joins the
        history; nothing while the baseline warms up; a unit not known or 0 counts as no fall)."""
        rule = self.rule
        base = self.baseline()
        if rule.accumulate is None or base is None:
            return
        unit = self.noise_unit(stderr)
        fall = (base - value if rule.mode == "max" else value - base) / unit if unit else 0.0
        self.accumulated = accumulate(rule.accumulate, self.accumulated, fall, _accumulation_parameter(rule))

    def bound(self, stderr: Optional[float] = None) -> Optional[float]:
        """The bound in force now (``None`` while a rule with only baseline-relative bounds warms up).

        Args:
            stderr: the standard error logged with the value being judged, for a ``sigmas`` bound (``None`` or
                not finite: no standard error in the unit at this check).
        """
        rule, bounds = self.rule, []
        if rule.threshold is not None:
            bounds.append(rule.threshold)
        base = self.baseline()
        sign = -1.0 if rule.mode == "max" else 1.0
        if rule.relative is not None and base is not None:
            bounds.append(base + sign * rule.relative * abs(base))
        unit = self.noise_unit(stderr) if rule.sigmas is not None else None
        if rule.sigmas is not None and base is not None and unit is not None:
            bounds.append(base + sign * self.units() * unit)
        if not bounds:
            return None
        bound = max(bounds) if rule.mode == "max" else min(bounds)
        if rule.min_change and base is not None:  # no closer to the baseline than min_change
            floor = base + sign * rule.min_change
            bound = min(bound, floor) if rule.mode == "max" else max(bound, floor)
        return bound

    def _against(self, bound: float, stderr: Optional[float]) -> str:
        """What a baseline-relative bound was measured against, in words."""
        rule, base = self.rule, self.baseline()
        if base is None or (rule.relative is None and rule.sigmas is None):
            return ""
        against = f" ({rule.baseline} baseline {base:.4f}"
        unit = self.noise_unit(stderr) if rule.sigmas is not None else None
        if unit is not None:
            se = abs(stderr) if stderr is not None and math.isfinite(stderr) else None
            movement = self._movement()
            parts = [f"standard error {se:.4f}"] if se is not None else []
            parts += [f"check-to-check {movement:.4f}"] if movement is not None else []
            against += f"; {self.units():g} x noise {unit:.4f}" + (f" ({' and '.join(parts)})" if parts else "")
            if rule.accumulate is not None:
                against += (f"; {rule.accumulate.upper()} {self.accumulated:.2f} before this check, limit "
                            f"{rule.sigmas:g}")
        if rule.min_change and bound == base + (-1.0 if rule.mode == "max" else 1.0) * rule.min_change:
            against += f"; at least min_change {rule.min_change:g} from it"
        return against + ")"

    def judge(self, value: float, stderr: Optional[float] = None) -> Verdict:
        """Judge one new value; updates the state and returns the verdict with its reason.

        ``stderr`` is the standard error logged with ``value`` (read by a ``sigmas`` bound with noise ``"stderr"``
        or ``"combined"``; ignored otherwise).

        A non-finite value never enters the baseline; it fires at once with ``rule.non_finite`` as the verdict's
        ``action``, or, when that is ``"ignore"``, gives a verdict that neither violates nor fires and leaves the
        state as it was.
        """
        rule = self.rule
        if stderr is not None and math.isfinite(stderr):
            self.last_stderr = float(stderr)
        if not math.isfinite(value):
            if rule.non_finite == "ignore":
                reason = f"{rule.monitor} = {value} is not finite: ignored (non_finite='ignore')"
                return Verdict(rule, value, self.bound(stderr), False, False, reason, non_finite=True)
            self.wait = rule.patience
            best = f"best so far {self.best:.4f}" if self.best is not None else "no finite value yet"
            reason = f"{rule.monitor} = {value} is not finite ({best}): the model or the check diverged"
            return Verdict(rule, value, self.bound(stderr), True, True, reason, action=rule.non_finite, non_finite=True)
        bound = self.bound(stderr)
        if bound is None:
            violated = False
            reason = f"{rule.monitor} = {value:.4f}: baseline warming up ({self.checks + 1}/{rule.baseline_checks})"
        else:
            violated = beyond(rule, value, bound)
            if rule.mode == "max":
                relation = "below" if violated else "at or above"
            else:
                relation = "above" if violated else "at or below"
            reason = f"{rule.monitor} = {value:.4f} {relation} bound {bound:.4f}{self._against(bound, stderr)}"
        self.wait = self.wait + 1 if violated else 0
        fired = violated and self.wait >= rule.patience
        if violated:
            reason += f", {self.wait}/{rule.patience} consecutive checks"
        # update the baseline after judging, so a value is never compared with itself
        self._accumulate(value, stderr)
        self.checks += 1
        self.values.append(float(value))
        if len(self.first_values) < rule.baseline_checks:
            self.first_values.append(value)
        if self.best is None or (value > self.best if rule.mode == "max" else value < self.best):
            self.best = value
        return Verdict(rule, value, bound, violated, fired, reason)

    def judge_row(self, row: Mapping[str, float]) -> Optional[Verdict]:
        """Judge the values of one check, given as logged: ``{key: value}`` (the standard error under the rule's
        ``stderr`` key). ``None`` when ``row`` holds nothing this rule reads (no state change).

        A family rule judges every member in ``row`` against that member's own state (a new member starts its own
        baseline) and fires when any member fires.

        Example::

            >>> state = RuleState(Rule("acc", threshold=0.5))
            >>> state.judge_row({"acc": 0.4}).fired
            True
        """
        rule = self.rule
        if not rule.is_family:
            if rule.monitor not in row:
                return None
            stderr = row.get(rule.stderr_key) if rule.stderr_key is not None else None
            return self.judge(float(row[rule.monitor]), None if stderr is None else float(stderr))
        readings = self.member_readings(row)
        return self.judge_members(readings) if readings else None

    def member_readings(self, row: Mapping[str, float]) -> dict[str, tuple[float, Optional[float]]]:
        """A family rule's members in ``row``: ``{member: (value, its standard error or None)}`` (``{}`` for a rule
        on one key). What :meth:`judge_row` judges, read without judging.

        Example::

            >>> RuleState(Rule("recall/*", threshold=0.5)).member_readings({"recall/3": 0.4, "acc": 0.9})
            {'3': (0.4, None)}
        """
        rule, readings = self.rule, {}
        if not rule.is_family:
            return readings
        for key in row:
            name = rule.member_of(key)
            if name is not None:
                stderr_key = rule.member_stderr_key(name)
                stderr = row.get(stderr_key) if stderr_key is not None else None
                readings[name] = (float(row[key]), None if stderr is None else float(stderr))
        return readings

    def judge_members(self, readings: Mapping[str, tuple]) -> Verdict:
        """Judge a family rule's members at one check: ``{member: (value, stderr or None)}``."""
        rule = self.rule
        verdicts = {}
        for name in sorted(readings, key=natural_order):
            state = self.members.get(name)
            if state is None:
                state = self.members[name] = RuleState(rule.member(name))
            verdicts[name] = state.judge(*readings[name])
        self.checks += 1
        fired = [n for n, v in verdicts.items() if v.fired]
        violated = [n for n, v in verdicts.items() if v.violated]
        sign = 1.0 if rule.mode == "max" else -1.0

        def slack(n: str) -> float:  # how far inside its bound a member is (negative: beyond it)
            v = verdicts[n]
            return sign * (v.value - v.bound) if v.bound is not None and math.isfinite(v.value) else math.inf

        shown = sorted(fired, key=lambda n: not verdicts[n].non_finite) or violated or [min(verdicts, key=slack)]
        first = verdicts[shown[0]]
        if fired or violated:
            reason = "; ".join(f"{rule.label} {n}: {verdicts[n].reason}" for n in (fired or violated))
        else:
            reason = f"{rule.label}: {len(verdicts)} members within their bounds (nearest {shown[0]}: {first.reason})"
        return Verdict(rule, first.value, first.bound, bool(violated), bool(fired), reason, action=first.action,
                       non_finite=first.non_finite, member=shown[0], members=tuple(fired))

    def check(self, value: float, stderr: Optional[float] = None) -> Verdict:
        """Deprecated alias of :meth:`judge`."""
        warnings.warn("`RuleState.check` is deprecated: call `RuleState.judge`.", DeprecationWarning, stacklevel=2)
        return self.judge(value, stderr)

    def summary(self) -> dict:
        """The rule and where it stands, as plain data: its name and settings (``stderr``: the logged key a
        ``sigmas`` bound reads), ``state`` (:meth:`state_dict`), ``baseline_value`` (:meth:`baseline`), ``bound``
        (the bound in force for the last standard error judged) and, for a family, ``members`` (each member's
        summary)."""
        rule = self.rule
        skip = {"name"} | ({"accumulate", "allowance", "smoothing"} if rule.accumulate is None else set())
        record = {"name": rule.label, **{f.name: getattr(rule, f.name) for f in fields(rule) if f.name not in skip}}
        record["stderr"] = rule.stderr_key
        record.update(state=self.state_dict(), baseline_value=self.baseline(), bound=self.bound(self.last_stderr))
        if rule.is_family:
            record.update(baseline_value=None, bound=None,
                          members={n: s.summary() for n, s in self.members.items()})
        return record

    def reset_wait(self) -> None:
        """After an action: count violations afresh (the action needs an epoch to take effect); an accumulated
        statistic restarts at 0 (as a CUSUM does after a signal)."""
        self.wait = 0
        self.accumulated = 0.0
        for state in self.members.values():
            state.reset_wait()

    def state_dict(self) -> dict:
        state = {"checks": self.checks, "first_values": list(self.first_values), "best": self.best, "wait": self.wait,
                 "last_stderr": self.last_stderr, "values": list(self.values)}
        if self.rule.accumulate is not None:
            state["accumulated"] = self.accumulated
        if self.members:
            state["members"] = {n: s.state_dict() for n, s in self.members.items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (a state saved before ``values`` existed starts the check-to-check noise
        afresh; one saved without ``accumulated``, an accumulation at 0)."""
        self.checks = state["checks"]
        self.first_values = list(state["first_values"])
        self.best = state["best"]
        self.wait = state["wait"]
        self.last_stderr = state.get("last_stderr")
        self.values = list(state.get("values", []))
        self.accumulated = float(state.get("accumulated", 0.0))
        self.members = {}
        for name, saved in (state.get("members") or {}).items():
            self.members[name] = RuleState(self.rule.member(name))
            self.members[name].load_state_dict(saved)
