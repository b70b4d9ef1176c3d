"""collapse_guard under both Lightning namespaces: ``pytorch_lightning`` and ``lightning.pytorch``.

Their classes do not mix: a ``lightning.pytorch`` Trainer rejects a ``pytorch_lightning`` DataModule. The code is
written once; ``collapse_guard.MixedDataModule`` binds it to ``pytorch_lightning``, ``collapse_guard.lightning``
to ``lightning.pytorch``. Callbacks of either binding work in either Trainer (hooks are looked up by name), with
their checkpoint state; the ``collapse_guard.lightning`` callbacks are instances of both namespaces' ``Callback``.
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import pytorch_lightning as pl

L = pytest.importorskip("lightning.pytorch")

import collapse_guard as cg
import collapse_guard.lightning as cgl
from collapse_guard._compat import callback_types, datamodule_types, is_datamodule
from collapse_guard.data import MixedDataModuleMixin

from cg_testing import DIM, NUM_CLASSES, REAL_BASE, SYNTH_BASE, VAL_BASE, RealDM, TinyMLP, id_dataset

NAMESPACES = {"pytorch_lightning": (pl, cg), "lightning.pytorch": (L, cgl)}

pytestmark = pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")


class LRealDM(L.LightningDataModule):
    """The user's real DataModule, written against ``lightning.pytorch``."""

    def __init__(self, n_train: int = 60, n_val: int = 20, batch_size: int = 8):
        super().__init__()
        self.n_train, self.n_val, self.bs = n_train, n_val, batch_size

    def setup(self, stage: str) -> None:
        self.train_set = id_dataset(self.n_train, REAL_BASE)
        self.val_set = id_dataset(self.n_val, VAL_BASE)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.bs, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.bs)


class LTinyMLP(L.LightningModule):
    """``TinyMLP`` written against ``lightning.pytorch``."""

    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(DIM - 1, 16), torch.nn.ReLU(), torch.nn.Linear(16, NUM_CLASSES))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, 1:])

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def model_of(ns):
    return TinyMLP() if ns is pl else LTinyMLP()


def real_dm_of(ns):
    return RealDM() if ns is pl else LRealDM()


def trainer_of(ns, callbacks, max_epochs=3, **kwargs):
    opts = dict(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                callbacks=callbacks)
    opts.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ns.Trainer(**opts)


def callbacks_of(api, report_dir=None):
    cbs = [api.RatioMonitor(), api.HeldOutRealCheck(features=False),
           api.CollapseGuard(rules=[api.Rule("collapse/heldout_real/acc", threshold=2.0, patience=2)], action="inject")]
    if report_dir is not None:
        cbs.append(api.CollapseReport(dirpath=report_dir, plots=False, html=False, summary=False))
    return cbs


def mixed_of(api, real, **kwargs):
    synthetic = {"g1": id_dataset(60, SYNTH_BASE, label=0)}
    opts = dict(real_fraction=0.25, holdout="val", reserve=0.25, samples_per_epoch=64, seed=1)
    opts.update(kwargs)
    return api.MixedDataModule(real, synthetic, **opts)


@pytest.mark.parametrize("name", list(NAMESPACES))
@pytest.mark.parametrize("real_ns", ["same", "other"])
def test_fit_under_each_namespace(name, real_ns, tmp_path):
    """A full fit in each namespace's Trainer, wrapping a real DataModule of the same or of the other namespace:
    exact counts, metrics logged, the guard injected, the report written."""
    ns, api = NAMESPACES[name]
    other = L if ns is pl else pl
    real = real_dm_of(ns if real_ns == "same" else other)
    dm = mixed_of(api, real)
    assert isinstance(dm, ns.LightningDataModule) and isinstance(dm, MixedDataModuleMixin)
    cbs = callbacks_of(api, tmp_path / "report")
    trainer = trainer_of(ns, cbs)
    trainer.fit(model_of(ns), datamodule=dm)

    samples = [h["samples"] for h in cbs[0].history]
    assert samples[:2] == [{"real": 16, "reserve": 0, "g1": 48}] * 2  # batches of 8 at 0.25: exactly 2 real each
    assert samples[2]["real"] + samples[2]["reserve"] == 48  # the injection raised the fraction 0.25 -> 0.75
    assert dm.samples_by_source() == {k: sum(s[k] for s in samples) for k in ("real", "reserve", "g1")}
    assert "collapse/heldout_real/acc" in trainer.callback_metrics
    guard = cbs[2]
    assert guard.events and guard.events[0].action == "inject"  # threshold 2.0 on accuracy: fires at the 2nd check
    assert dm.injections and dm.injections[0]["epoch"] == 1
    assert (tmp_path / "report" / "report.json").exists() and (tmp_path / "report" / "provenance.json").exists()


