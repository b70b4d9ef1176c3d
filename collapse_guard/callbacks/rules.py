"""Rules over logged indicators: a bound (absolute, relative to a baseline, or a number of standard errors below
it), ``min_change``, ``margin`` and ``patience``.

A rule holds no Lightning objects: ``RuleState.judge(value)`` takes a number and returns a verdict with its
reason, so rules are tested and reused without a Trainer. What a guard does with the verdicts is
:mod:`collapse_guard.callbacks.policy`.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Optional

from collapse_guard._numbers import check_count, check_real

ACTIONS = ("warn", "inject", "stop")
NON_FINITE = ACTIONS + ("ignore",)
MODES = ("max", "min")
BASELINES = ("best", "first")


@dataclass(frozen=True)
class Rule:
    """When a logged indicator counts as collapsing.

    Args:
        monitor: the logged metric key, e.g. ``"collapse/heldout_real/acc"``.
        mode: ``"max"`` when higher is healthy (accuracy, recall: collapse makes it fall below the bound);
            ``"min"`` when lower is healthy (loss, gap: collapse makes it rise above the bound).
        threshold: absolute bound, in the metric's units.
        relative: bound relative to the baseline: ``baseline * (1 - relative)`` for ``"max"``,
            ``baseline * (1 + relative)`` for ``"min"`` (``relative`` in ``(0, 1]`` is a share of the baseline's
            magnitude).
        sigmas: bound in units of the indicator's own noise: ``baseline - sigmas * se`` for ``"max"``
            (``+`` for ``"min"``), ``se`` being the standard error logged with the value at this check (under
            ``stderr``). A fall that the evaluation set's size cannot tell from noise never fires, and the same
            rule carries over from a large, easy held-out set to a small, hard one. ``HeldOutRealCheck`` logs
            ``collapse/heldout_real/acc_stderr`` and ``worst_class_recall_stderr`` (binomial standard errors).
            With several of ``threshold``, ``relative`` and ``sigmas``, the stricter bound applies.
        stderr: the logged key of the standard error for ``sigmas``; default ``monitor + "_stderr"``.
        baseline: ``"best"``: the best value of the earlier checks; ``"first"``: the mean of the first
            ``baseline_checks`` checks.
        baseline_checks: checks taken before a relative rule is armed (warm-up), ``>= 1``.
        min_change: the smallest change from the baseline that counts, in the metric's units, ``>= 0`` (needs
            ``relative`` or ``sigmas``): a baseline-relative bound closer to the baseline than this is moved out
            to ``baseline - min_change`` (``+`` for ``"min"``). With ``sigmas`` a fall must then be both beyond the
            noise and at least ``min_change`` large: statistical and practical significance. Use it when the
            held-out set is large (its standard error small), so that falls too small to matter do not fire;
            e.g. ``sigmas=2, min_change=0.01``: at least 2 standard errors and at least 1 accuracy point.
        margin: how far beyond the bound a value must lie to count as a violation, in the metric's units, ``>= 0``
            (added to any bound: with ``sigmas``, a fall must exceed ``sigmas * se + margin``). Not
            ``EarlyStopping``'s ``min_delta`` (the smallest change that counts as an improvement): ``min_delta=``
            is still accepted here as a deprecated alias of ``margin``.
        patience: consecutive violating checks before the rule fires, ``>= 1`` (as ``EarlyStopping``'s).
        action: ``"warn"``, ``"inject"`` or ``"stop"``; ``None`` takes the guard's default action.
        name: short name for events; default: the monitor key.
        non_finite: what a NaN or infinite value does, as ``EarlyStopping(check_finite=True)``: ``"stop"``
            (default: it fires at once, whatever the patience, and the guard stops training, even in a cooldown:
            a diverged model or check is not something fresh real data fixes), ``"warn"`` or ``"inject"`` (fires
            at once with that action), or ``"ignore"`` (the value is skipped: a verdict that does not fire, no state
            change).

    Raises:
        ValueError: for an unknown mode, baseline, action or ``non_finite``, no bound given, out-of-range numbers,
            or a number of the wrong kind: a bool, a str, NaN (any number), an infinite one (but ``threshold``),
            a non-integer ``patience`` or ``baseline_checks`` (``1.5``).
        TypeError: a ``monitor`` that is not a non-empty str; a ``stderr`` or ``name`` neither a non-empty str nor
            ``None``.

    Example::

        Rule("collapse/heldout_real/worst_class_recall", mode="max", relative=0.15, patience=2)
        # 1.5 standard errors of the held-out accuracy below its best, two checks running
        Rule("collapse/heldout_real/acc", mode="max", sigmas=1.5, patience=2)
        # ... and never for a fall of less than 2 accuracy points, however large the held-out set
        Rule("collapse/heldout_real/acc", mode="max", sigmas=1.5, min_change=0.02, patience=2)
    """

    monitor: str
    mode: str = "max"
    threshold: Optional[float] = None
    relative: Optional[float] = None
    sigmas: Optional[float] = None
    stderr: Optional[str] = None
    baseline: str = "best"
    baseline_checks: int = 1
    min_change: float = 0.0
    margin: float = 0.0
    patience: int = 1
    action: Optional[str] = None
    name: Optional[str] = None
    non_finite: str = "stop"

    def __post_init__(self) -> None:
        self._check_types()
        if self.mode not in MODES:
            raise ValueError(f"Rule({self.monitor!r}): `mode` must be one of {MODES}, got {self.mode!r}.")
        if self.baseline not in BASELINES:
            raise ValueError(f"Rule({self.monitor!r}): `baseline` must be one of {BASELINES}, got {self.baseline!r}.")
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"Rule({self.monitor!r}): `action` must be one of {ACTIONS}, got {self.action!r}.")
        if self.non_finite not in NON_FINITE:
            raise ValueError(
                f"Rule({self.monitor!r}): `non_finite` must be one of {NON_FINITE}, got {self.non_finite!r}."
            )
        if self.threshold is None and self.relative is None and self.sigmas is None:
            raise ValueError(
                f"Rule({self.monitor!r}): give a bound: a `threshold`, a `relative` bound or `sigmas` (or several)."
            )
        if self.sigmas is not None and not (math.isfinite(self.sigmas) and self.sigmas > 0):
            raise ValueError(f"Rule({self.monitor!r}): `sigmas` must be a positive number, got {self.sigmas!r}.")
        if self.stderr is not None and self.sigmas is None:
            raise ValueError(f"Rule({self.monitor!r}): `stderr` is read only for a `sigmas` bound; give `sigmas` too.")
        if self.relative is not None and not 0.0 < self.relative <= 1.0:
            raise ValueError(f"Rule({self.monitor!r}): `relative` must be in (0, 1], got {self.relative!r}.")
        if not (math.isfinite(self.min_change) and self.min_change >= 0):
            raise ValueError(
                f"Rule({self.monitor!r}): `min_change` must be a finite number >= 0, got {self.min_change!r}."
            )
        if self.min_change and self.relative is None and self.sigmas is None:
            raise ValueError(
                f"Rule({self.monitor!r}): `min_change` widens a bound relative to the baseline; give `relative` or "
                "`sigmas` too (for an absolute `threshold`, lower the threshold instead)."
            )
        if self.patience < 1 or self.baseline_checks < 1 or not self.margin >= 0:
            raise ValueError(
                f"Rule({self.monitor!r}): `patience` and `baseline_checks` must be >= 1, `margin` >= 0; got "
                f"patience={self.patience!r}, baseline_checks={self.baseline_checks!r}, margin={self.margin!r}."
            )

    def _check_types(self) -> None:
        """Strings where strings are expected; numbers (not bools, not NaN) where numbers are."""
        if not isinstance(self.monitor, str) or not self.monitor:
            raise TypeError(f"Rule: `monitor` must be a logged metric key (a non-empty str), got {self.monitor!r}.")
        owner = f"Rule({self.monitor!r}): "
        for argument in ("stderr", "name"):
            value = getattr(self, argument)
            if value is not None and not (isinstance(value, str) and value):
                raise TypeError(f"{owner}`{argument}` must be a non-empty str or None, got {value!r}.")
        check_real(self.threshold, "threshold", allow_infinite=True, optional=True, owner=owner)
        for argument in ("relative", "sigmas"):
            check_real(getattr(self, argument), argument, optional=True, owner=owner)
        for argument in ("min_change", "margin"):
            check_real(getattr(self, argument), argument, owner=owner)
        for argument in ("patience", "baseline_checks"):
            check_count(getattr(self, argument), argument, optional=False, owner=owner)

    def __repr__(self) -> str:
        # ``min_change`` is shown only when set: a guard's ``state_key`` holds its rules' repr, and checkpoints
        # saved before ``min_change`` existed must still find their guard's state
        shown = (f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if f.name != "min_change" or self.min_change)
        return f"{type(self).__name__}({', '.join(shown)})"

    def legacy_repr(self) -> str:
        """The repr this rule had before ``min_delta`` was renamed ``margin`` (the ``state_key`` of guards saved in
        older checkpoints is made of it)."""
        return repr(self).replace(", margin=", ", min_delta=", 1)

    @property
    def min_delta(self) -> float:
        """Deprecated alias of :attr:`margin`."""
        warnings.warn("`Rule.min_delta` is deprecated: read `Rule.margin`.", DeprecationWarning, stacklevel=2)
        return self.margin

    @property
    def label(self) -> str:
        return self.name or self.monitor

    @property
    def stderr_key(self) -> Optional[str]:
        """The logged key of the standard error a ``sigmas`` bound reads (``None`` without ``sigmas``)."""
        if self.sigmas is None:
            return None
        return self.stderr or f"{self.monitor}_stderr"


@dataclass
class Verdict:
    """The outcome of one check of one rule.

    ``action`` overrides the rule's action for this verdict (a non-finite value's ``Rule.non_finite``);
    ``non_finite`` tells such a verdict apart.
    """

    rule: Rule
    value: float
    bound: Optional[float]
    violated: bool
    fired: bool
    reason: str
    action: Optional[str] = None
    non_finite: bool = False


@dataclass
class RuleState:
    """The running state of a :class:`Rule`: baseline, best value, consecutive violations (checkpointed)."""

    rule: Rule
    checks: int = 0
    first_values: list = field(default_factory=list)
    best: Optional[float] = None
    wait: int = 0
    #: the standard error given with the last judged value (what a ``sigmas`` bound was measured in)
    last_stderr: Optional[float] = None

    def baseline(self) -> Optional[float]:
        if self.rule.baseline == "first":
            if len(self.first_values) < self.rule.baseline_checks:
                return None
            return sum(self.first_values) / len(self.first_values)
        return self.best if self.checks >= self.rule.baseline_checks else None

    def bound(self, stderr: Optional[float] = None) -> Optional[float]:
        """The bound in force now (``None`` while a rule with only baseline-relative bounds warms up).

        Args:
            stderr: the standard error logged with the value being judged, for a ``sigmas`` bound (``None`` or
                not finite: no ``sigmas`` bound at this check).
        """
        rule, bounds = self.rule, []
        if rule.threshold is not None:
            bounds.append(rule.threshold)
        base = self.baseline()
        sign = -1.0 if rule.mode == "max" else 1.0
        if rule.relative is not None and base is not None:
            bounds.append(base + sign * rule.relative * abs(base))
        if rule.sigmas is not None and base is not None and stderr is not None and math.isfinite(stderr):
            bounds.append(base + sign * rule.sigmas * abs(stderr))
        if not bounds:
            return None
        bound = max(bounds) if rule.mode == "max" else min(bounds)
        if rule.min_change and base is not None:  # no closer to the baseline than min_change
            floor = base + sign * rule.min_change
            bound = min(bound, floor) if rule.mode == "max" else max(bound, floor)
        return bound

    def judge(self, value: float, stderr: Optional[float] = None) -> Verdict:
        """Judge one new value; updates the state and returns the verdict with its reason.

        ``stderr`` is the standard error logged with ``value`` (read by a ``sigmas`` bound; ignored otherwise).

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
            reason = (
                f"{rule.monitor} = {value} is not finite ({best}): the model or the check diverged"
            )
            return Verdict(rule, value, self.bound(stderr), True, True, reason, action=rule.non_finite, non_finite=True)
        bound = self.bound(stderr)
        if bound is None:
            violated = False
            reason = f"{rule.monitor} = {value:.4f}: baseline warming up ({self.checks + 1}/{rule.baseline_checks})"
        else:
            if rule.mode == "max":
                violated = value < bound - rule.margin
                relation = "below" if violated else "at or above"
            else:
                violated = value > bound + rule.margin
                relation = "above" if violated else "at or below"
            base = self.baseline()
            against = ""
            if base is not None and (rule.relative is not None or rule.sigmas is not None):
                against = f" ({rule.baseline} baseline {base:.4f}"
                if rule.sigmas is not None and stderr is not None and math.isfinite(stderr):
                    against += f"; {rule.sigmas:g} x standard error {abs(stderr):.4f}"
                if rule.min_change and bound == base + (-1.0 if rule.mode == "max" else 1.0) * rule.min_change:
                    against += f"; at least min_change {rule.min_change:g} from it"
                against += ")"
            reason = f"{rule.monitor} = {value:.4f} {relation} bound {bound:.4f}{against}"
        self.wait = self.wait + 1 if violated else 0
        fired = violated and self.wait >= rule.patience
        if violated:
            reason += f", {self.wait}/{rule.patience} consecutive checks"
        # update the baseline after judging, so a value is never compared with itself
        self.checks += 1
        if len(self.first_values) < rule.baseline_checks:
            self.first_values.append(value)
        if self.best is None or (value > self.best if rule.mode == "max" else value < self.best):
            self.best = value
        return Verdict(rule, value, bound, violated, fired, reason)

    def check(self, value: float, stderr: Optional[float] = None) -> Verdict:
        """Deprecated alias of :meth:`judge`."""
        warnings.warn("`RuleState.check` is deprecated: call `RuleState.judge`.", DeprecationWarning, stacklevel=2)
        return self.judge(value, stderr)

    def summary(self) -> dict:
        """The rule and where it stands, as plain data: its name and settings (``stderr``: the logged key a
        ``sigmas`` bound reads), ``state`` (:meth:`state_dict`), ``baseline_value`` (:meth:`baseline`) and
        ``bound`` (the bound in force for the last standard error judged)."""
        rule = self.rule
        record = {"name": rule.label, **{f.name: getattr(rule, f.name) for f in fields(rule) if f.name != "name"}}
        record["stderr"] = rule.stderr_key
        record.update(state=self.state_dict(), baseline_value=self.baseline(), bound=self.bound(self.last_stderr))
        return record

    def reset_wait(self) -> None:
        """After an action: count violations afresh (the action needs an epoch to take effect)."""
        self.wait = 0

    def state_dict(self) -> dict:
        return {"checks": self.checks, "first_values": list(self.first_values), "best": self.best, "wait": self.wait,
                "last_stderr": self.last_stderr}

    def load_state_dict(self, state: dict) -> None:
        self.checks = state["checks"]
        self.first_values = list(state["first_values"])
        self.best = state["best"]
        self.wait = state["wait"]
        self.last_stderr = state.get("last_stderr")


