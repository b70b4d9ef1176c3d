"""A regressor trained on real data mixed with generated data, guarded by collapse_guard.

    python integration_examples/regression_diabetes.py            # about 12 s on 2 CPU cores
    python integration_examples/regression_diabetes.py --quick    # about 12 s

The first half of this file is "your" code: a DataModule of scikit-learn's diabetes data (442 real patients, 10
features, disease progression a year later; standardised by the training split) with batches ``(x, y)``, ``x`` of shape
``(N, 10)`` and ``y`` of shape ``(N,)``, and a small MLP whose ``forward(x)`` returns predictions ``(N,)``, trained with
the mean squared error.

The second half makes generated data the way regression collapses (Dohmatob, Feng & Kempe 2024, "Model collapse
demystified: the case of regression"): a chain of ridge regressions, each one labelling fresh inputs (drawn from a
Gaussian fitted to the real training inputs) with the previous generation's predictions plus noise, then fitted on
them. Each ridge fit shrinks the coefficients, so generation after generation the labels lose their signal and a
regressor trained on them predicts ever closer to the mean. It trains four times with the same model, seed and
epochs: on real data only, guarded; with the real share falling from 90% to 10% after 8 epochs and generation 12
filling the rest, unguarded; the same guarded by ``HeldOutRealCheck()`` and ``CollapseGuard()``; and the same
schedule with a healthy source (one good generator, with residual noise as large as the real residuals), guarded.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from side_by_side import fit_record, four_fits, print_tables, real_losses  # the tables below, shared by the examples


# -- your code, unchanged -------------------------------------------------------------------------------------------
class DiabetesDataModule(pl.LightningDataModule):
    """scikit-learn's 442 diabetes patients: train (50%) / val (25%) / test (25%), standardised by the train split."""

    def __init__(self, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str) -> None:
        from sklearn.datasets import load_diabetes

        x, y = load_diabetes(return_X_y=True)
        order = np.random.default_rng(self.seed).permutation(len(y))
        parts = np.split(order, [len(y) // 2, 3 * len(y) // 4])
        train = parts[0]
        self.x_mean, self.x_std = x[train].mean(0), x[train].std(0)
        self.y_mean, self.y_std = y[train].mean(), y[train].std()
        self.train, self.val, self.test = (self.tensors(x[i], y[i]) for i in parts)

    def tensors(self, x: np.ndarray, y: np.ndarray) -> TensorDataset:
        """Standardised features ``(N, 10)`` and target ``(N,)``, float32."""
        x = torch.as_tensor((x - self.x_mean) / self.x_std, dtype=torch.float32)
        return TensorDataset(x, torch.as_tensor((y - self.y_mean) / self.y_std, dtype=torch.float32))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=256)


class Regressor(pl.LightningModule):
    """An MLP 10-32-1 with weight decay; ``forward(x)`` -> predictions ``(N,)``."""

    def __init__(self, hidden: int = 32, lr: float = 1e-3, weight_decay: float = 1e-2) -> None:
        super().__init__()
        self.lr, self.weight_decay = lr, weight_decay
        self.net = nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_mse", F.mse_loss(self(x), y), batch_size=len(y))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


# -- synthetic data: a chain of ridge regressions, each trained on the previous one's labels ------------------------
def synthetic_regression(real_dm: DiabetesDataModule, collapsed_generation: int = 8, samples: int = 1000,
                         shrink: float = 0.25, seed: int = 0) -> dict:
    """``{"healthy": ..., "collapsing": ...}`` ``SyntheticSource``s of ``samples`` each.

    Inputs are drawn from a Gaussian fitted to the real training inputs. healthy: a ridge fit of the real training
    data labels them, plus noise of the real residual variance (generation 1). collapsing: generation
    ``collapsed_generation`` of the chain: generation g's labels are generation g-1's ridge predictions plus the same
    noise, and generation g's ridge (``alpha = shrink * samples``: strong) is fitted on them.
    """
    from sklearn.linear_model import Ridge

    from collapse_guard import SyntheticSource

    real_dm.setup("fit")
    x, y = (t.numpy().astype(np.float64) for t in real_dm.train.tensors)  # the generator sees the real training split
    rng = np.random.default_rng(seed)
    mean, cov = x.mean(0), np.cov(x, rowvar=False)
    first = Ridge(alpha=1.0).fit(x, y)
    noise = float(np.std(y - first.predict(x)))  # the real residual scale

    def labelled(model) -> tuple[np.ndarray, np.ndarray]:
        xs = rng.multivariate_normal(mean, cov, size=samples)
        return xs, model.predict(xs) + rng.normal(0.0, noise, size=samples)

    def source(xy, generation: int, **params) -> "SyntheticSource":
        data = TensorDataset(*(torch.as_tensor(a, dtype=torch.float32) for a in xy))
        return SyntheticSource(data, generator="ridge chain", generation=generation, params=params)

    healthy = labelled(first)
    model, data = first, healthy
    for _ in range(collapsed_generation - 1):
        model = Ridge(alpha=shrink * samples).fit(*data)
        data = labelled(model)
    return {"healthy": source(healthy, 1, noise=noise),
            "collapsing": source(data, collapsed_generation, noise=noise, alpha=shrink * samples)}


# -- four fits: your model and DataModule, with the lines that add collapse_guard ----------------------------------
FULL, QUICK = {"epochs": 16}, {"epochs": 14}


def real_share(epoch: int) -> float:
    """The share of real samples in each epoch's batches: 90% for 8 epochs, then down to 10%."""
    return max(0.1, 0.9 - 0.4 * max(0, epoch - 7))


def trainer(epochs: int, callbacks: list, out: str) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                      default_root_dir=out, num_sanity_val_steps=0)


