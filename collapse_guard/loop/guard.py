"""Generation-level guard of a self-consuming loop: the callbacks' :class:`Rule` / :class:`RuleState`, judged once
per generation on held-out real indicators, with two actions: raise the real share of the next generation, or
stop the loop.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from collapse_guard.callbacks.events import BoundEvent, event_fields
from collapse_guard.callbacks.policy import DECISIONS, EXHAUSTED, PERSISTS, RuleBook, as_rules, check_guard_arguments
from collapse_guard.callbacks.rules import Rule, Verdict
from collapse_guard._numbers import check_real

__all__ = ["DECISIONS", "GenerationDecision", "GenerationEvent", "GenerationGuard"]


@dataclass(kw_only=True)
class GenerationEvent(BoundEvent):
    """One firing of the generation guard: :class:`~collapse_guard.callbacks.events.BoundEvent`'s fields (rule,
    monitor, value, bound in force, action, reason) at a generation. ``threshold`` is the deprecated alias of
    ``bound``.

    Attributes:
        generation: the generation whose model / samples were judged.
        real_fraction_before: real share of the judged generation's training batches.
        real_fraction_after: real share the next generation will train at.
    """

    generation: int
    real_fraction_before: float
    real_fraction_after: float


@dataclass
class GenerationDecision:
    """What :meth:`GenerationGuard.judge` decided for the next generation.

    Attributes:
        action: ``"ok"``, ``"warn"``, ``"inject"`` or ``"stop"``.
        real_fraction: the lowest real share the next generation may train at (the guard's floor).
        reserve_samples: fresh real samples to move from the reserve into the real pool before the next fit.
        refit: the judged generation is rejected (its samples are not handed on) and fitted again at the new real
            share (``GenerationGuard(refit=True)`` and an injection).
        verdicts: every rule's verdict at this generation.
        events: the events recorded at this generation (empty when no rule fired).
    """

    action: str
    real_fraction: float
    reserve_samples: int = 0
    refit: bool = False
    verdicts: list = field(default_factory=list)
    events: list = field(default_factory=list)


class GenerationGuard(RuleBook):
    r"""Decide, after every generation of a self-consuming loop, to go on, inject real data, or stop the loop.

    The generation-level counterpart of :class:`~collapse_guard.CollapseGuard`, with the same
    :class:`~collapse_guard.Rule` objects and :class:`~collapse_guard.callbacks.rules.RuleState` bookkeeping: each
    rule reads one indicator of the generation just trained (held-out real perplexity, k-NN recall or coverage of
    its samples against held-out real data, the diversity of its samples, ...) and fires after ``patience``
    violating generations. With ``baseline="first"`` and ``baseline_checks=1`` the bound is relative to
    generation 0, the model fitted on real data only; that is the natural reference for a loop.

    When rules fire, the strongest of their actions is taken (the policy :func:`~collapse_guard.callbacks.policy.decide`
    that ``CollapseGuard`` takes too):

    * ``"warn"``: an event and a warning, nothing changes;
    * ``"inject"``: the real share of every later generation's training batches is raised by
      ``real_fraction_step`` (up to ``max_real_fraction``), and ``inject_fraction`` of the reserve (fresh real
      data never trained on, when the loop has one) joins the real pool; it escalates to ``"stop"`` after
      ``max_injections`` injections, or when neither a higher share nor reserve data is left;
    * ``"stop"``: the loop ends after this generation.

    A NaN or infinite indicator fires its rule at once with the rule's ``non_finite`` action (``"stop"`` by
    default), even during a cooldown, as in ``CollapseGuard``.

    With ``refit=True`` an injection also rejects the generation that tripped the rules: its samples are never
    handed on, and the same generation is fitted again at the raised real share (and judged again). Every
    generation whose samples the loop hands on has then passed every rule, or the loop has stopped. With
    ``refit=False`` (the default) the injection takes effect from the next generation on.

    No paper gives validated action thresholds (none of the works cited below states one): state the margin of every rule against the
    generation-to-generation noise of its indicator.

    Args:
        rules: the rules, over the metric names the loop records (a list of :class:`Rule`; one ``Rule`` alone is
            taken as ``[rule]``).
        action: default action of rules that name none: ``"warn"``, ``"inject"`` or ``"stop"``.
        real_fraction_step: how much an injection raises the real share, in ``(0, 1]``.
        max_real_fraction: the highest real share injections may reach, in ``(0, 1]`` (below 1 keeps every later
            generation training partly on synthetic data).
        inject_fraction: share in ``(0, 1]`` of the initial reserve moved into the real pool per injection.
        max_injections: injections before a persisting collapse escalates to ``"stop"``.
        cooldown: generations after an action during which no further action is taken (``0``: an injection
            already shows in the next generation's check).
        strict: raise when a monitored metric is missing from a generation's metrics.
        refit: reject and refit the generation that tripped an injection (see above).

    Raises:
        ValueError: for an empty ``rules``, an unknown action, a rule with action ``"quarantine"`` (a generation has
            one synthetic source), out-of-range numbers or numbers of the wrong kind (NaN, a bool, a str,
            ``cooldown=1.5``).
        TypeError: ``rules`` holding something else than a ``Rule`` (a metric key: wrap it in ``Rule(key, ...)``).

    Example::

        >>> from collapse_guard import Rule
        >>> guard = GenerationGuard([Rule("recall", mode="max", relative=0.1, baseline="first")],
        ...                         real_fraction_step=0.5)
        >>> guard.judge(0, {"recall": 0.90}, real_fraction=1.0).action   # generation 0: the baseline
        'ok'
        >>> d = guard.judge(1, {"recall": 0.70}, real_fraction=0.0)      # 22% below generation 0
        >>> d.action, d.real_fraction
        ('inject', 0.5)
        >>> print(guard.events[0].reason)
        recall = 0.7000 below bound 0.8100 (first baseline 0.9000), 1/1 consecutive checks; real share 0.00 -> 0.50 from generation 2

    The self-consuming loops this guards: Shumailov et al., "AI models collapse when trained on recursively
    generated data", Nature 631 (2024); Alemohammad et al., "Self-consuming generative models go MAD", ICLR 2024.
    """

    event_type = GenerationEvent

    def __init__(
        self,
        rules: Sequence[Rule],
        action: str = "inject",
        real_fraction_step: float = 0.25,
        max_real_fraction: float = 1.0,
        inject_fraction: float = 0.5,
        max_injections: int = 3,
        cooldown: int = 0,
        strict: bool = True,
        refit: bool = False,
    ) -> None:
        rules = as_rules([] if rules is None else rules, type(self).__name__)
        if not rules:
            raise ValueError("`rules` is empty: give at least one Rule over a metric the loop records.")
        quarantining = [r.label for r in rules if r.action == "quarantine"]
        if quarantining:
            raise ValueError(f"GenerationGuard: rules {quarantining} ask for 'quarantine', which drops synthetic sources "
                             "within one fit (CollapseGuard); a generation loop trains on one synthetic source per "
                             "generation: use 'inject' or 'stop'.")
        check_guard_arguments(action, inject_fraction, max_injections, cooldown, real_fraction_step)
        if not 0.0 < real_fraction_step <= 1.0:
            raise ValueError(f"`real_fraction_step` must be in (0, 1], got {real_fraction_step!r}.")
        if not 0.0 < check_real(max_real_fraction, "max_real_fraction") <= 1.0:
            raise ValueError(f"`max_real_fraction` must be in (0, 1], got {max_real_fraction!r}.")
        self.set_policy(rules, action, inject_fraction, real_fraction_step, max_injections, cooldown, strict)
        self.max_real_fraction = float(max_real_fraction)
        self.refit = bool(refit)
        self.reset()

    def reset(self) -> None:
        """Forget every baseline, counter and event (a new loop starts)."""
        self.reset_book()
        self.real_fraction_floor = 0.0
        self.stopped = False

    def judge(
        self,
        generation: int,
        metrics: Mapping[str, Any],
        real_fraction: float,
        reserve_size: int = 0,
        reserve_remaining: int = 0,
    ) -> GenerationDecision:
        """Judge one generation and decide what the next one trains on.

        Args:
            generation: index of the generation just trained (0 = fitted on real data).
            metrics: its indicators, ``name -> number``.
            real_fraction: real share of its training batches.
            reserve_size: size of the loop's initial reserve of fresh real data (0: none).
            reserve_remaining: reserve samples not yet injected.

        Returns:
            A :class:`GenerationDecision`; its ``real_fraction`` is the floor for every later generation.

        Raises:
            KeyError: with ``strict=True``, when a monitored metric is missing (the message lists those given).
        """
        missing = [r.monitor for r in self.rules
                   if r.monitor not in metrics and not any(r.member_of(k) is not None for k in metrics)]
        if missing and self.strict:
            raise KeyError(
                f"GenerationGuard monitors {missing}, which generation {generation} did not record; "
                f"recorded: {sorted(metrics)}. Fix the rule's `monitor` or add the metric to the loop."
            )
        judged = (state.judge_row(metrics) for state in self.states)  # a family rule judges each member
        verdicts: list[Verdict] = [v for v in judged if v is not None]
        before = float(real_fraction)
        decision = self.decide(verdicts, before, reserve_size, reserve_remaining, self.real_fraction_floor)
        result = GenerationDecision("ok", max(self.real_fraction_floor, 0.0), verdicts=verdicts)
        if decision.cooling:
            self.cooldown_left -= 1
        if decision.action == "ok":
            return result
        action, after = decision.action, before
        if action == "inject":
            self.injections += 1
            after = self.real_fraction_floor = decision.real_fraction
            result.reserve_samples = decision.samples
            detail = f"real share {before:.2f} -> {after:.2f} from generation {generation + 1}"
            if decision.samples:
                detail += (f", {decision.samples} fresh real samples injected "
                           f"({reserve_remaining - decision.samples} left in reserve)")
            if self.refit:
                result.refit = True
                detail = detail.replace(f"from generation {generation + 1}", f"for a refit of generation {generation}")
                detail += f"; generation {generation} rejected, its samples are not handed on"
        elif action == "warn":
            detail = "warning only"
        else:
            self.stopped = True
            detail = {
                PERSISTS: f"collapse persists after {self.injections} injection(s): stopping the loop",
                EXHAUSTED: f"the real share is already {before:.2f} (max {self.max_real_fraction:.2f}) and no reserve "
                           "is left: stopping the loop",
            }.get(decision.escalated, f"stopping the loop after generation {generation}")
        event = GenerationEvent(generation=generation, action=action, real_fraction_before=before,
                                real_fraction_after=after, **event_fields(decision.fired, detail))
        self.events.append(event)
        result.events.append(event)
        self.acted()
        result.action = action
        result.real_fraction = self.real_fraction_floor
        if action == "warn":
            warnings.warn(f"GenerationGuard generation {generation}: " + "; ".join(e.reason for e in result.events))
        return result

    def check(self, generation: int, metrics: Mapping[str, Any], real_fraction: float, reserve_size: int = 0,
              reserve_remaining: int = 0) -> GenerationDecision:
        """Deprecated alias of :meth:`judge` (``check`` also names ``HeldOutRealCheck.check``, a measurement)."""
        warnings.warn("`GenerationGuard.check` is deprecated: call `GenerationGuard.judge`.", DeprecationWarning,
                      stacklevel=2)
        return self.judge(generation, metrics, real_fraction, reserve_size, reserve_remaining)

    # -- checkpointing --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Rule states, events, injections and the real-share floor (JSON-ready)."""
        return {**self.book_state_dict(), "real_fraction_floor": self.real_fraction_floor, "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.load_book_state_dict(state_dict)
        self.real_fraction_floor = state_dict["real_fraction_floor"]
        self.stopped = state_dict["stopped"]

    def __repr__(self) -> str:
        return (
            f"GenerationGuard(rules={[r.label for r in self.rules]}, action={self.action!r}, "
            f"real_fraction_step={self.real_fraction_step}, max_real_fraction={self.max_real_fraction}, "
            f"refit={self.refit})"
        )

