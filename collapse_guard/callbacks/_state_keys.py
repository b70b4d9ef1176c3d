"""Where a ``CollapseGuard`` finds its checkpointed state: Lightning stores a callback's state under its
``state_key``, and a guard's key is made of its rules' repr and its default action. Two changes moved the key of the
same guard; checkpoints saved before them still find their state through the older keys built here:

* ``Rule.margin`` was called ``min_delta`` (:meth:`Rule.legacy_repr <collapse_guard.callbacks.rules.Rule.legacy_repr>`);
* :func:`~collapse_guard.callbacks.rules.heldout_loss_rule` joined :func:`~collapse_guard.default_rules` as its last
  rule: a default guard saved before holds the state of the rules before it;
* the default rules took the noise model of issue 14 (:func:`earlier_default_rules`), then, in its round 2, the
  paired indicators: a default guard saved with any earlier defaults keeps its events and injections; its rules
  start their baselines afresh (a rule that is the same then and now, :func:`heldout_loss_rule`, keeps its state).
"""
from __future__ import annotations

from typing import Callable, Sequence

from collapse_guard.callbacks.rules import Rule, RuleState, default_rules, heldout_loss_rule

#: ``Callback._generate_state_key``: ``(**kwargs) -> "<ClassName>{kwargs!r}"``
MakeKey = Callable[..., str]


class _Shown(str):
    """A string whose repr is itself (a rule's old repr, inside a ``state_key``)."""

    def __repr__(self) -> str:
        return str(self)


def legacy_state_key(make_key: MakeKey, rules: Sequence[Rule], action: str) -> str:
    """The key of a guard with these rules saved while ``Rule.margin`` was called ``min_delta``."""
    return make_key(rules=[_Shown(r.legacy_repr()) for r in rules], action=action)


def earlier_default_rules() -> list[list[Rule]]:
    """The rules of ``CollapseGuard()`` in earlier versions, newest first: issue 14's round 1 (``benchmarks/
    RESULTS.md`` section 5: accuracy in held-out standard errors below its best, each class's recall against its
    own level and check-to-check noise, the effective number of classes), then before issue 14 (the first three
    rules in standard errors of the held-out sample, from the best single check), with and without
    :func:`heldout_loss_rule`."""
    round1 = [
        Rule("collapse/heldout_real/acc", mode="max", sigmas=3.0, baseline_checks=3, name="heldout_real_acc"),
        Rule("collapse/heldout_real/class_recall/*", mode="max", sigmas=4.0, noise="combined", baseline="level",
             baseline_checks=3, patience=3, name="class"),
        Rule("collapse/heldout_real/eff_classes_ratio", mode="max", sigmas=2.0, noise="checks", min_change=0.03,
             baseline="level", baseline_checks=3, patience=2, name="eff_classes"),
        heldout_loss_rule(),
    ]
    before = [
        Rule("collapse/heldout_real/acc", mode="max", sigmas=2.0, patience=2, name="heldout_real_acc"),
        Rule("collapse/heldout_real/worst_class_recall", mode="max", sigmas=2.0, patience=2, name="worst_class"),
        Rule("collapse/heldout_real/eff_classes_ratio", mode="max", relative=0.05, patience=2, name="eff_classes"),
    ]
    return [round1, before + [heldout_loss_rule()], before]


def older_state_keys(make_key: MakeKey, rules: Sequence[Rule], action: str) -> list[tuple[str, list[Rule]]]:
    """The keys under which an older version saved the state of a guard with these rules, each with the rules it
    was saved with: a guard whose last rule is :func:`heldout_loss_rule` saved before that rule existed (the rules
    before it), and a guard with today's default rules saved with an earlier version's defaults; each with
    ``margin`` and with its old name ``min_delta``. Empty for other guards."""
    candidates: list[list[Rule]] = []
    if len(rules) >= 2 and rules[-1] == heldout_loss_rule():
        candidates.append(list(rules[:-1]))
    if list(rules) == default_rules():
        candidates += earlier_default_rules()
    return [(key, older) for older in candidates
            for key in (make_key(rules=older, action=action), legacy_state_key(make_key, older, action))]


def adopt_older_state(checkpoint: dict, key: str, legacy_key: str, older: Sequence[tuple[str, list[Rule]]],
                      rules: Sequence[Rule]) -> list[str]:
    """Move a guard's state saved under one of the ``older`` keys to ``key`` in ``checkpoint["callbacks"]``: the
    events, injections, cooldown and state as saved; each rule's state where the saved rules hold the same rule,
    a fresh state for the others. Nothing when the state is under ``key`` or ``legacy_key`` already, or under none
    of the keys.

    Returns:
        The names of the rules whose state starts afresh (empty when nothing was adopted).

    Example::

        adopt_older_state(checkpoint, guard.state_key, guard._legacy_state_key,
                          older_state_keys(guard._generate_state_key, guard.rules, guard.action), guard.rules)
    """
    saved = checkpoint.get("callbacks") or {}
    if key in saved or legacy_key in saved:
        return []
    found = next(((k, old) for k, old in older if k in saved), None)
    if found is None:
        return []
    old_key, old_rules = found
    state = dict(saved.pop(old_key))
    by_rule = dict(zip(old_rules, state["rules"]))
    state["rules"] = [by_rule.get(rule) or RuleState(rule).state_dict() for rule in rules]
    saved[key] = state
    return [rule.label for rule in rules if rule not in by_rule]
