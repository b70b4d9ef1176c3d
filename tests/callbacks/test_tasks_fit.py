"""``HeldOutRealCheck()`` and ``CollapseGuard()`` with no arguments on a language model and a regressor written as a
user writes them (own batches, own ``forward``, no hooks): the task is inferred, its keys logged, its default rules
judged; a model the task cannot read is refused before the first training batch, naming what to pass."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import pytorch_lightning as pl

from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, SyntheticSource, default_rules
from collapse_guard.callbacks.tasks import LanguageModelTask, RegressionTask

from cg_testing import make_trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
V, T = 12, 12


class Sequences(Dataset):
    """Token sequences as a user's LM dataset gives them: ``{"input_ids", "labels"}`` (labels the next tokens), or
    Hugging Face style ``{"input_ids", "attention_mask"}`` (``hf=True``: the labels are the inputs, shifted by the
    loss)."""

    def __init__(self, tokens: torch.Tensor, hf: bool = False) -> None:
        self.tokens, self.hf = tokens, hf

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i):
        seq = self.tokens[i]
        if self.hf:
            return {"input_ids": seq, "attention_mask": torch.ones_like(seq)}
        return {"input_ids": seq[:-1], "labels": seq[1:]}


def real_tokens(n: int, seed: int = 0) -> torch.Tensor:
    """A learnable language: every token is the previous one plus 1 or 2 (mod V), from a random start."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.cat([torch.randint(0, V, (n, 1), generator=g), torch.randint(1, 3, (n, T), generator=g)], 1)
    return torch.unique(steps.cumsum(1) % V, dim=0)  # no sequence twice: held-out data is never trained on


def noise_tokens(n: int, seed: int = 1) -> torch.Tensor:
    """A collapsed generator's text: uniform noise, nothing of the real language left."""
    return torch.randint(0, V, (n, T + 1), generator=torch.Generator().manual_seed(seed))


class TinyLM(pl.LightningModule):
    def __init__(self, hf: bool = False) -> None:
        super().__init__()
        self.hf = hf
        self.emb, self.rnn, self.head = nn.Embedding(V, 16), nn.GRU(16, 32, batch_first=True), nn.Linear(32, V)

    def forward(self, input_ids):
        logits = self.head(self.rnn(self.emb(input_ids))[0])
        return SimpleNamespace(logits=logits) if self.hf else logits

    def training_step(self, batch, batch_idx):
        ids = batch["input_ids"]
        if self.hf:  # Hugging Face's causal loss: the logits at t predict the token at t + 1
            logits = self(ids).logits
            return F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        return F.cross_entropy(self(ids).reshape(-1, V), batch["labels"].reshape(-1))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class TinyRegressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)  # (N,)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


W = torch.tensor([1.0, -2.0, 0.5, 0.0, 1.0])


