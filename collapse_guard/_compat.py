"""The one place collapse_guard imports Lightning from.

Every module takes ``pl`` (and the classes it needs) from here, so supporting another Lightning namespace
changes this file only.

Lightning ships under two import names whose classes do not mix: ``pytorch_lightning`` (the
``pytorch-lightning`` package, the one collapse_guard depends on) and ``lightning.pytorch`` (the optional
``lightning`` package). The classes here are ``pytorch_lightning``'s; :mod:`collapse_guard.lightning` binds the
same code to ``lightning.pytorch``. Code that asks *what* an object is (a DataModule? a Callback?) goes through
:func:`datamodule_types` / :func:`is_datamodule` and :func:`callback_types`, which accept either namespace's
classes without importing ``lightning``: an object of a ``lightning.pytorch`` class can only exist once that
namespace was imported, so looking it up in ``sys.modules`` is exact.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

#: the import names of Lightning's two distributions, ``pytorch_lightning`` first
NAMESPACES = ("pytorch_lightning", "lightning.pytorch")


def lightning_namespaces() -> tuple[ModuleType, ...]:
    """The Lightning namespaces imported in this process: ``pytorch_lightning``, and ``lightning.pytorch`` when it
    was imported (by the user, or by :mod:`collapse_guard.lightning`)."""
    return tuple(sys.modules[name] for name in NAMESPACES if name in sys.modules)


def datamodule_types() -> tuple[type, ...]:
    """``LightningDataModule`` of every imported Lightning namespace: for ``isinstance(x, datamodule_types())``."""
    return tuple(ns.LightningDataModule for ns in lightning_namespaces() if hasattr(ns, "LightningDataModule"))


def callback_types() -> tuple[type, ...]:
    """``Callback`` of every imported Lightning namespace."""
    return tuple(ns.Callback for ns in lightning_namespaces() if hasattr(ns, "Callback"))


def is_datamodule(obj: Any) -> bool:
    """Whether ``obj`` is a ``LightningDataModule`` of either namespace (``pytorch_lightning`` or
    ``lightning.pytorch``)."""
    return isinstance(obj, datamodule_types())


__all__ = [
    "pl",
    "Callback",
    "LightningDataModule",
    "LightningModule",
    "Trainer",
    "callback_types",
    "datamodule_types",
    "is_datamodule",
    "lightning_namespaces",
    "rank_zero_info",
    "rank_zero_warn",
]
