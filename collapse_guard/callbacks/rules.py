"""Rules over logged indicators: a bound (absolute, relative to a baseline, or a number of noise units below it),
``min_change``, ``margin`` and ``patience``; a rule on one key, or on a family of keys (one per class), each
judged against its own history.

A rule holds no Lightning objects: ``RuleState.judge(value)`` (:mod:`collapse_guard.callbacks.rule_state`) takes a
number and returns a verdict with its reason, so rules are tested and reused without a Trainer. What a guard does
with the verdicts is :mod:`collapse_guard.callbacks.policy`; the noise model is :mod:`collapse_guard.callbacks.noise`.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, fields, replace
from typing import Optional

from collapse_guard._numbers import check_count, check_real
from collapse_guard.callbacks.noise import ACCUMULATIONS  # ``Rule.accumulate``: how falls add up over checks

#: what a rule may ask for, mildest first: ``"quarantine"`` drops the synthetic sources a family rule over sources
#: names (``collapse/source/acc_gap/*``, ``collapse/audit/missing_classes/*``) from the next epoch
ACTIONS = ("warn", "quarantine", "inject", "stop")
#: a guard's own (default) action: one that needs no source named
GUARD_ACTIONS = ("warn", "inject", "stop")
NON_FINITE = GUARD_ACTIONS + ("ignore",)
MODES = ("max", "min")
BASELINES = ("best", "first", "level", "zero")
#: what a ``sigmas`` bound is measured in: the logged standard error, the check-to-check movement, or both; or the
#: logged standard error and the movement around the trend (second differences)
NOISES = ("stderr", "checks", "combined", "detrended")
#: a monitor ending so names a family of keys, one rule state per member (``collapse/heldout_real/class_recall/*``)
FAMILY = "/*"


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
        sigmas: bound in units of the indicator's own noise: ``baseline - sigmas * unit`` for ``"max"`` (``+`` for
            ``"min"``), the unit chosen by ``noise``. A fall that the noise cannot explain fires; the same rule
            carries over from a large, easy held-out set to a small, hard one. With several of ``threshold``,
            ``relative`` and ``sigmas``, the stricter bound applies.
        noise: the unit of ``sigmas``. ``"stderr"``: the standard error logged with the value at this check (under
            ``stderr``; ``HeldOutRealCheck`` logs binomial ones, e.g. ``collapse/heldout_real/acc_stderr``): the
            noise of the held-out *sample* only. ``"checks"``: how far the indicator moved between the checks
            judged so far (:func:`~collapse_guard.callbacks.noise.check_to_check_sigma`, the moving-range
            estimate of Shewhart's individuals chart): the noise of *training*, for indicators without a standard
            error. ``"combined"``: both, in quadrature (:func:`~collapse_guard.callbacks.noise.combined_sigma`):
            a fall must be beyond what the held-out sample and the model's own check-to-check movement explain.
            It assumes the checks judged so far are healthy (the real-heavy start of a fit); a collapse from the
            first checks on, or noise that grows late in a fit (a learning-rate restart), breaks it.
            ``"detrended"``: as ``"combined"``, with the movement measured around the trend from second
            differences (:func:`~collapse_guard.callbacks.noise.detrended_sigma`), which a learning curve still
            rising does not inflate; it needs three checks.
        stderr: the logged key of the standard error for ``sigmas`` (noise ``"stderr"`` or ``"combined"``); default
            ``monitor + "_stderr"`` (for a family ``prefix/*``: ``prefix + "_stderr/*"``).
        baseline: ``"best"``: the best value of the earlier checks; ``"first"``: the mean of the first
            ``baseline_checks`` checks; ``"level"``: the best median of three consecutive earlier checks
            (:func:`~collapse_guard.callbacks.noise.best_level`), the level training reached, which one lucky
            check does not raise; ``"zero"``: 0, for an indicator that is already a change from a reference the
            check keeps (``collapse/heldout_real/acc_change``, paired on the same held-out samples,
            :mod:`collapse_guard.callbacks.paired`): ``Rule(".../acc_change", sigmas=3, baseline="zero",
            min_change=0.01)`` fires on a fall beyond 3 paired standard errors and at least 1 point.
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
        accumulate: ``None`` (default): each check is judged on its own. ``"cusum"``: the falls below the baseline
            in noise units, ``d_t = (baseline - x_t) / unit`` (``"max"``), add up as Page's one-sided CUSUM, ``S_t =
            max(0, S_{t-1} + d_t - allowance)``, and a check violates when ``S_t > sigmas`` (the decision interval
            ``h``; Page 1954). ``"ewma"``: ``Z_t = smoothing d_t + (1 - smoothing) Z_{t-1}`` violates above
            ``sigmas * sqrt(smoothing / (2 - smoothing))`` (Roberts 1959). Either catches a fall of a point or two
            a check that no single check shows; the bound in force is the value this check would need to reach
            the limit (:func:`~collapse_guard.callbacks.noise.accumulation_units`), ``min_change`` still asks this
            check's fall to be that large. The statistic starts when the baseline is armed and restarts after an
            action. It assumes healthy checks fall by 0 units on average: a ``"best"`` baseline (the best of noisy
            checks sits high) or a unit smaller than the model's own movement makes it drift up in a long healthy
            fit (a larger ``allowance`` absorbs that). Needs ``sigmas``.
        allowance: the CUSUM's reference value ``k`` in noise units, ``>= 0`` (default 0.5: tuned to a shift of one
            unit; Montgomery 2013, section 9.1.3).
        smoothing: the EWMA's weight ``λ`` of the newest check, in ``(0, 1]`` (default 0.3).
        action: ``"warn"``, ``"quarantine"``, ``"inject"`` or ``"stop"``; ``None`` takes the guard's default action.
            ``"quarantine"`` (a family rule over synthetic sources only, e.g. ``"collapse/source/acc_gap/*"``): the
            sources whose members fired are dropped from the next epoch (``MixedDataModule.quarantine``); when
            they would be every source still trained on, the rule asks for ``"inject"`` instead (no one source to
            blame).
        name: short name for events; default: the monitor key.
        non_finite: what a NaN or infinite value does, as ``EarlyStopping(check_finite=True)``: ``"stop"``
            (default: it fires at once, whatever the patience, and the guard stops training, even in a cooldown:
            a diverged model or check is not something fresh real data fixes), ``"warn"`` or ``"inject"`` (fires
            at once with that action), or ``"ignore"`` (the value is skipped: a verdict that does not fire, no state
            change).

    **Families.** A ``monitor`` ending in ``/*`` (``"collapse/heldout_real/class_recall/*"``) names every logged key
    below that prefix: each member (each class) keeps its own baseline, noise and patience, and the rule fires when
    any member fires; the verdict names the members (``"class 3"``).

    Raises:
        ValueError: for an unknown mode, baseline, noise, action or ``non_finite``, no bound given, a ``noise``
            other than ``"stderr"`` without ``sigmas``, a ``*`` elsewhere than as a family's last segment, out-of-range numbers,
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
        # each class against its own level and noise (sampling and check-to-check)
        Rule("collapse/heldout_real/class_recall/*", sigmas=3, noise="combined", baseline="level", patience=2)
        # slow falls: the paired accuracy change's falls beyond 1.5 paired units summed (CUSUM) past 4
        Rule("collapse/heldout_real/acc_change", sigmas=4, baseline="zero", baseline_checks=3, accumulate="cusum",
             allowance=1.5)
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
    noise: str = "stderr"
    accumulate: Optional[str] = None
    allowance: float = 0.5
    smoothing: float = 0.3

    def __post_init__(self) -> None:
        self._check_types()
        if self.noise not in NOISES:
            raise ValueError(f"Rule({self.monitor!r}): `noise` must be one of {NOISES}, got {self.noise!r}.")
        self._check_accumulation()
        if self.noise != "stderr" and self.sigmas is None:
            raise ValueError(f"Rule({self.monitor!r}): `noise` is the unit of a `sigmas` bound; give `sigmas` too.")
        for argument, key in (("monitor", self.monitor), ("stderr", self.stderr)):
            if key is not None and "*" in key and not (key.endswith(FAMILY) and key.count("*") == 1):
                raise ValueError(f"Rule({self.monitor!r}): a `*` in `{argument}` must be its last segment ('.../*'), "
                                 f"got {key!r}.")
        if self.stderr is not None and self.stderr.endswith(FAMILY) != self.is_family:
            raise ValueError(f"Rule({self.monitor!r}): `stderr` and `monitor` must both name a family ('.../*') or "
                             f"neither; got stderr={self.stderr!r}.")
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

    def _check_accumulation(self) -> None:
        """``accumulate`` one of :data:`ACCUMULATIONS` with ``sigmas``; ``allowance`` and ``smoothing`` in range."""
        owner = f"Rule({self.monitor!r}): "
        check_real(self.allowance, "allowance", owner=owner)
        check_real(self.smoothing, "smoothing", owner=owner)
        if self.accumulate is not None and self.accumulate not in ACCUMULATIONS:
            raise ValueError(f"{owner}`accumulate` must be None or one of {ACCUMULATIONS}, got {self.accumulate!r}.")
        if self.accumulate is not None and self.sigmas is None:
            raise ValueError(f"{owner}`accumulate` sums falls in noise units up to a limit of `sigmas`; give `sigmas`.")
        if not self.allowance >= 0 or not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"{owner}`allowance` must be >= 0 and `smoothing` in (0, 1]; got "
                             f"allowance={self.allowance!r}, smoothing={self.smoothing!r}.")

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
        # (``noise`` likewise, when it is the ``"stderr"`` every earlier rule had; and the accumulation's fields when
        # at their defaults)
        shown = (f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                 if (f.name != "min_change" or self.min_change) and (f.name != "noise" or self.noise != "stderr")
                 and (f.name not in _HIDDEN_AT_DEFAULT or getattr(self, f.name) != _HIDDEN_AT_DEFAULT[f.name]))
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
        """The logged key of the standard error a ``sigmas`` bound reads (``None`` without ``sigmas`` or with
        ``noise="checks"``; a family's is a family too)."""
        if self.sigmas is None or self.noise == "checks":
            return None
        if self.stderr:
            return self.stderr
        return f"{self.monitor[:-len(FAMILY)]}_stderr{FAMILY}" if self.is_family else f"{self.monitor}_stderr"

    @property
    def is_family(self) -> bool:
        """Whether :attr:`monitor` names a family of keys (``prefix/*``)."""
        return self.monitor.endswith(FAMILY)

    def member_of(self, key: str) -> Optional[str]:
        """The member a logged ``key`` is of this family (``".../class_recall/3"`` -> ``"3"``); ``None`` if none."""
        prefix = self.monitor[:-1]
        name = key[len(prefix):]
        if not self.is_family or not key.startswith(prefix) or not name or "/" in name or "*" in name:
            return None
        return name

    def member_key(self, name: str) -> str:
        """The logged key of member ``name`` of this family (``"3"`` -> ``".../class_recall/3"``)."""
        return self.monitor[:-1] + name

    def member_stderr_key(self, name: str) -> Optional[str]:
        """The logged key of member ``name``'s standard error (``None`` when the rule reads none)."""
        stderr = self.stderr_key
        return None if stderr is None else stderr[:-1] + name

    def member(self, name: str) -> "Rule":
        """The rule on one member of this family: its own key and standard error, named ``"<label> <member>"``."""
        return replace(self, monitor=self.member_key(name), name=f"{self.label} {name}",
                       stderr=self.member_stderr_key(name))


#: fields added after checkpoints were saved: left out of the repr (a guard's ``state_key``) at their defaults
_HIDDEN_AT_DEFAULT = {"accumulate": None, "allowance": 0.5, "smoothing": 0.3}


def default_rules(min_change: float = 0.0, task: str = "classification") -> list[Rule]:
    """The rules ``CollapseGuard()`` uses when given none, for the task of the Trainer's ``HeldOutRealCheck``.

    Another ``task`` than ``"classification"`` gives its own rule (:mod:`collapse_guard.callbacks.task_rules`): the
    held-out real loss rising, for a language model by 2 standard errors and 0.05 nats above its best, for a
    regressor (and ``"loss"``) by 6 check-to-check units above its level. For a classifier:

    * ``heldout_real_acc``: held-out real accuracy more than 3 of its binomial standard errors below its level (the
      best median of three consecutive checks, ``baseline="level"``), at one check; armed after 3 checks. It is
      the first rule, so ``"stop"`` puts back the weights of its best check;
    * ``acc_change``: the change of held-out real accuracy from the *reference check* (the check with the best
      held-out accuracy so far), paired on the same held-out samples (``collapse/heldout_real/acc_change``,
      :mod:`collapse_guard.callbacks.paired`), more than 3.5 paired standard errors **and** at least 2 points
      below 0 (``baseline="zero"``, ``min_change=0.02``), at one check. The unit,
      ``sqrt(b + c - (b - c)**2 / n) / n`` from the ``b`` samples right at the reference and wrong now and the
      ``c`` wrong then and right now (McNemar 1947; Agresti, *Categorical Data Analysis*, 2002, section 10.1.1),
      holds the held-out sampling error and how far the model moved between the two checks at once;
    * ``class_change``: a family rule, each class's recall change from the reference check on that class's own
      samples (``collapse/heldout_real/class_recall_change/<c>``), more than 4 of *its own* paired standard
      errors and at least 0.3 below 0, two checks running; the event names the class. A confusable class whose
      samples flip both ways between checks of healthy training has a wide unit of its own and does not fire; a
      class the synthetic data lack loses its samples one way and does;
    * ``heldout_real_loss`` (:func:`heldout_loss_rule`): the held-out real loss not finite: stop at that check.

    **How they were chosen.** On the development part of the detection suite (``benchmarks/suite.py``: digits,
    digits pooled to 4x4, help-text topics at seeds 0-2), 3,109,920 candidate sets (round 1's accuracy, class and
    effective-classes rules, and the paired rules; ``benchmarks/choose_defaults.py``) were replayed and the most
    sensitive one with no false alarm and no firing on real-only fits kept (27 of 32 collapsed fits caught against
    25 for round 1's defaults); it was then reported once on an untouched part (every dataset at new seeds 6-8, and
    two datasets never used before, conversation lines of ``chatterbot-corpus`` and iris):
    ``benchmarks/RESULTS.md``, section 8. Round 1's defaults (:func:`~collapse_guard.callbacks._state_keys.
    earlier_default_rules`) are section 5's.

    **When they fail.** The reference is a check of the same fit: a collapse from the first checks on has no
    healthy reference; a fall of less than 2 points (or less than 3.5 paired units) is not acted on, however long
    it lasts; a class with a few held-out samples needs 30 points of recall to fall; a model that flips many
    samples both ways at every check (a large learning rate) has a wide unit and is judged late.

    Args:
        min_change: the smallest fall of held-out accuracy that fires, in ``[0, 1]`` (``Rule.min_change`` of the
            two accuracy rules; ``acc_change`` keeps at least 0.02, ``class_change`` at least 0.3). For the other
            tasks, the smallest rise of the held-out loss that fires, in its units.
        task: ``"classification"`` (default), ``"language_model"``, ``"regression"`` or ``"loss"``.

    Raises:
        ValueError: for a ``min_change`` that is negative or not finite, or an unknown ``task``.

    Example::

        guard = CollapseGuard(rules=default_rules(min_change=0.01))
    """
    if task != "classification":
        from collapse_guard.callbacks.task_rules import TASK_RULES

        if task not in TASK_RULES:
            raise ValueError(f"`task` must be one of {('classification', *TASK_RULES)}, got {task!r}.")
        return TASK_RULES[task](min_change)
    return [
        Rule("collapse/heldout_real/acc", mode="max", sigmas=3.0, baseline="level", min_change=min_change,
             baseline_checks=3, name="heldout_real_acc"),
        Rule("collapse/heldout_real/acc_change", mode="max", sigmas=3.5, baseline="zero",
             min_change=max(PAIRED_MIN_CHANGE, min_change), baseline_checks=3, name="acc_change"),
        Rule("collapse/heldout_real/class_recall_change/*", mode="max", sigmas=4.0, baseline="zero",
             min_change=max(CLASS_MIN_CHANGE, min_change), baseline_checks=3, patience=2, name="class_change"),
        heldout_loss_rule(),
    ]


#: the smallest fall of paired accuracy (``acc_change``) and of a class's paired recall the defaults act on
PAIRED_MIN_CHANGE, CLASS_MIN_CHANGE = 0.02, 0.3


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


from collapse_guard.callbacks.rule_state import RuleState, Verdict  # noqa: E402  (re-exported; it imports Rule)
