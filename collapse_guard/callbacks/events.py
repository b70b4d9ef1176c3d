"""The guards' records of what they did: :class:`GuardEvent` (``CollapseGuard``) and the :class:`BoundEvent` base
that ``GenerationEvent`` (``GenerationGuard``) shares with it."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Optional


class BoundEvent:
    """What every guard event has: the bound in force when its rule fired (:attr:`bound`), read also under its
    old name ``threshold`` (deprecated), and a checkpoint form that older checkpoints (with ``threshold``) load
    from."""

    bound: Optional[float]

    @property
    def threshold(self) -> Optional[float]:
        """Deprecated alias of :attr:`bound` (a rule's ``threshold`` is its absolute bound; this is the one in
        force)."""
        warnings.warn(f"`{type(self).__name__}.threshold` is deprecated: read `.bound`.", DeprecationWarning,
                      stacklevel=2)
        return self.bound

    def state_dict(self) -> dict:
        """The event as a dict of its fields (checkpoints)."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_state(cls, state: dict):
        """Rebuild an event from :meth:`state_dict` (a checkpoint saved with ``threshold`` included)."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        state = {("bound" if k == "threshold" else k): v for k, v in state.items()}
        return cls(**{k: v for k, v in state.items() if k in names})


@dataclass
class GuardEvent(BoundEvent):
    """One decision of ``CollapseGuard``: which rule fired, on what value, against which bound, and what was done.

    Attributes:
        epoch: the training epoch of the check.
        global_step: the optimizer step of the check.
        rule: the rule's name (``"remote"``: a rule fired on another rank).
        monitor: the metric key the rule reads.
        value: the metric's value at the check (NaN for a remote rule).
        bound: the bound in force (``None`` while a relative rule warms up). ``threshold`` is its deprecated alias.
        action: ``"warn"``, ``"inject"`` or ``"stop"`` (what was actually done, after escalation).
        reason: the rule's verdict and the action's detail, in words.
    """

    epoch: int
    global_step: int
    rule: str
    monitor: str
    value: float
    bound: Optional[float]
    action: str
    reason: str
