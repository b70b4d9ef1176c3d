"""Bad set-ups refused before the first training batch: the held-out check's dry run (one held-out real batch
through ``batch_fn``, ``forward_fn`` and the model at fit start), a reserve whose samples cannot join real ones in
a batch, and non-finite synthetic samples: at set-up where the data allows it (every row of a source with bulk
access, every sample of a small one), else as training reads them (a large source without bulk access, a stream),
before the batch holding them is trained on.

"Before training" is checked by the model having received no training batch (``TinyMLP.seen``) and
``trainer.global_step == 0``.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from collapse_guard import HeldOutRealCheck, MixedDataModule
from collapse_guard.data import checks
from collapse_guard.data.finite import bad_rows, bulk_non_finite, non_finite_rows
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
def nan_at(n: int, *rows: int, value: float = float("nan")) -> TensorDataset:
    x, y = id_dataset(n, SYNTH_BASE).tensors
    x[list(rows), 2] = value
    return TensorDataset(x, y)


class Opaque(Dataset):
    """A Dataset whose ``__getitem__`` is all there is (no bulk access)."""

    def __init__(self, dataset: TensorDataset):
        self.x, self.y = dataset.tensors

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class WithRows(Opaque):
    """The same over numpy or memory-mapped arrays, declaring them (``row_arrays``): bulk access."""

    def __init__(self, dataset: TensorDataset, folder=None):
        x, y = (t.numpy() for t in dataset.tensors)
        if folder is not None:
            x, y = (memmapped(folder / f"{name}.npy", a) for name, a in (("x", x), ("y", y)))
        self.x, self.y = x, y

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.x[i])), torch.tensor(int(self.y[i]))

    def row_arrays(self):
        return self.x, self.y


def memmapped(path, array: np.ndarray) -> np.ndarray:
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=array.dtype, shape=array.shape)
    mm[:] = array
    mm.flush()
    return np.load(path, mmap_mode="r")


class Stream(IterableDataset):
    def __init__(self, dataset: TensorDataset):
        self.x, self.y = dataset.tensors

    def __iter__(self):
        return iter(zip(self.x, self.y))


@pytest.mark.parametrize("i,value", [(0, float("nan")), (3, float("inf"))])
def test_non_finite_synthetic_samples_are_refused_at_setup(i, value):
    synthetic = {"clean": id_dataset(40, 2 * SYNTH_BASE), "gen": nan_at(40, i, value=value)}
    dm = MixedDataModule(id_dataset(40, 0), synthetic, holdout=0.25, batch_size=8)
    err = refused(HeldOutRealCheck(), ValueError,
                  rf"synthetic source 'gen' holds NaN or infinite values: its sample #{i} has them in sample\[0\]",
                  dm=dm)
    assert "Tensor[float32, 1-d]" in str(err) and "(1 of its 40 samples hold some)" in str(err)


def test_all_nan_synthetic_source_is_refused():
    x, y = id_dataset(40, SYNTH_BASE).tensors
    dm = MixedDataModule(id_dataset(40, 0), {"gen": TensorDataset(torch.full_like(x, float("nan")), y)},
                         holdout=0.25, batch_size=8)
    refused(HeldOutRealCheck(), ValueError, r"synthetic source 'gen' holds NaN.* \(40 of its 40 samples hold some\)",
            dm=dm)


def test_non_finite_first_stream_sample_is_refused():
    dm = MixedDataModule(id_dataset(40, 0), {"web": Stream(nan_at(200, 0))}, holdout=0.25, batch_size=8,
                         samples_per_epoch=16, synthetic_holdout=0.0)
    refused(HeldOutRealCheck(), ValueError, r"synthetic source 'web' holds NaN or infinite values: its first sample",
            dm=dm)


def test_nan_deep_in_a_tensor_source_is_refused_at_setup():
    """Every row of a source with bulk access is checked at set-up, not its first samples only."""
    dm = MixedDataModule(id_dataset(40, 0), {"gen": nan_at(10_000, 5000, 5001, 9999)}, holdout=0.25, batch_size=8)
    err = refused(HeldOutRealCheck(), ValueError,
                  r"synthetic source 'gen' holds NaN or infinite values: its sample #5000 has them in sample\[0\] "
                  r"\(Tensor\[float32, 1-d\]\) \(3 of its 10000 samples hold some\)", dm=dm)
    assert "before passing the source to `synthetic`" in str(err)


@pytest.mark.parametrize("memmap", [False, True], ids=["numpy", "memmap"])
def test_non_finite_rows_of_arrays_are_refused_at_setup(tmp_path, memmap):
    synth = WithRows(nan_at(3000, 2999, value=float("-inf")), tmp_path if memmap else None)
    dm = MixedDataModule(id_dataset(40, 0), {"gen": synth}, holdout=0.25, batch_size=8)
    refused(HeldOutRealCheck(), ValueError, r"'gen' holds NaN or infinite values: its sample #2999 has them in "
                                            r"sample\[0\] \(Tensor\[float32, 1-d\]\) \(1 of its 3000 samples", dm=dm)


def test_a_non_finite_last_sample_of_a_small_opaque_source_is_refused_at_setup():
    dm = MixedDataModule(id_dataset(40, 0), {"gen": Opaque(nan_at(300, 299))}, holdout=0.25, batch_size=8)
    refused(HeldOutRealCheck(), ValueError, r"'gen' holds NaN or infinite values: its sample #299 has them in "
                                            r"sample\[0\] \(Tensor\[float32, 1-d\]\) \(1 of its 300 samples", dm=dm)


def test_a_non_finite_reserve_is_refused_at_setup():
    x, y = id_dataset(10, RESERVE_BASE).tensors
    x[7, 1] = float("inf")
    dm = MixedDataModule(id_dataset(40, 0), {"g": id_dataset(40, SYNTH_BASE)}, holdout=0.25,
                         reserve=TensorDataset(x, y), batch_size=8)
    refused(HeldOutRealCheck(), ValueError, r"`reserve` holds NaN or infinite values: its sample #7 .*before "
                                            r"passing the source as `reserve`", dm=dm)


def fit_until_refused(dm, match, epochs=1):
    """Fit ``dm``: a ``ValueError`` matching ``match`` during training; the model (what it trained on)."""
    model = TinyMLP()
    with pytest.raises(ValueError, match=match) as err:
        make_trainer(max_epochs=epochs, callbacks=[], limit_val_batches=0).fit(model, datamodule=dm)
    assert "checkpoints saved so far are kept" in str(err.value)
    return model


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_large_opaque_source_is_checked_as_the_first_epoch_reads_it(monkeypatch, num_workers):
    monkeypatch.setattr(checks, "DEFER_MIN_ROWS", 50)
    dm = MixedDataModule(id_dataset(80, 0), {"gen": Opaque(nan_at(120, 100))}, holdout=0.25, batch_size=8,
                         synthetic_holdout=0.0, real_fraction=0.25, samples_per_epoch=400, num_workers=num_workers)
    dm.setup("fit")  # not read at set-up: its first samples only
    assert dm._finite is not None and dm._finite.reading()
    model = fit_until_refused(dm, r"synthetic source 'gen' holds NaN or infinite values: its sample #100 has them in "
                                  r"sample\[0\] \(Tensor\[float32, 1-d\]\)\. .*Found as the first training epoch read "
                                  r"it; the batch holding it was not trained on")
    assert SYNTH_BASE + 100 not in model.seen.get(0, [])


def test_a_large_opaque_source_with_a_nan_first_sample_is_refused_at_setup(monkeypatch):
    monkeypatch.setattr(checks, "DEFER_MIN_ROWS", 50)
    dm = MixedDataModule(id_dataset(40, 0), {"gen": Opaque(nan_at(120, 2))}, holdout=0.25, batch_size=8)
    err = refused(HeldOutRealCheck(), ValueError, r"'gen' holds NaN or infinite values: its sample #2 has them", dm=dm)
    assert "samples hold some" not in str(err)  # the rest not read: no count


def test_a_stream_is_checked_as_training_reads_it():
    dm = MixedDataModule(id_dataset(80, 0), {"web": Stream(nan_at(200, 30))}, holdout=0.25, batch_size=8,
                         synthetic_holdout=0.0, real_fraction=0.25, samples_per_epoch=64)
    model = fit_until_refused(dm, r"synthetic source 'web' holds NaN or infinite values: its sample #30 of pass 0 "
                                  r"\(counted from the start of the pass, as the main process reads the stream\) has "
                                  r"them in sample\[0\] \(Tensor\[float32, 1-d\]\)\. .*Filter the stream")
    assert SYNTH_BASE + 30 not in model.seen.get(0, []) and len(model.seen[0]) < 64


def test_a_stream_is_checked_after_the_first_epoch_too():
    """48 stream samples an epoch: sample 100 is read in the third epoch."""
    dm = MixedDataModule(id_dataset(80, 0), {"web": Stream(nan_at(200, 100))}, holdout=0.25, batch_size=8,
                         synthetic_holdout=0.0, real_fraction=0.25, samples_per_epoch=64)
    model = fit_until_refused(dm, r"'web' holds NaN .* its sample #100 of pass 0", epochs=4)
    assert len(model.seen[0]) == len(model.seen[1]) == 64 and 3 not in model.seen


def test_integer_parts_are_not_checked():
    big = torch.iinfo(torch.int64).max
    ints = TensorDataset(torch.full((10, 3), big), torch.arange(10))
    assert len(bulk_non_finite(ints)) == 0 and not non_finite_rows([ints[i] for i in range(10)]).any()
    assert list(non_finite_rows([(torch.tensor([1, 2]), 3), (torch.tensor([3, 4]), 5)])) == [False, False]
    assert list(bad_rows(np.array([[0, 1], [2, 3]], dtype=np.int32))) == [False, False]
    assert list(non_finite_rows([{"x": [1.0, float("nan")]}, {"x": [1.0]}])) == [True, False]  # ragged: one by one


def test_non_finite_rows_of_ragged_text_and_nested_parts():
    samples = [{"x": torch.randn(i % 7 + 1), "text": "abc", "y": i, "pair": (1.0, torch.zeros(2))} for i in range(20)]
    assert not non_finite_rows(samples).any()
    samples[5]["x"][0] = float("nan")
    samples[9]["pair"] = (1.0, torch.tensor([0.0, float("inf")]))
    samples[12]["y"] = float("-inf")  # one float among integers: promoted, found
    assert list(np.flatnonzero(non_finite_rows(samples))) == [5, 9, 12]
    ragged = [np.ones(i + 1, dtype=np.float16) for i in range(5)]
    ragged[3][2] = np.nan
    assert list(non_finite_rows(ragged)) == [False, False, False, True, False]
    assert list(non_finite_rows([torch.zeros(2), (torch.zeros(2),)])) == [False, False]  # two structures


def test_bulk_non_finite_reads_every_kind_with_bulk_access(tmp_path):
    import datasets
    from torch.utils.data import StackDataset, Subset

    x, y = nan_at(200, 17, 150).tensors
    assert list(bulk_non_finite(TensorDataset(x, y))) == [17, 150]
    assert list(bulk_non_finite(x.numpy())) == [17, 150]
    assert list(bulk_non_finite(memmapped(tmp_path / "x.npy", x.numpy()))) == [17, 150]
    assert list(bulk_non_finite(StackDataset(x.numpy(), y.numpy()))) == [17, 150]
    assert list(bulk_non_finite(WithRows(TensorDataset(x, y), tmp_path))) == [17, 150]
    hf = datasets.Dataset.from_dict({"x": x.numpy(), "y": y.numpy()}).with_format("torch")
    assert list(bulk_non_finite(hf)) == [17, 150]
    assert list(bulk_non_finite(Subset(TensorDataset(x, y), [3, 150, 17]))) == [1, 2]
    assert bulk_non_finite(Opaque(TensorDataset(x, y))) is None  # no bulk access: read sample by sample


@pytest.mark.parametrize("kind", ["tensor", "memmap", "small opaque", "large opaque", "stream"])
def test_clean_sources_of_every_kind_still_train(monkeypatch, tmp_path, kind):
    monkeypatch.setattr(checks, "DEFER_MIN_ROWS", 50)
    clean = id_dataset(120, SYNTH_BASE)
    synth = {"tensor": clean, "memmap": WithRows(clean, tmp_path), "small opaque": Opaque(id_dataset(40, SYNTH_BASE)),
             "large opaque": Opaque(clean), "stream": Stream(clean)}[kind]
    dm = MixedDataModule(id_dataset(80, 0), {"gen": synth}, holdout=0.25, batch_size=8, samples_per_epoch=64)
    model = TinyMLP()
    make_trainer(max_epochs=2, callbacks=[], limit_val_batches=0).fit(model, datamodule=dm)
    assert len(model.seen[0]) == len(model.seen[1]) == 64
    assert (dm._finite is not None) == (kind in ("large opaque", "stream"))
    assert dm._finite is None or not dm._finite.reading()  # the first epoch's checks ended with it


def test_non_finite_part_finds_nested_and_ignores_integers():
    assert non_finite_part({"x": torch.zeros(2), "y": torch.tensor(3)}) is None
    assert non_finite_part({"x": [1.0, float("inf")], "y": 1}) == "sample['x'] (list of numbers)"

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
