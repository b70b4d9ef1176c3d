"""The decision policy both guards share (``CollapseGuard`` per epoch, ``GenerationGuard`` per generation).

:func:`decide` is a pure function of numbers and verdicts: the strongest action among the fired verdicts (a
non-finite value's ``Rule.non_finite`` first, else the rule's action, else the guard's default), the cooldown (a
non-finite verdict acts even in a cooldown), ``"quarantine"`` of the synthetic sources the fired rules name (in
place of ``"inject"`` when they name some but not all of the sources still trained on), the escalation of
``"inject"`` to ``"stop"`` after
``max_injections`` injections or when nothing is left to inject, and the size of an injection. :class:`RuleBook`
keeps what a guard carries from check to check (rule states, events, injections, cooldown) and asks
:func:`decide` with it, so the policy is tested without a Trainer or a loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from collapse_guard.callbacks.rules import ACTIONS, GUARD_ACTIONS, Rule, RuleState, Verdict
from collapse_guard._numbers import check_count, check_real

#: a guard's decisions, mildest first (``"ok"``: nothing to do)
DECISIONS = ("ok",) + ACTIONS

#: why an ``"inject"`` became a ``"stop"``: too many injections, or nothing left to inject
PERSISTS, EXHAUSTED = "persists", "exhausted"


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` decided at one check.

    Attributes:
        action: ``"ok"``, ``"warn"``, ``"quarantine"``, ``"inject"`` or ``"stop"``: what to do, after escalation.
        asked: the strongest action the fired verdicts asked for (``"ok"``: none fired).
        fired: the verdicts that fired at this check.
        cooling: the check falls in a cooldown and nothing non-finite fired: count the cooldown down, do nothing.
        escalated: why ``"inject"`` became ``"stop"``: :data:`PERSISTS` (``max_injections`` reached) or
            :data:`EXHAUSTED` (no reserve left and the real fraction at its ceiling); ``None`` otherwise.
        real_fraction: with ``"inject"``, the real fraction to train at from now on, in ``[0, 1]``; else ``None``.
        samples: with ``"inject"``, reserve samples to move into training (0: no reserve left, or none).
        sources: with ``"quarantine"``, the synthetic sources to drop from the next epoch (those the fired
            ``"quarantine"`` rules named that are still trained on).
    """

    action: str
    asked: str = "ok"
    fired: tuple = ()
    cooling: bool = False
    escalated: Optional[str] = None
    real_fraction: Optional[float] = None
    samples: int = 0
    sources: tuple = ()


def action_for(verdict: Verdict, default: str) -> str:
    """The action a fired verdict asks for: a non-finite value's ``Rule.non_finite``, else the rule's own action,
    else ``default`` (the guard's)."""
    return verdict.action or verdict.rule.action or default


def named_sources(fired: Sequence[Verdict], default_action: str) -> list[str]:
    """The members named by the fired verdicts that ask for ``"quarantine"``, in rule order, each once: the
    synthetic sources the attribution blames.

    Example::

        named_sources(decision.fired, "inject")   # e.g. ['gen20']
    """
    names = [m for v in fired if action_for(v, default_action) == "quarantine" for m in (v.members or (v.member,))]
    return list(dict.fromkeys(m for m in names if m is not None))


def inject_size(inject_fraction: float, reserve_size: int, reserve_remaining: int) -> int:
    """Reserve samples one injection moves: ``inject_fraction`` of the initial reserve (at least 1), at most what is
    left; 0 without a reserve.

    Example::

        >>> inject_size(0.5, reserve_size=10, reserve_remaining=3)
        3
    """
    if reserve_size <= 0 or reserve_remaining <= 0:
        return 0
    return min(int(reserve_remaining), max(1, int(round(inject_fraction * reserve_size))))


