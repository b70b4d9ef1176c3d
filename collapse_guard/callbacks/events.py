"""The guards' records of what they did: :class:`GuardEvent` (``CollapseGuard``) and the :class:`BoundEvent` base
that ``GenerationEvent`` (``GenerationGuard``) shares with it."""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional, Sequence


@dataclass
class BoundEvent:
    """What every guard event holds: which rules fired, on what value, against which bound (:attr:`bound`, read also
    under its old name ``threshold``, deprecated), what was done and why. One event per action: when several rules
    fire at one check, one action is taken and one event lists them all. Events of checkpoints saved with
    ``threshold`` load (:meth:`from_state`).

    Attributes:
        rule: the first fired rule's name, with the member for a family rule (``"class 3"``; ``"remote"``: a rule
            fired on another rank).
        monitor: the metric key that rule read (the member's key for a family rule).
        value: the metric's value at the check (NaN for a remote rule).
        bound: the bound in force (``None`` while a relative rule warms up).
        action: ``"warn"``, ``"quarantine"``, ``"inject"`` or ``"stop"`` (what was actually done, after escalation).
        reason: every fired rule's verdict and the action's detail, in words.
        rules: the names of every rule (family members included) that fired at this check.
    """

    rule: str
    monitor: str
    value: float
    bound: Optional[float]
    action: str
    reason: str
    rules: tuple = ()

    @property
    def threshold(self) -> Optional[float]:
        """Deprecated alias of :attr:`bound` (a rule's ``threshold`` is its absolute bound; this is the one in
        force)."""
        warnings.warn(f"`{type(self).__name__}.threshold` is deprecated: read `.bound`.", DeprecationWarning,
                      stacklevel=2)
        return self.bound

    def state_dict(self) -> dict:
        """The event as a dict (checkpoints, reports): the event kind's own fields (when, where) first."""
        shared = {f.name for f in fields(BoundEvent)}
        state = asdict(self)
        own = {k: v for k, v in state.items() if k not in shared}
        return {**own, **{k: v for k, v in state.items() if k in shared}}

    @classmethod
    def from_state(cls, state: dict):
        """Rebuild an event from :meth:`state_dict` (a checkpoint saved with ``threshold`` included; a tuple field,
        e.g. ``rules`` or ``GuardEvent.sources``, saved as a JSON list or not at all comes back as a tuple)."""
        names = {f.name for f in fields(cls)}
        state = {("bound" if k == "threshold" else k): v for k, v in state.items()}
        state["rules"] = tuple(state.get("rules") or (state["rule"],))  # saved before ``rules`` existed: its rule
        for f in fields(cls):  # a list after a JSON round trip; absent (its default) before the field existed
            if isinstance(f.default, tuple):
                state[f.name] = tuple(state.get(f.name) or f.default)
        return cls(**{k: v for k, v in state.items() if k in names})


def event_fields(fired: Sequence, detail: str) -> dict:
    """The fields of the one event of an action, from the verdicts that fired at the check (both guards use it).

    Args:
        fired: the fired :class:`~collapse_guard.callbacks.rule_state.Verdict` s, in rule order (empty: a rule fired
            on another rank).
        detail: what the action did, in words (appended to the reason).

    Returns:
        ``rule``, ``monitor``, ``value``, ``bound`` of the first fired verdict, ``rules`` (every fired rule's name,
        each fired member of a family rule), and ``reason`` (every verdict's reason, then ``detail``).

    Example::

        GuardEvent(epoch=3, global_step=90, action="stop", **event_fields(decision.fired, "stopping training"))
    """
    if not fired:
        reason = "a rule fired on another rank"
        return dict(rule="remote", monitor="", value=math.nan, bound=None, rules=("remote",),
                    reason=f"{reason}; {detail}" if detail else reason)
    first = fired[0]
    names = tuple(dict.fromkeys(
        name for v in fired for name in ([f"{v.rule.label} {m}" for m in v.members] if v.members else [v.label])
    ))
    reason = "; ".join(v.reason for v in fired)
    if len(names) > 1:
        reason = f"{len(names)} rules fired ({', '.join(names)}): {reason}"
    return dict(rule=first.label, monitor=first.monitor, value=first.value, bound=first.bound, rules=names,
                reason=f"{reason}; {detail}" if detail else reason)


@dataclass(kw_only=True)
class GuardEvent(BoundEvent):
    """One decision of ``CollapseGuard``: :class:`BoundEvent`'s fields (rule, monitor, value, bound, action,
    reason), at a check of the fit. ``threshold`` is the deprecated alias of ``bound``.

    Attributes:
        epoch: the training epoch of the check.
        global_step: the optimizer step of the check.
        sources: with action ``"quarantine"``, the synthetic sources dropped from the next epoch; else empty.
    """

    epoch: int
    global_step: int
    sources: tuple = ()



def moved(samples: int, left: int) -> str:
    """What an injection moved, in words: ``"moved 135 reserve samples into training (135 left)"``.

    Args:
        samples: reserve samples moved, ``>= 0`` (0: ``"no reserve sample left to move"``).
        left: reserve samples not yet moved, ``>= 0``.
    """
    if not samples:
        return "no reserve sample left to move"
    return f"moved {samples} reserve samples into training ({left} left)"


def fraction_change(before: float, after: float, when: str = "from the next epoch") -> str:
    """The real fraction before and after an action, in words: ``"real fraction 0.00 -> 0.50 from the next epoch"``,
    or ``"real fraction stays 1.00"`` when only reserve data moved (a change under 0.005).

    Args:
        before: the real fraction trained at, in ``[0, 1]``.
        after: the real fraction from now on, in ``[0, 1]``.
        when: when ``after`` takes effect, in words.
    """
    if abs(after - before) < 5e-3:
        return f"real fraction stays {before:.2f}"
    return f"real fraction {before:.2f} -> {after:.2f} {when}"

#: the progress bar's word for an action taken at a check
PAST = {"warn": "warned", "quarantine": "quarantined", "inject": "injected", "stop": "stopped"}


def state_word(acted: str, fired: Any, cooling: bool, last: str) -> str:
    """A guard's word for one check, for the progress bar: the action taken now (``"injected"``), ``"cooling"`` (a
    rule fired during a cooldown), ``"fired"`` (a rule fired, nothing to do), else ``"ok"``, with the last action
    taken while there was one (``"ok (injected)"``: the indicators are back within their bounds).

    Args:
        acted: the action taken at this check (``"ok"``: none).
        fired: the verdicts that fired at this check (empty: none).
        cooling: the check fell in a cooldown.
        last: the guard's state, the last action it took (``"ok"``: none yet).

    Example::

        state_word("ok", (), False, "inject")   # 'ok (injected)'
    """
    if acted in PAST and not cooling:
        return PAST[acted]
    if fired:
        return "cooling" if cooling else "fired"
    return "ok" if last not in PAST else f"ok ({PAST[last]})"