def default_rules(min_change: float = 0.0) -> list[Rule]:
    """The rules ``CollapseGuard()`` uses when given none.

    * held-out real accuracy more than 2 standard errors below its best so far, two checks running;
    * worst-class recall on held-out real more than 2 standard errors (of that class's recall, on its support)
      below its best so far, two checks running (the tail a collapsing model loses first);
    * effective number of predicted classes more than 5% below its best so far, two checks running;
    * held-out real loss not finite (:func:`heldout_loss_rule`): stop at the first such check. Its bound is
      ``threshold=inf``, which no finite loss crosses: it never fires on a finite loss, so it changes no detection
      figure; it catches a model that diverged (NaN or infinite outputs) while accuracy and recall stay finite.

    The first three are relative to the best value so far, so the rising values of early training never fire them. The
    first two are in units of the held-out set's own binomial noise (``collapse/heldout_real/*_stderr``), so they
    ask for a larger fall on a small or hard held-out set than on a large, easy one: a fixed share (the first
    defaults were 2% and 10%) fired on every healthy run of the text benchmark, whose held-out noise is three
    times the digits'. 2 standard errors and patience 2 were chosen on the detection benchmark's seeds 0-5 and
    checked on seeds 6-8 (``benchmarks/RESULTS.md``; 1.5, chosen on seeds 0-2 alone, false-alarmed on 7 of 24
    healthy runs of seeds 3-5).

    Args:
        min_change: the smallest fall of held-out accuracy and of worst-class recall that fires, in ``[0, 1]``
            (``Rule.min_change``; default 0: the noise alone decides). 2 standard errors of a large held-out set
            are a small fall (0.4 points for 10,000 samples at 95% accuracy); ``0.01`` asks for 1 point as well.

    Raises:
        ValueError: for a ``min_change`` that is negative or not finite.

    Example::

        guard = CollapseGuard(rules=default_rules(min_change=0.01))
    """
    return [
        Rule("collapse/heldout_real/acc", mode="max", sigmas=2.0, min_change=min_change, patience=2,
             name="heldout_real_acc"),
        Rule("collapse/heldout_real/worst_class_recall", mode="max", sigmas=2.0, min_change=min_change, patience=2,
             name="worst_class"),
        Rule("collapse/heldout_real/eff_classes_ratio", mode="max", relative=0.05, patience=2, name="eff_classes"),
        heldout_loss_rule(),
    ]