def decide(
    verdicts: Sequence[Verdict],
    default_action: str,
    *,
    cooldown_left: int = 0,
    injections: int = 0,
    max_injections: int = 0,
    real_fraction: float = 0.0,
    real_fraction_floor: float = 0.0,
    real_fraction_step: float = 0.0,
    max_real_fraction: float = 1.0,
    inject_fraction: float = 1.0,
    reserve_size: int = 0,
    reserve_remaining: int = 0,
    quarantinable: Sequence[str] = (),
) -> Decision:
    """Decide what a guard does after one check; a pure function (no state is changed).

    Args:
        verdicts: every rule's verdict at this check (only the fired ones count).
        default_action: the guard's action for rules that name none: ``"warn"``, ``"inject"`` or ``"stop"``.
        cooldown_left: checks left in the cooldown of the last action (``> 0``: only a non-finite verdict acts).
        injections: injections made so far; ``"inject"`` escalates to ``"stop"`` once it reaches ``max_injections``.
        max_injections: injections allowed before a persisting collapse stops.
        real_fraction: the real fraction of the data just judged, in ``[0, 1]``.
        real_fraction_floor: the lowest real fraction earlier injections set; an injection raises
            ``max(real_fraction, real_fraction_floor)`` by ``real_fraction_step``.
        real_fraction_step: how much an injection raises it, in ``[0, 1]``.
        max_real_fraction: the highest real fraction an injection may reach, in ``(0, 1]``.
        inject_fraction: share in ``(0, 1]`` of the initial reserve one injection moves.
        reserve_size: the initial reserve, in samples (0: none).
        reserve_remaining: reserve samples not yet injected.
        quarantinable: the synthetic sources still trained on (weight above 0), which ``"quarantine"`` may drop.

    Returns:
        The :class:`Decision`. When the strongest action asked is ``"quarantine"`` or ``"inject"`` and the fired
        ``"quarantine"`` rules name sources in ``quarantinable`` (not all of them: one source at least must be
        left), it is ``"quarantine"`` of those sources: the attribution is confident, so the harmful source is
        dropped and the good synthetic data kept. Named sources already dropped are ignored (nothing new to do:
        ``"ok"`` when nothing else asks more); naming every source left makes it an ``"inject"``. ``"inject"``
        escalates to ``"stop"`` when ``injections >= max_injections``, or when no reserve is left and the real
        fraction cannot rise.

    Example::

        >>> from collapse_guard.callbacks.rules import Rule, RuleState
        >>> state = RuleState(Rule("acc", threshold=0.5, action="inject"))
        >>> decide([state.judge(float("nan"))], "inject").action   # non_finite="stop" by default
        'stop'
    """
    fired = tuple(v for v in verdicts if v.fired)
    if cooldown_left > 0 and not any(v.non_finite for v in fired):
        return Decision("ok", fired=fired, cooling=True)
    if not fired:
        return Decision("ok")
    asked = max((action_for(v, default_action) for v in fired), key=ACTIONS.index)
    if asked in ("quarantine", "inject"):
        named = named_sources(fired, default_action)
        active = [name for name in named if name in quarantinable]
        if active and len(active) < len(quarantinable):
            return Decision("quarantine", asked, fired, sources=tuple(active))
        if asked == "quarantine" and not active:
            return Decision("ok", asked, fired)  # every source named is dropped already
    elif asked != "inject":
        return Decision(asked, asked, fired)
    if injections >= max_injections:
        return Decision("stop", asked, fired, escalated=PERSISTS)
    target = max(real_fraction, min(max_real_fraction, max(real_fraction, real_fraction_floor) + real_fraction_step))
    samples = inject_size(inject_fraction, reserve_size, reserve_remaining)
    if samples == 0 and target <= real_fraction + 1e-12:
        return Decision("stop", asked, fired, escalated=EXHAUSTED)
    return Decision("inject", asked, fired, real_fraction=target, samples=samples)


