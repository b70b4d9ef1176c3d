"""A guard's log of its checks: at each check, every rule's value and the bound in force then, what fired, what was
done and the guard's word for it (:class:`CheckLog`, kept by ``CollapseGuard``, read by the report).

A rule's bound moves from check to check (its baseline and its noise unit are re-measured), so the bound at the end
of a fit says nothing of the bound a value was judged against: the log keeps the one of each check, and for a
family rule (``prefix/*``) the one of each member.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from collapse_guard.callbacks.events import state_word
# rules first: it re-exports rule_state's classes
from collapse_guard.callbacks.rules import Rule, RuleState, Verdict
from collapse_guard.callbacks.rule_state import beyond, natural_order


def _crossed(rule: Rule, value: float, bound: Optional[float]) -> bool:
    """Whether a finite ``value`` violates a ``bound`` in force (:func:`~collapse_guard.callbacks.rule_state.beyond`)."""
    return bound is not None and math.isfinite(value) and beyond(rule, value, bound)


def member_bounds(state: RuleState, row: Mapping[str, float]) -> dict[str, tuple[float, Optional[float]]]:
    """``{member: (value, bound in force)}`` of every member of a family rule that ``row`` holds, read before the
    rule judges them (``RuleState.bound`` changes nothing); ``{}`` for a rule on one key (its verdict has both).

    Args:
        state: the rule's state, before ``state.judge_row(row)``.
        row: the logged values of the check, ``{key: value}`` (standard errors under the rule's ``stderr`` keys).
    """
    out = {}
    for name, (value, stderr) in state.member_readings(row).items():
        member = state.members.get(name) or RuleState(state.rule.member(name))
        out[name] = (value, member.bound(stderr))
    return out


def rule_entry(verdict: Verdict, members: Mapping[str, tuple]) -> dict:
    """One rule's part of a check: ``rule`` (its name), ``monitor`` (the key judged; a family's: the member shown
    by the verdict), ``value``, ``bound`` (in force at the check; ``None`` while warming up), ``violated``,
    ``fired`` and, for a family rule, ``member`` and ``members`` (``{member: {"value", "bound", "violated",
    "fired"}}``)."""
    rule = verdict.rule
    entry = {"rule": rule.label, "monitor": verdict.monitor, "value": float(verdict.value), "bound": verdict.bound,
             "violated": bool(verdict.violated), "fired": bool(verdict.fired)}
    if rule.is_family:
        fired = set(verdict.members)
        entry["member"] = verdict.member
        entry["members"] = {
            name: {"value": value, "bound": bound, "fired": name in fired,
                   "violated": name in fired or _crossed(rule, value, bound)}
            for name, (value, bound) in sorted(members.items(), key=lambda item: natural_order(item[0]))
        }
    return entry


class CheckLog:
    """The checks of a guard, one row each (:attr:`rows`, plain data, checkpointed by the guard).

    The guard judges each rule through :meth:`judge` (which notes the bounds in force first) and ends the check with
    :meth:`close` (what was done, the word). A check at which no rule had a fresh value (a ``HeldOutRealCheck``
    running every few epochs) and nothing was done leaves no row.

    Attributes:
        rows: per check ``{"epoch", "global_step", "rules": [rule_entry, ...], "action", "state", "word"}``:
            ``action`` the one taken at the check (``"ok"``: none), ``state`` the guard's state after it (its last
            action, sticky), ``word`` the guard's word for the check
            (:func:`~collapse_guard.callbacks.events.state_word`: ``"ok (injected)"`` once the indicators are back).

    Example::

        log = CheckLog()
        verdict = log.judge(state, {"collapse/heldout_real/acc": 0.91})
        word = log.close(trainer, "ok", decision, guard.state)
        log.rows[-1]["rules"][0]["bound"]          # the bound the value was judged against
    """

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._pending: list[dict] = []

    def judge(self, state: RuleState, row: Mapping[str, float]) -> Optional[Verdict]:
        """``state.judge_row(row)``, the verdict noted (with a family's members and their bounds) for this check."""
        members = member_bounds(state, row)
        verdict = state.judge_row(row)
        if verdict is not None:
            self._pending.append(rule_entry(verdict, members))
        return verdict

    def close(self, trainer: Any, acted: str, decision: Any, state: str) -> str:
        """End the check: add its row (when a rule was judged or an action taken) and return the guard's word.

        Args:
            trainer: the Trainer (its ``current_epoch`` and ``global_step``).
            acted: the action taken at this check (``"ok"``: none).
            decision: the check's decision (its ``fired`` verdicts and ``cooling``).
            state: the guard's state after the check.
        """
        acted = "ok" if decision.cooling else acted
        word = state_word(acted, decision.fired, decision.cooling, state)
        rules, self._pending = self._pending, []
        if rules or acted != "ok":
            self.rows.append({"epoch": int(trainer.current_epoch), "global_step": int(trainer.global_step),
                              "rules": rules, "action": acted, "state": state, "word": word})
        return word

    def state_dict(self) -> dict:
        return {"checks": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: Optional[dict]) -> None:
        """Restore :meth:`state_dict` (a guard's state saved before the log existed: no rows)."""
        self.rows = list((state_dict or {}).get("checks") or [])
        self._pending = []