def regression_data(n: int, shrink: float = 1.0, seed: int = 0) -> TensorDataset:
    """``y = x @ W`` (+ noise); ``shrink < 1``: a generator whose targets regress to the mean."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return TensorDataset(x, shrink * (x @ W) + 0.1 * torch.randn(n, generator=g))


def mixed(real, synthetic, collapse_at: int = 3) -> MixedDataModule:
    synthetic = {"gen": SyntheticSource(synthetic, generator="test", generation=20)} if synthetic is not None else {}
    fraction = 1.0 if not synthetic else (lambda epoch: 0.9 if epoch < collapse_at else 0.0)
    return MixedDataModule(real=real, synthetic=synthetic, real_fraction=fraction, holdout=0.2, reserve=0.1,
                           batch_size=32)


def guarded_fit(model, dm, epochs: int = 6, **check_kwargs):
    check, guard = HeldOutRealCheck(**check_kwargs), CollapseGuard(action="warn", verbose=False)
    trainer = make_trainer(max_epochs=epochs, callbacks=[check, guard])
    trainer.fit(model, datamodule=dm)
    return trainer, check, guard


# -- language models ---------------------------------------------------------------------------------------------
def test_language_model_with_defaults_logs_perplexity_and_the_guard_fires_on_collapse():
    trainer, check, guard = guarded_fit(TinyLM(), mixed(Sequences(real_tokens(500)), Sequences(noise_tokens(500))))
    assert isinstance(check.task_of(trainer), LanguageModelTask) and not check.task_of(trainer).shift
    assert guard.rules == default_rules(task="language_model")
    first = check.history[0]
    for key in ("loss", "loss_stderr", "perplexity", "token_acc", "token_acc_stderr", "entropy"):
        assert f"collapse/heldout_real/{key}" in first
    assert "collapse/gap/loss" in first and "collapse/heldout_synthetic/token_acc" in first
    assert first["collapse/heldout_real/perplexity"] == pytest.approx(torch.tensor(first["collapse/heldout_real/loss"]).exp().item())
    assert "collapse/heldout_real/perplexity" in trainer.callback_metrics
    assert guard.events and guard.events[0].epoch >= 3 and guard.events[0].rule == "heldout_real_loss"


def test_language_model_on_real_data_only_does_not_fire():
    trainer, check, guard = guarded_fit(TinyLM(), mixed(Sequences(real_tokens(500)), None))
    assert len(check.history) == 6 and guard.events == []


def test_hugging_face_style_batches_are_shifted():
    """``{"input_ids", "attention_mask"}`` batches and outputs carrying ``.logits``: the labels are the inputs,
    scored against the logits one position earlier, as the model's own loss does."""
    trainer, check, guard = guarded_fit(TinyLM(hf=True), mixed(Sequences(real_tokens(300), hf=True), None), epochs=3)
    assert check.task_of(trainer).shift
    assert check.history[-1]["collapse/heldout_real/token_acc"] > 0.3  # the next token is half-learnable; the same not


def test_language_model_samples_give_text_indicators():
    def sample_fn(pl_module, n):
        return noise_tokens(n, seed=5)[:, :T]

    trainer, check, _ = guarded_fit(TinyLM(), mixed(Sequences(real_tokens(200)), None), epochs=1, sample_fn=sample_fn,
                                    feature_samples=64)
    row = check.history[0]
    for key in ("distinct_1", "distinct_2", "vocab_coverage"):
        assert 0 < row[f"collapse/generated/{key}"] <= 1
    for key in ("unigram_entropy", "unigram_entropy_real"):
        assert 2.0 < row[f"collapse/generated/{key}"] <= torch.log(torch.tensor(float(V))).item() + 1e-9
    assert row["collapse/generated/vocab_coverage"] == 1.0  # uniform noise over V tokens uses every real token


# -- regression --------------------------------------------------------------------------------------------------
def test_regressor_with_defaults_logs_mse_and_the_guard_fires_on_a_shrinking_generator():
    trainer, check, guard = guarded_fit(TinyRegressor(), mixed(regression_data(800), regression_data(800, 0.2, 1)),
                                        epochs=7)
    assert isinstance(check.task_of(trainer), RegressionTask) and guard.rules == default_rules(task="regression")
    for key in ("loss", "loss_stderr", "mse", "mae", "r2", "pred_var_ratio", "residual_tail_mass"):
        assert f"collapse/heldout_real/{key}" in check.history[0]
    assert check.history[-1]["collapse/heldout_real/pred_var_ratio"] < 0.5 < check.history[2]["collapse/heldout_real/pred_var_ratio"]
    assert guard.events and guard.events[0].epoch >= 3


def test_regressor_on_real_data_only_does_not_fire():
    trainer, check, guard = guarded_fit(TinyRegressor(), mixed(regression_data(800), None), epochs=7)
    assert len(check.history) == 7 and guard.events == []


def test_a_rule_on_a_classifier_key_is_refused_for_a_regressor():
    from collapse_guard import Rule

    guard = CollapseGuard(rules=[Rule("collapse/heldout_real/acc", sigmas=2)])
    trainer = make_trainer(max_epochs=1, callbacks=[HeldOutRealCheck(), guard])
    with pytest.raises(ValueError, match=r"never logs.*collapse/heldout_real/mse"):
        trainer.fit(TinyRegressor(), datamodule=mixed(regression_data(100), None))