def test_datamodule_of_the_other_namespace_is_rejected():
    """Why ``collapse_guard.lightning.MixedDataModule`` exists: Lightning rejects the other namespace's DataModule."""
    dm = mixed_of(cg, RealDM())
    trainer = trainer_of(L, callbacks_of(cg), max_epochs=1)
    with pytest.raises(Exception):
        trainer.fit(LTinyMLP(), datamodule=dm)


@pytest.mark.parametrize("trainer_ns", ["pytorch_lightning", "lightning.pytorch"])
@pytest.mark.parametrize("callback_api", ["collapse_guard", "collapse_guard.lightning"])
def test_callbacks_of_either_binding_work_in_either_trainer(trainer_ns, callback_api, tmp_path):
    """Lightning calls callback hooks by name, so ``collapse_guard``'s (``pytorch_lightning``) callbacks also run in a
    ``lightning.pytorch`` Trainer, and the other way round: counts, metrics, guard decisions and checkpoint state
    (saved under the same ``state_key``, restored on resume) are the same."""
    ns, dm_api = NAMESPACES[trainer_ns]
    api = cg if callback_api == "collapse_guard" else cgl
    cbs = callbacks_of(api)
    ckpt = (pl if ns is pl else L).callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True,
                                                             save_on_train_epoch_end=True)
    trainer = trainer_of(ns, cbs + [ckpt], max_epochs=2, enable_checkpointing=True)
    trainer.fit(model_of(ns), datamodule=mixed_of(dm_api, real_dm_of(ns)))
    # the guard sorted itself behind the producers in trainer.callbacks, whatever the namespace
    kinds = [type(cb).__name__ for cb in trainer.callbacks if isinstance(cb, (cg.RatioMonitor, cg.CollapseGuard,
                                                                              cg.HeldOutRealCheck))]
    assert kinds.index("CollapseGuard") > max(kinds.index("RatioMonitor"), kinds.index("HeldOutRealCheck"))
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)
    keys = set(state["callbacks"])
    assert {"RatioMonitor", "HeldOutRealCheck", cbs[2].state_key} <= keys
    assert state["MixedDataModule"]["total_counts"] == [2 * 16, 0, 2 * 48]
    assert len(state["callbacks"]["HeldOutRealCheck"]["history"]) == 2

    resumed = callbacks_of(api)
    trainer = trainer_of(ns, resumed, max_epochs=3)
    dm = mixed_of(dm_api, real_dm_of(ns))
    trainer.fit(model_of(ns), datamodule=dm, ckpt_path=tmp_path / "last.ckpt")
    drawn = dm.samples_by_source()
    assert drawn["real"] + drawn["reserve"] >= 3 * 16
    assert sum(drawn.values()) == 3 * 64
    assert len(resumed[1].history) == 3 and resumed[1].history[:2] == cbs[1].history
    assert resumed[2].events[: len(cbs[2].events)] == cbs[2].events and resumed[2].injections >= cbs[2].injections


