"""Bad set-ups refused before the first training batch: the held-out check's dry run (one held-out real batch
through ``batch_fn``, ``forward_fn`` and the model at fit start), a reserve whose samples cannot join real ones in
a batch, and non-finite synthetic samples.

"Before training" is checked by the model having received no training batch (``TinyMLP.seen``) and
``trainer.global_step == 0``.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import IterableDataset, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from collapse_guard import HeldOutRealCheck, MixedDataModule
from collapse_guard.data.structure import non_finite_part

from cg_testing import RESERVE_BASE, SYNTH_BASE, TinyMLP, id_dataset, make_mixed, make_trainer


class Starts(Callback):
    """Records ``(model.training, grad enabled)`` at every training batch start."""

    def __init__(self):
        self.batches: list[tuple[bool, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((pl_module.training, torch.is_grad_enabled()))


def refused(check, exc, match, dm=None, model=None):
    """Fit with ``check`` and expect ``exc`` before the first training batch; the error."""
    model = model or TinyMLP()
    starts = Starts()
    trainer = make_trainer(max_epochs=1, callbacks=[check, starts])
    with pytest.raises(exc, match=match) as err:
        trainer.fit(model, datamodule=dm or make_mixed())
    assert model.seen == {} and starts.batches == [] and trainer.global_step == 0, "refused after training started"
    return err.value


# -- the dry run -------------------------------------------------------------------------------------------------
def test_heldout_inputs_the_model_cannot_take():
    err = refused(HeldOutRealCheck(batch_fn=lambda b: (b[0][:, :2], b[1])), RuntimeError,
                  r"the model TinyMLP, called through `forward_fn`, fails on held-out real inputs")
    message = str(err)
    assert "Tensor of shape (8, 2)" in message and "`batch_fn`" in message
    assert isinstance(err.__cause__, RuntimeError) and str(err.__cause__) in message  # the original, chained


def test_module_without_forward_names_forward_fn():
    class NoForward(TinyMLP):
        forward = pl.LightningModule.forward

        def training_step(self, batch, batch_idx):
            self.seen.setdefault(self.current_epoch, []).append(0)
            return self.net(batch[0][:, 1:]).sum()

    err = refused(HeldOutRealCheck(), NotImplementedError, r"NoForward defines no `forward`", model=NoForward())
    assert "forward_fn=lambda pl_module, inputs: outputs" in str(err) and "loss_fn=" in str(err)
    assert isinstance(err.__cause__, NotImplementedError)


@pytest.mark.parametrize("forward_fn", [lambda m, x: m(x)[:, :1], lambda m, x: m(x)[:, 0]], ids=["(N, 1)", "(N,)"])
def test_one_output_model(forward_fn):
    err = refused(HeldOutRealCheck(forward_fn=forward_fn), ValueError, r"one output per sample")
    assert "at least 2 classes" in str(err) and "pass a `forward_fn` that returns" in str(err)


def test_forward_fn_returning_no_tensor():
    refused(HeldOutRealCheck(forward_fn=lambda m, x: {"scores": m(x)}), TypeError,
            r"`forward_fn` returned dict with keys \['scores'\]; it must return a Tensor of logits of shape \(N, C\)")


def test_forward_fn_of_another_batch_dimension():
    err = refused(HeldOutRealCheck(forward_fn=lambda m, x: m(x)[:2]), ValueError,
                  r"`forward_fn` returned logits of shape \(2, 3\)")
    assert "N = 8 is the batch size" in str(err)


def test_batch_fn_failing_is_named():
    def batch_fn(batch):
        raise KeyError("pixels")

    err = refused(HeldOutRealCheck(batch_fn=batch_fn), KeyError, r"`batch_fn` failed on a held-out real batch")
    assert isinstance(err.__cause__, KeyError)
    refused(HeldOutRealCheck(batch_fn=lambda b: (b[0], b[1].tolist())), TypeError,
            r"`batch_fn` gave a target of type list")


def test_dry_run_with_on_error_warn_warns_and_trains():
    check, model = HeldOutRealCheck(forward_fn=lambda m, x: m(x)[:2], on_error="warn"), TinyMLP()
    with pytest.warns(UserWarning, match=r"dry run at fit start failed \(ValueError: .*N = 8 is the batch size"):
        make_trainer(max_epochs=1, callbacks=[check]).fit(model, datamodule=make_mixed())
    assert model.seen and check.history == []  # the check itself failed too, and was skipped


def test_dry_run_is_eval_no_grad_not_counted_and_leaves_the_random_state():
    """The dry run sees the model in eval mode without gradients; training then starts in train mode with
    gradients, the random state as it was before the dry run, and the same samples counted as without a check."""
    calls: list[tuple[int, bool, bool]] = []

    def forward_fn(pl_module, inputs):
        calls.append((pl_module.global_step, pl_module.training, torch.is_grad_enabled()))
        torch.rand(3)  # moves the global generator: the dry run must put it back
        return pl_module(inputs)

    class RngAt(Callback):
        def __init__(self):
            self.states = []

        def on_fit_start(self, trainer, pl_module):
            self.states.append(torch.get_rng_state())

    before, after, starts = RngAt(), RngAt(), Starts()
    check = HeldOutRealCheck(forward_fn=forward_fn)
    dm = make_mixed()
    make_trainer(max_epochs=1, callbacks=[before, check, after, starts]).fit(TinyMLP(), datamodule=dm)
    assert calls[0] == (0, False, False)  # the dry run, before any step
    assert torch.equal(before.states[0], after.states[0])
    assert starts.batches and all(batch == (True, True) for batch in starts.batches)
    plain = make_mixed()
    make_trainer(max_epochs=1, callbacks=[]).fit(TinyMLP(), datamodule=plain)
    assert dm.samples_by_source() == plain.samples_by_source()


# -- the reserve -------------------------------------------------------------------------------------------------
def test_reserve_of_another_shape_is_refused_at_setup():
    wide = TensorDataset(torch.randn(10, 6), torch.zeros(10, dtype=torch.long))
    dm = MixedDataModule(id_dataset(40, 0), {"g": id_dataset(40, SYNTH_BASE)}, holdout=0.25, reserve=wide,
                         batch_size=8)
    err = refused(HeldOutRealCheck(), ValueError, r"`reserve` yields samples that cannot be collated with the real",
                  dm=dm)
    assert "[4]" in str(err) and "[6]" in str(err)


def test_reserve_of_the_real_shape_still_passes():
    reserve = id_dataset(10, RESERVE_BASE)
    dm = MixedDataModule(id_dataset(40, 0), {"g": id_dataset(40, SYNTH_BASE)}, holdout=0.25, reserve=reserve,
                         batch_size=8, samples_per_epoch=16)
    model = TinyMLP()
    make_trainer(max_epochs=1, callbacks=[]).fit(model, datamodule=dm)
    assert model.seen


# -- non-finite synthetic samples ----------------------------------------------------------------------------------
def nan_at(n: int, i: int, value: float = float("nan")) -> TensorDataset:
    x, y = id_dataset(n, SYNTH_BASE).tensors
    x[i, 2] = value
    return TensorDataset(x, y)


@pytest.mark.parametrize("i,value", [(0, float("nan")), (3, float("inf"))])
def test_non_finite_synthetic_samples_are_refused_at_setup(i, value):
    dm = MixedDataModule(id_dataset(40, 0), {"clean": id_dataset(40, 2 * SYNTH_BASE), "gen": nan_at(40, i, value)},
                         holdout=0.25, batch_size=8)
    err = refused(HeldOutRealCheck(), ValueError,
                  rf"synthetic source 'gen' holds NaN or infinite values: its sample #{i} has them in sample\[0\]",
                  dm=dm)
    assert "Tensor[float32, 1-d]" in str(err)


def test_all_nan_synthetic_source_is_refused():
    x, y = id_dataset(40, SYNTH_BASE).tensors
    dm = MixedDataModule(id_dataset(40, 0), {"gen": TensorDataset(torch.full_like(x, float("nan")), y)},
                         holdout=0.25, batch_size=8)
    refused(HeldOutRealCheck(), ValueError, r"synthetic source 'gen' holds NaN", dm=dm)


def test_non_finite_first_stream_sample_is_refused():
    class Stream(IterableDataset):
        def __iter__(self):
            x, y = nan_at(200, 0).tensors
            return iter(zip(x, y))

    dm = MixedDataModule(id_dataset(40, 0), {"web": Stream()}, holdout=0.25, batch_size=8, samples_per_epoch=16,
                         synthetic_holdout=0.0)
    refused(HeldOutRealCheck(), ValueError, r"synthetic source 'web' holds NaN or infinite values: its first sample",
            dm=dm)


def test_non_finite_part_finds_nested_and_ignores_integers():
    assert non_finite_part({"x": torch.zeros(2), "y": torch.tensor(3)}) is None
    assert non_finite_part({"x": [1.0, float("inf")], "y": 1}) == "sample['x'] (list of numbers)"
    import numpy as np

    assert non_finite_part((np.array([np.nan]), 0)) == "sample[0] (ndarray[float64, 1-d])"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert non_finite_part((torch.tensor([1, 2]), float("nan"))) == "sample[1] (float)"


def test_dry_run_failing_on_another_rank_stops_this_one_naming_it():
    """Under several processes the dry run goes through ``run_collectively``: a rank whose own dry run passed
    raises too, naming the rank that failed and its error (a stand-in strategy plays the other rank)."""
    from types import SimpleNamespace

    class OtherRankFailed:
        root_device = torch.device("cpu")

        def batch_to_device(self, batch):
            return batch

        def reduce_boolean_decision(self, decision, all=True):
            return True  # rank 1 failed

        def reduce(self, value, reduce_op="mean"):
            return torch.tensor(1)

        def broadcast(self, obj, src=0):
            return "ValueError: HeldOutRealCheck: `forward_fn` returned logits of shape (2, 3)" if src == 1 else obj

    dm = make_mixed()
    dm.setup("fit")
    trainer = SimpleNamespace(world_size=2, global_rank=0, datamodule=dm, strategy=OtherRankFailed())
    model = TinyMLP()
    with pytest.raises(RuntimeError, match=r"HeldOutRealCheck failed on rank 1, so every rank stops: ValueError: "
                                           r"HeldOutRealCheck: `forward_fn` returned logits of shape \(2, 3\)"):
        HeldOutRealCheck().on_fit_start(trainer, model)
    assert model.training  # the training mode restored after the failed dry run
