"""collapse_guard: keep training on synthetic data honest, in PyTorch Lightning.

Wrap your LightningDataModule in :class:`MixedDataModule`, add :class:`RatioMonitor`, :class:`HeldOutRealCheck`
and :class:`CollapseGuard` to your Trainer; your LightningModule stays as it is.

These classes belong to ``pytorch_lightning``; with ``import lightning.pytorch as L`` take the same classes from
:mod:`collapse_guard.lightning` (imported on demand, so ``lightning`` stays optional).
"""
from collapse_guard.callbacks import CollapseGuard, GuardEvent, HeldOutRealCheck, RatioMonitor, Rule, default_rules
from collapse_guard.callbacks import CollapseReport, SourceAudit, SourceCheck
from collapse_guard.data import MixedDataModule, SyntheticSource

__version__ = "0.1.0"

__all__ = [
    "CollapseGuard",
    "CollapseReport",
    "GuardEvent",
    "HeldOutRealCheck",
    "MixedDataModule",
    "RatioMonitor",
    "Rule",
    "SourceAudit",
    "SourceCheck",
    "SyntheticSource",
    "default_rules",
]