def check_guard_arguments(action: str, inject_fraction: float, max_injections: int, cooldown: int,
                          real_fraction_step: float = 0.0) -> None:
    """The arguments every guard (``CollapseGuard``, ``GenerationGuard``) takes alike. The range of
    ``real_fraction_step`` is the guard's own to check (after this one: it is a finite number here).

    Raises:
        ValueError: for an ``action`` not in :data:`~collapse_guard.callbacks.rules.GUARD_ACTIONS`; an ``inject_fraction`` or ``real_fraction_step`` that
            is not a finite number (NaN, a bool, a str); an ``inject_fraction`` outside ``(0, 1]``; a
            ``max_injections`` or ``cooldown`` that is not an integer ``>= 0`` (``1.5``, NaN, a bool).
    """
    if action not in GUARD_ACTIONS:
        raise ValueError(f"`action` must be one of {GUARD_ACTIONS}, got {action!r}"
                         + (" ('quarantine' is a rule's action: it needs a family rule naming sources)."
                            if action == "quarantine" else "."))
    check_real(real_fraction_step, "real_fraction_step")
    if not 0.0 < check_real(inject_fraction, "inject_fraction") <= 1.0:
        raise ValueError(f"`inject_fraction` must be in (0, 1], got {inject_fraction!r}.")
    check_count(max_injections, "max_injections", minimum=0, optional=False)
    check_count(cooldown, "cooldown", minimum=0, optional=False)


def as_rules(rules: Any, owner: str) -> list:
    """``rules`` as a list of :class:`Rule`: a sequence of them, or one ``Rule`` alone (taken as ``[rule]``).

    Args:
        rules: what the guard was given.
        owner: the guard's name, for the messages.

    Raises:
        TypeError: ``rules`` is a str, not iterable, or holds something else than a ``Rule`` (a metric key: wrap it
            in ``Rule(key, ...)``).
        ValueError: a rule asking for ``"quarantine"`` that is not a family rule (it could name no source).

    Example::

        as_rules(Rule("collapse/heldout_real/acc", threshold=0.5), "CollapseGuard")  # [Rule(...)]
    """
    if isinstance(rules, Rule):
        return [rules]
    example = 'e.g. [Rule("collapse/heldout_real/acc", mode="max", sigmas=2.0, patience=2)]'
    if isinstance(rules, (str, bytes)) or not hasattr(rules, "__iter__"):
        raise TypeError(f"{owner}: `rules` must be a list of Rule objects, {example}; got {rules!r}.")
    rules = list(rules)
    for i, rule in enumerate(rules):
        if isinstance(rule, str):
            raise TypeError(f"{owner}: `rules[{i}]` is the str {rule!r}, not a Rule: wrap it in "
                            f"`Rule({rule!r}, mode=..., threshold=... / relative=... / sigmas=...)`, {example}.")
        if not isinstance(rule, Rule):
            raise TypeError(f"{owner}: `rules[{i}]` must be a Rule, got {type(rule).__name__} ({rule!r}); {example}.")
        if rule.action == "quarantine" and not rule.is_family:
            raise ValueError(
                f"{owner}: `rules[{i}]` ({rule.monitor!r}) asks for 'quarantine', which drops the synthetic sources "
                "a family rule names: give a family over sources (e.g. 'collapse/source/acc_vs_best/*'), or use "
                "'inject' / 'stop'."
            )
    return rules


