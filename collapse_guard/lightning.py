"""collapse_guard for the ``lightning.pytorch`` namespace (``pip install lightning``).

Lightning ships under two import names whose classes do not mix: ``pytorch_lightning`` (``import
pytorch_lightning as pl``, what :mod:`collapse_guard` binds to) and ``lightning.pytorch`` (``import
lightning.pytorch as L``, Lightning's documentation). A ``lightning.pytorch`` ``Trainer`` rejects a
``pytorch_lightning`` ``LightningDataModule`` (``ValueError: Expected a parent``), and its ``LightningCLI`` accepts
only ``lightning.pytorch`` callbacks and DataModules. This module binds the same code to ``lightning.pytorch``;
nothing is copied:

* :class:`MixedDataModule` is :class:`~collapse_guard.data.datamodule.MixedDataModuleMixin` (all of the
  DataModule's code) on ``lightning.pytorch.LightningDataModule``;
* :class:`RatioMonitor`, :class:`HeldOutRealCheck`, :class:`CollapseGuard`, :class:`CollapseReport`,
  :class:`SourceAudit` and :class:`SourceCheck` are the :mod:`collapse_guard` callbacks with
  ``lightning.pytorch.Callback`` as a second base: each is an instance of *both* namespaces' ``Callback`` (and of
  the :mod:`collapse_guard` class of its name), so it works in either namespace's ``Trainer`` and ``LightningCLI``,
  finds and is found by the other callbacks, and keeps the checkpoint key (``state_key``) of its
  :mod:`collapse_guard` class: a checkpoint written under one namespace resumes
  under the other.

Everything else (``Rule``, ``SyntheticSource``, ``GuardEvent``, ``default_rules``) holds no Lightning class and is
re-exported as it is. ``lightning`` is imported only when this module is, so it stays an optional dependency.

Example::

    import lightning.pytorch as L
    from collapse_guard.lightning import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor

    dm = MixedDataModule(real=MyLightningDataModule(), synthetic={"gen1": ds1}, real_fraction=0.3, reserve=0.2)
    trainer = L.Trainer(callbacks=[RatioMonitor(), HeldOutRealCheck(), CollapseGuard()])
    trainer.fit(model, datamodule=dm)
"""
from __future__ import annotations

try:
    import lightning.pytorch as _L
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "collapse_guard.lightning binds collapse_guard to the `lightning.pytorch` namespace, which needs the "
        "`lightning` package: `pip install lightning`. With `pytorch_lightning` use `collapse_guard` itself."
    ) from err

import collapse_guard as _cg
from collapse_guard import callbacks as _callbacks
from collapse_guard.callbacks import GuardEvent, Rule, default_rules  # noqa: F401 (re-exported as they are)
from collapse_guard.data import MixedDataModuleMixin, SyntheticSource  # noqa: F401

#: the namespace the classes of this module belong to
NAMESPACE = "lightning.pytorch"


class MixedDataModule(MixedDataModuleMixin, _L.LightningDataModule):
    __doc__ = MixedDataModuleMixin.__doc__


class RatioMonitor(_callbacks.RatioMonitor, _L.Callback):
    __doc__ = _callbacks.RatioMonitor.__doc__


class HeldOutRealCheck(_callbacks.HeldOutRealCheck, _L.Callback):
    __doc__ = _callbacks.HeldOutRealCheck.__doc__


class CollapseGuard(_callbacks.CollapseGuard, _L.Callback):
    __doc__ = _callbacks.CollapseGuard.__doc__


class CollapseReport(_callbacks.CollapseReport, _L.Callback):
    __doc__ = _callbacks.CollapseReport.__doc__


class SourceAudit(_callbacks.SourceAudit, _L.Callback):
    __doc__ = _callbacks.SourceAudit.__doc__


class SourceCheck(_callbacks.SourceCheck, _L.Callback):
    __doc__ = _callbacks.SourceCheck.__doc__


#: the public names of :mod:`collapse_guard`, each bound here (to ``lightning.pytorch`` where it is a Lightning class)
__all__ = list(_cg.__all__)