# -- the user's own loss, any model ------------------------------------------------------------------------------
def test_loss_fn_is_the_logged_loss():
    def loss_fn(pl_module, batch):
        x, y = batch
        return 2 * (pl_module(x) - y) ** 2

    trainer, check, _ = guarded_fit(TinyRegressor(), mixed(regression_data(200), None), epochs=1, loss_fn=loss_fn)
    row = check.history[0]
    assert row["collapse/heldout_real/loss"] == pytest.approx(2 * row["collapse/heldout_real/mse"], rel=1e-5)


def test_task_loss_reads_a_model_without_forward():
    class NoForward(TinyRegressor):
        forward = pl.LightningModule.forward

        def training_step(self, batch, batch_idx):
            return F.mse_loss(self.net(batch[0]).squeeze(-1), batch[1])

    def loss_fn(pl_module, batch):
        return (pl_module.net(batch[0]).squeeze(-1) - batch[1]) ** 2

    trainer, check, guard = guarded_fit(NoForward(), mixed(regression_data(200), None), epochs=2, task="loss",
                                        loss_fn=loss_fn)
    assert set(check.history[0]) == {"epoch", "global_step", "collapse/heldout_real/loss",
                                     "collapse/heldout_real/loss_stderr"}
    assert guard.rules == default_rules(task="loss")


# -- refused before training -------------------------------------------------------------------------------------
class Seen(pl.Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_start(self, *args):
        self.batches += 1


def refused(model, dm, exc, match, **check_kwargs):
    seen = Seen()
    trainer = make_trainer(max_epochs=1, callbacks=[HeldOutRealCheck(**check_kwargs), CollapseGuard(), seen])
    with pytest.raises(exc, match=match) as err:
        trainer.fit(model, datamodule=dm)
    assert seen.batches == 0 and trainer.global_step == 0, "refused after training started"
    return err.value


def test_language_model_giving_one_row_per_sequence_is_refused():
    class LastOnly(TinyLM):
        def forward(self, input_ids):
            return super().forward(input_ids)[:, -1]  # (N, V): a classifier's shape

    err = refused(LastOnly(), mixed(Sequences(real_tokens(100)), None), ValueError, r"task='language_model'")
    assert "(N, T, V)" in str(err) and "forward_fn" in str(err)


def test_regressor_giving_two_outputs_per_target_is_refused():
    class Two(TinyRegressor):
        def forward(self, x):
            return torch.stack([super().forward(x)] * 2, 1)

    err = refused(Two(), mixed(regression_data(100), None), ValueError, r"task='regression'")
    assert "one value per target" in str(err)


def test_loss_fn_returning_the_mean_is_refused():
    err = refused(TinyRegressor(), mixed(regression_data(100), None), ValueError, r"`loss_fn` returned",
                  loss_fn=lambda m, b: F.mse_loss(m(b[0]), b[1]))
    assert "shape (N,)" in str(err)


def test_a_target_that_is_no_tensor_asks_for_the_task():
    refused(TinyRegressor(), mixed(regression_data(100), None), TypeError, r"task cannot be inferred.*task=",
            batch_fn=lambda b: (b[0], b[1].tolist()))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"task": "segmentation"}, ValueError, r"`task` must be one of"),
    ({"task": "loss"}, ValueError, r"task='loss'.*loss_fn"),
    ({"loss_fn": "mse"}, TypeError, r"`loss_fn` must be callable"),
])
def test_bad_task_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        HeldOutRealCheck(**kwargs)


def test_auto_synthetic_samples_measure_fewer_sequences_of_a_language_model():
    """128 held-out synthetic sequences a check for a language model, 512 samples for the other tasks."""
    asked = []
    for model, dm in ((TinyLM(), mixed(Sequences(real_tokens(1200)), Sequences(noise_tokens(1200)))),
                      (TinyRegressor(), mixed(regression_data(200), regression_data(200, 0.2, 1)))):
        build = dm.heldout_synthetic_dataloader
        dm.heldout_synthetic_dataloader = lambda max_samples=None, build=build: asked.append(max_samples) or build(
            max_samples=max_samples)
        guarded_fit(model, dm, epochs=1)
    assert asked == [128, 512] and HeldOutRealCheck(synthetic_samples=64).synthetic_limit() == 64
