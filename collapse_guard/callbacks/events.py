"""The guards' records of what they did: :class:`GuardEvent` (``CollapseGuard``) and the :class:`BoundEvent` base
that ``GenerationEvent`` (``GenerationGuard``) shares with it."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Optional


@dataclass
class BoundEvent:
    """What every guard event holds: which rule fired, on what value, against which bound (:attr:`bound`, read also
    under its old name ``threshold``, deprecated), what was done and why. Events of checkpoints saved with
    ``threshold`` load (:meth:`from_state`).

    Attributes:
        rule: the rule's name (``"remote"``: a rule fired on another rank).
        monitor: the metric key the rule reads.
        value: the metric's value at the check (NaN for a remote rule).
        bound: the bound in force (``None`` while a relative rule warms up).
        action: ``"warn"``, ``"inject"`` or ``"stop"`` (what was actually done, after escalation).
        reason: the rule's verdict and the action's detail, in words.
    """

    rule: str
    monitor: str
    value: float
    bound: Optional[float]
    action: str
    reason: str

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
        """Rebuild an event from :meth:`state_dict` (a checkpoint saved with ``threshold`` included)."""
        names = {f.name for f in fields(cls)}
        state = {("bound" if k == "threshold" else k): v for k, v in state.items()}
        return cls(**{k: v for k, v in state.items() if k in names})


@dataclass(kw_only=True)
class GuardEvent(BoundEvent):
    """One decision of ``CollapseGuard``: :class:`BoundEvent`'s fields (rule, monitor, value, bound, action,
    reason), at a check of the fit. ``threshold`` is the deprecated alias of ``bound``.

    Attributes:
        epoch: the training epoch of the check.
        global_step: the optimizer step of the check.
    """

    epoch: int
    global_step: int