class RuleBook:
    """What a guard keeps of its rules from check to check, and checkpoints: every rule's :class:`RuleState`
    (:attr:`states`), the events its firings caused (:attr:`events`, of the guard's :attr:`event_type`), the
    injections made and the checks left in a cooldown; and the one decision policy (:meth:`decide`).
    ``CollapseGuard`` and ``GenerationGuard`` share it; each adds its own state to :meth:`book_state_dict`'s dict.
    A guard gives its settings to :meth:`set_policy`.
    """

    #: the dataclass of the guard's events (rebuilt from checkpoints with ``event_type.from_state``)
    event_type: type
    #: the highest real fraction an injection may reach
    max_real_fraction: float = 1.0

    def set_policy(self, rules: Sequence[Rule], action: str, inject_fraction: float, real_fraction_step: float,
                   max_injections: int, cooldown: int, strict: bool) -> None:
        """Keep the settings every guard has (checked by :func:`check_guard_arguments`) and start a fresh book."""
        check_guard_arguments(action, inject_fraction, max_injections, cooldown, real_fraction_step)
        self.rules, self.action, self.strict = list(rules), action, strict
        self.inject_fraction, self.real_fraction_step = float(inject_fraction), float(real_fraction_step)
        self.max_injections, self.cooldown = int(max_injections), int(cooldown)
        self.reset_book()

    def use_rules(self, rules: Sequence[Rule]) -> None:
        """Judge by ``rules`` from now on; a fresh book when they differ from the present ones."""
        if list(rules) != self.rules:
            self.rules = list(rules)
            self.reset_book()

    def reset_book(self) -> None:
        """Fresh rule states, no events, no injections, no cooldown."""
        self.states = [RuleState(rule) for rule in self.rules]
        self.events: list = []
        self.injections = 0
        self.cooldown_left = 0

    def action_of(self, rule: Rule) -> str:
        """The action ``rule`` asks for: its own, else the guard's default."""
        return rule.action or self.action

    def action_for(self, verdict: Verdict) -> str:
        """The action a fired verdict asks for (a non-finite value's ``Rule.non_finite`` first)."""
        return action_for(verdict, self.action)

    def decide(self, verdicts: Sequence[Verdict], real_fraction: float, reserve_size: int = 0,
               reserve_remaining: int = 0, real_fraction_floor: float = 0.0,
               quarantinable: Sequence[str] = ()) -> Decision:
        """:func:`decide` with this guard's settings, injections and cooldown (changes nothing)."""
        return decide(
            verdicts, self.action, cooldown_left=self.cooldown_left, injections=self.injections,
            max_injections=self.max_injections, real_fraction=real_fraction, real_fraction_floor=real_fraction_floor,
            real_fraction_step=self.real_fraction_step, max_real_fraction=self.max_real_fraction,
            inject_fraction=self.inject_fraction, reserve_size=reserve_size, reserve_remaining=reserve_remaining,
            quarantinable=quarantinable,
        )

    def acted(self) -> None:
        """After an action: every rule counts violations afresh, and the cooldown starts."""
        for state in self.states:
            state.reset_wait()
        self.cooldown_left = self.cooldown

    @property
    def cooldown_left(self) -> int:
        """Checks left in the cooldown of the last action. When it runs out, every rule counts violations afresh
        again: a violation judged during the cooldown (while the action takes effect) does not count towards
        ``patience``, so a rule with patience ``p`` acts again only after ``p`` violating checks past the cooldown,
        not at the first one (a recovering indicator gets its ``p`` checks)."""
        return self._cooldown_left

    @cooldown_left.setter
    def cooldown_left(self, value: int) -> None:
        if value <= 0 < getattr(self, "_cooldown_left", 0):
            for state in self.states:
                state.reset_wait()
        self._cooldown_left = value

    def book_state_dict(self) -> dict:
        """Rule states, events, injections and cooldown (JSON-ready)."""
        return {
            "rules": [s.state_dict() for s in self.states],
            "events": [e.state_dict() for e in self.events],
            "injections": self.injections,
            "cooldown_left": self.cooldown_left,
        }

    def load_book_state_dict(self, state_dict: dict) -> None:
        """Restore :meth:`book_state_dict`'s part of ``state_dict`` (events saved with ``threshold`` included).

        Raises:
            ValueError: when the state was saved for another number of rules.
        """
        if len(state_dict["rules"]) != len(self.states):
            raise ValueError(
                f"{type(self).__name__} state for {len(state_dict['rules'])} rules cannot be loaded into a guard with "
                f"{len(self.states)} rules."
            )
        for state, saved in zip(self.states, state_dict["rules"]):
            state.load_state_dict(saved)
        self.events = [self.event_type.from_state(e) for e in state_dict["events"]]
        self.injections = state_dict["injections"]
        self._cooldown_left = state_dict["cooldown_left"]  # as saved: the patience counters just loaded stand