def test_checkpoint_written_under_one_namespace_resumes_under_the_other(tmp_path):
    """Same class names, same ``state_key``s: a ``pytorch_lightning`` fit resumes in ``lightning.pytorch``."""
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_on_train_epoch_end=True)
    first = callbacks_of(cg)
    trainer_of(pl, first + [ckpt], max_epochs=2, enable_checkpointing=True).fit(
        TinyMLP(), datamodule=mixed_of(cg, RealDM()))
    resumed = callbacks_of(cgl)
    dm = mixed_of(cgl, LRealDM())
    trainer_of(L, resumed, max_epochs=3).fit(LTinyMLP(), datamodule=dm, ckpt_path=tmp_path / "last.ckpt")
    assert len(resumed[1].history) == 3
    assert resumed[1].history[:2] == first[1].history
    assert resumed[2].injections == first[2].injections == 1
    assert sum(dm.samples_by_source().values()) == 3 * 64


def test_lightning_callbacks_are_both_namespaces_callbacks():
    for name in ("RatioMonitor", "HeldOutRealCheck", "CollapseGuard", "CollapseReport", "SourceAudit", "SourceCheck"):
        cls = getattr(cgl, name)
        assert issubclass(cls, getattr(cg, name)) and issubclass(cls, L.Callback) and issubclass(cls, pl.Callback)
        assert cls.__doc__ == getattr(cg, name).__doc__
    guard_pl, guard_l = cg.CollapseGuard(), cgl.CollapseGuard()
    assert guard_pl.state_key == guard_l.state_key
    assert cgl.MixedDataModule.__doc__ == cg.MixedDataModule.__doc__
    assert not issubclass(cgl.MixedDataModule, pl.LightningDataModule)
    assert not issubclass(cg.MixedDataModule, L.LightningDataModule)


def test_lightning_binding_offers_every_public_name():
    """``collapse_guard.lightning`` offers every name of ``collapse_guard``: the Lightning classes bound to
    ``lightning.pytorch``, everything else the very same object."""
    assert cgl.__all__ == cg.__all__
    lightning_classes = {"MixedDataModule", "RatioMonitor", "HeldOutRealCheck", "CollapseGuard", "CollapseReport",
                         "SourceAudit", "SourceCheck"}
    for name in cg.__all__:
        ours, theirs = getattr(cgl, name), getattr(cg, name)
        if name in lightning_classes:
            assert ours is not theirs and ours.__name__ == name
        else:
            assert ours is theirs, name
            assert not (isinstance(ours, type) and issubclass(ours, (pl.Callback, pl.LightningDataModule))), name
    namespace: dict = {}
    exec("from collapse_guard.lightning import *", namespace)
    assert set(cg.__all__) <= set(namespace)


def test_compat_accepts_either_namespace():
    assert set(datamodule_types()) == {pl.LightningDataModule, L.LightningDataModule}
    assert set(callback_types()) == {pl.Callback, L.Callback}
    assert is_datamodule(RealDM()) and is_datamodule(LRealDM()) and is_datamodule(mixed_of(cgl, RealDM()))
    assert not is_datamodule(id_dataset(4, 0))


def test_callbacks_require_a_mixed_datamodule_of_either_namespace():
    trainer = trainer_of(L, [cgl.RatioMonitor()], max_epochs=1)
    with pytest.raises(TypeError, match="MixedDataModule"):
        trainer.fit(LTinyMLP(), datamodule=LRealDM())


def test_import_collapse_guard_does_not_import_lightning():
    """``lightning`` stays optional: only ``collapse_guard.lightning`` imports it."""
    code = ("import sys, collapse_guard, collapse_guard.data, collapse_guard.callbacks; "
            "print(any(m == 'lightning' or m.startswith('lightning.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_datamodule_of_one_namespace_in_a_trainer_of_the_other_names_the_fix():
    """Lightning's own error is ``ValueError: Expected a parent``, from deep inside the fit."""
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.demos.boring_classes import BoringModel

    from collapse_guard import MixedDataModule as PlMixed

    from cg_testing import make_mixed

    dm = make_mixed()
    assert isinstance(dm, PlMixed)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.raises(TypeError, match=r"from collapse_guard.lightning import MixedDataModule"):
        trainer.fit(BoringModel(), datamodule=dm)
