"""Where a ``CollapseGuard`` finds its checkpointed state: Lightning stores a callback's state under its
``state_key``, and a guard's key is made of its rules' repr and its default action. Two changes moved the key of the
same guard; checkpoints saved before them still find their state through the older keys built here:

* ``Rule.margin`` was called ``min_delta`` (:meth:`Rule.legacy_repr <collapse_guard.callbacks.rules.Rule.legacy_repr>`);
* :func:`~collapse_guard.callbacks.rules.heldout_loss_rule` joined :func:`~collapse_guard.default_rules` as its last
  rule: a default guard saved before holds the state of the rules before it.
"""
from __future__ import annotations

from typing import Callable, Sequence

from collapse_guard.callbacks.rules import Rule, RuleState, heldout_loss_rule

#: ``Callback._generate_state_key``: ``(**kwargs) -> "<ClassName>{kwargs!r}"``
MakeKey = Callable[..., str]


class _Shown(str):
    """A string whose repr is itself (a rule's old repr, inside a ``state_key``)."""

    def __repr__(self) -> str:
        return str(self)


def legacy_state_key(make_key: MakeKey, rules: Sequence[Rule], action: str) -> str:
    """The key of a guard with these rules saved while ``Rule.margin`` was called ``min_delta``."""
    return make_key(rules=[_Shown(r.legacy_repr()) for r in rules], action=action)


def older_state_keys(make_key: MakeKey, rules: Sequence[Rule], action: str) -> list[str]:
    """The keys of a guard whose last rule is :func:`heldout_loss_rule` saved before that rule existed: the key of
    the rules before it, with ``margin`` and with its old name ``min_delta`` (empty for other guards)."""
    if len(rules) < 2 or rules[-1] != heldout_loss_rule():
        return []
    older = list(rules[:-1])
    return [make_key(rules=older, action=action), legacy_state_key(make_key, older, action)]


def adopt_older_state(checkpoint: dict, key: str, legacy_key: str, older_keys: Sequence[str],
                      added: RuleState) -> None:
    """Move a guard's state saved under one of ``older_keys`` to ``key`` in ``checkpoint["callbacks"]``, with
    ``added``'s (fresh) state for the rule added since; nothing when the state is under ``key`` or ``legacy_key``
    already, or under none of them.

    Example::

        adopt_older_state(checkpoint, guard.state_key, guard._legacy_state_key,
                          older_state_keys(guard._generate_state_key, guard.rules, guard.action),
                          RuleState(guard.rules[-1]))
    """
    saved = checkpoint.get("callbacks") or {}
    if key in saved or legacy_key in saved:
        return
    found = next((k for k in older_keys if k in saved), None)
    if found is not None:
        state = dict(saved.pop(found))
        state["rules"] = list(state["rules"]) + [added.state_dict()]
        saved[key] = state
