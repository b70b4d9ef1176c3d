"""Callbacks: measure (``RatioMonitor``, ``HeldOutRealCheck``) and decide (``CollapseGuard``)."""
from collapse_guard.callbacks.guard import CollapseGuard, GuardEvent, default_rules
from collapse_guard.callbacks.heldout import HeldOutRealCheck
from collapse_guard.callbacks.ratio import RatioMonitor
from collapse_guard.callbacks.report import CollapseReport
from collapse_guard.callbacks.rules import Rule, RuleState, Verdict

__all__ = ["CollapseGuard", "CollapseReport", "GuardEvent", "HeldOutRealCheck", "RatioMonitor", "Rule", "RuleState", "Verdict", "default_rules"]