def fit(source, guarded: bool, epochs: int, out: str) -> dict:
    """One fit of ``Regressor`` on ``DiabetesDataModule`` mixed with ``source`` (``None``: real data only)."""
    from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor

    pl.seed_everything(0, verbose=False)
    real_dm = DiabetesDataModule()
    dm = MixedDataModule(
        real=real_dm,                                   # your DataModule: its (x, y) batches reach training_step
        synthetic=source,                               # {"name": SyntheticSource}, or None for real data only
        real_fraction=real_share if source else 1.0,    # the real share of every batch, per epoch
        holdout="val",                                  # your validation set: held out, never trained on
        reserve=0.3,                                    # fresh real data for the guard to inject
        samples_per_epoch=640,
    )
    check = HeldOutRealCheck()                          # infers a regression from the floating (N,) target
    guard = CollapseGuard() if guarded else None        # the default rules of that task
    model = Regressor()
    fitted = trainer(epochs, [RatioMonitor(), check] + ([guard] if guard else []), out)
    fitted.fit(model, datamodule=dm)

    final = real_losses(model, real_dm, lambda: trainer(1, [], out), "test_mse")
    return fit_record(fitted, check, guard, dm, heldout_mse=final["held-out"], test_mse=final["test"])


def print_table(fits: dict) -> None:
    """Per fit and epoch: the real share, the held-out real MSE, R², prediction variance ratio, the guard's action."""
    print_tables(fits, [("mse", "collapse/heldout_real/mse", ".3f"), ("r2", "collapse/heldout_real/r2", ".3f"),
                         ("var ratio", "collapse/heldout_real/pred_var_ratio", ".3f")],
                 [("held-out mse", "heldout_mse", ".3f"), ("test mse", "test_mse", ".3f"),
                         ("real share", "real_share", ".2f")])


def main(quick: bool = False, out: str = "runs/regression_diabetes") -> dict:
    """The four fits; prints their table and returns ``{fit name: {ratio, checks, events, heldout_mse, test_mse,
    real_share}}`` (``events`` is ``None`` for the unguarded fit)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    epochs = (QUICK if quick else FULL)["epochs"]
    sources = synthetic_regression(DiabetesDataModule(), collapsed_generation=12)
    healthy, collapsing = {"gen1": sources["healthy"]}, {"gen12": sources["collapsing"]}
    fits = four_fits(lambda source, guarded: fit(source, guarded, epochs, out), healthy, collapsing)
    print()
    print_table(fits)
    print(f"\n{time.perf_counter() - start:.0f} s")
    return fits


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument("--out", default="runs/regression_diabetes", help="Lightning's root folder")
    args = parser.parse_args()
    for noise in ("does not have many workers", "LeafSpec", "no `validation_step`", "ambiguous collection"):
        warnings.filterwarnings("ignore", f".*{noise}.*")
    main(quick=args.quick, out=args.out)
