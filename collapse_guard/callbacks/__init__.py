"""Callbacks: measure (``RatioMonitor``, ``HeldOutRealCheck``) and decide (``CollapseGuard``)."""
from collapse_guard.callbacks.events import GuardEvent
from collapse_guard.callbacks.guard import CollapseGuard, default_rules
from collapse_guard.callbacks.policy import Decision, decide
from collapse_guard.callbacks.heldout import HeldOutRealCheck
from collapse_guard.callbacks.ratio import RatioMonitor
from collapse_guard.callbacks.report import CollapseReport
from collapse_guard.callbacks.rules import Rule, RuleState, Verdict
from collapse_guard.callbacks.source_audit import SourceAudit
from collapse_guard.callbacks.source_check import SourceCheck

__all__ = [
    "CollapseGuard", "CollapseReport", "Decision", "GuardEvent", "HeldOutRealCheck", "RatioMonitor", "Rule", "RuleState",
    "SourceAudit", "SourceCheck", "Verdict", "decide", "default_rules",
]