def heldout_loss_rule() -> Rule:
    """The default rule on the held-out real loss: it fires only on a NaN or infinite loss, and stops training.

    ``mode="min"`` with ``threshold=inf``: no finite loss lies above the bound, so only ``non_finite="stop"`` acts
    (at the first check, whatever the guard's default action or cooldown). The last of :func:`default_rules`;
    added after the first three, so a default guard checkpointed before it existed still finds its state
    (``CollapseGuard`` looks its state up under the key of its rules without this one, too).

    Example::

        >>> heldout_loss_rule().name
        'heldout_real_loss'
    """
    return Rule("collapse/heldout_real/loss", mode="min", threshold=math.inf, patience=1, name="heldout_real_loss",
                non_finite="stop")


def _accept_min_delta(init):
    """``Rule(min_delta=...)``: the deprecated name of ``margin``, still accepted (with a DeprecationWarning)."""

    @functools.wraps(init)
    def __init__(self, *args, min_delta: Optional[float] = None, **kwargs) -> None:
        if min_delta is not None:
            check_real(min_delta, "min_delta", owner="Rule: ")
            warnings.warn("`Rule(min_delta=...)` is deprecated: pass `margin=` (how far beyond the bound a value must "
                          "lie; not EarlyStopping's min_delta).", DeprecationWarning, stacklevel=2)
            if "margin" in kwargs:
                raise ValueError("Rule: give `margin` or its deprecated alias `min_delta`, not both.")
            kwargs["margin"] = min_delta
        init(self, *args, **kwargs)

    return __init__


Rule.__init__ = _accept_min_delta(Rule.__init__)  # type: ignore[method-assign]
