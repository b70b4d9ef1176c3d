"""Wrap an existing LightningDataModule: the user's model and DataModule stay as they are.

    python integration_examples/wrap_datamodule.py            # about 20 s on 2 CPU cores
    python integration_examples/wrap_datamodule.py --quick    # a few seconds

The first half of this file is "your" code: a DataModule over real digits and a classifier, trained the usual way.
The second half adds synthetic digits (generations of a generator refitted on its own samples, the way published
collapse happens) and guards the fit with collapse_guard: four lines change.
"""
from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


# -- your code, unchanged -------------------------------------------------------------------------------------------
class DigitsDataModule(pl.LightningDataModule):
    """Real 8x8 digits: train / val / test."""

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str) -> None:
        from collapse_guard.demo import digits_tensors, split_digits

        parts = split_digits(self.seed)  # train 900, val 360, test 537: float32 pixels in [0, 1], int64 labels
        self.train, self.val, self.test = (digits_tensors(*parts[k]) for k in ("train", "val", "test"))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=256)


class DigitsClassifier(pl.LightningModule):
    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


# -- synthetic data: generations of a generator trained on its own samples ---------------------------------------
def synthetic_generations(real_dm: DigitsDataModule, generations: list[int], per_generation: int, seed: int = 0):
    """``{"gen<g>": SyntheticSource}``: a class-conditional GMM fitted on the real training digits, then refitted on
    its own samples generation after generation (``replace``: variance, modes and rare classes get lost)."""
    from collapse_guard import SyntheticSource
    from collapse_guard.loop import ClassConditionalGMM, generation_chain

    real_dm.setup("fit")
    x, y = (t.numpy() for t in real_dm.train.tensors)  # the generator sees the real training split only
    chain = generation_chain(lambda: ClassConditionalGMM(n_components=2, n_pca=20, random_state=seed), x, y,
                             generations=max(generations), samples_per_generation=per_generation, seed=seed)
    sources = {}
    for g in generations:
        xg, yg = chain[g - 1]
        data = TensorDataset(torch.as_tensor(np.clip(xg, 0, 1), dtype=torch.float32), torch.as_tensor(yg).long())
        sources[f"gen{g}"] = SyntheticSource(data, generator="ClassConditionalGMM", generation=g,
                                             params={"samples": per_generation, "regime": "replace"})
    return sources


def trainer(epochs: int, callbacks: list, out: str) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                      default_root_dir=out)


def main(quick: bool = False, out: str = "runs/wrap_datamodule") -> dict:
    torch.set_num_threads(1)
    epochs = 4 if quick else 12
    gens = [5, 10] if quick else [10, 20]

    # 1. the usual fit, on real data only
    pl.seed_everything(0, verbose=False)
    real_only = DigitsClassifier()
    trainer(epochs, [], out).fit(real_only, datamodule=DigitsDataModule())

    # 2. the same model and DataModule, with synthetic data mixed in and guarded: these lines are all that change
    from collapse_guard import CollapseGuard, CollapseReport, HeldOutRealCheck, MixedDataModule, RatioMonitor

    pl.seed_everything(0, verbose=False)
    real_dm = DigitsDataModule()
    dm = MixedDataModule(
        real=real_dm,                                              # your DataModule: its batch size and collate
        synthetic=synthetic_generations(DigitsDataModule(), gens, per_generation=200),
        real_fraction=lambda epoch: max(0.0, 0.9 - 0.15 * epoch),  # the real share falls towards 0
        holdout="val",                                             # your validation set: held out, never trained on
        reserve=0.3,                                               # fresh real data for the guard to inject
    )
    guard = CollapseGuard(action="inject", verbose=False)
    report = CollapseReport(dirpath=os.path.join(out, "collapse_report"), summary=False, plots=not quick)
    model = DigitsClassifier()
    fit = trainer(epochs, [RatioMonitor(), HeldOutRealCheck(), guard, report], out)
    fit.fit(model, datamodule=dm)

    # 3. the unseen real test set, which no callback ever saw
    test = {}
    for name, m in (("real only", real_only), ("mixed + guard", model)):
        test[name] = trainer(1, [], out).test(m, datamodule=DigitsDataModule(), verbose=False)[0]["test_acc"]

    print(f"{'epoch':>5} {'real %':>7} {'held-out acc':>13} {'worst class':>12}")
    history = {h["epoch"]: h for h in next(cb for cb in fit.callbacks if isinstance(cb, HeldOutRealCheck)).history}
    for h in next(cb for cb in fit.callbacks if isinstance(cb, RatioMonitor)).history:
        check = history.get(h["epoch"], {})
        print(f"{h['epoch']:>5} {100 * h['real_fraction']:>7.1f} {check.get('collapse/heldout_real/acc', float('nan')):>13.3f}"
              f" {check.get('collapse/heldout_real/worst_class_recall', float('nan')):>12.3f}")
    print("\nguard events:" + "".join(f"\n  epoch {e.epoch}: {e.action} ({e.rule}) - {e.reason}" for e in guard.events)
          if guard.events else "\nguard events: none")
    print("\ntest accuracy on unseen real digits: " + ", ".join(f"{k} {v:.3f}" for k, v in test.items()))
    print(f"samples per source: {dm.samples_by_source()}")
    print(f"report: {report.dirpath}")
    return {"test": test, "events": guard.events, "counts": list(dm.samples_by_source().values()), "report": report.dirpath}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    parser.add_argument("--out", default="runs/wrap_datamodule", help="where the report goes")
    args = parser.parse_args()
    for noise in ("does not have many workers", "LeafSpec", "no `validation_step`"):
        warnings.filterwarnings("ignore", f".*{noise}.*")
    main(quick=args.quick, out=args.out)
