"""Hugging Face ``datasets`` as collapse_guard sources, on local data (no hub access).

    python integration_examples/hf_datasets.py            # about 15 s on 2 CPU cores
    python integration_examples/hf_datasets.py --quick    # a few seconds

Three ways to hand ``datasets`` to ``MixedDataModule``, all built with ``datasets.Dataset.from_dict`` from
scikit-learn's digits:

1. separate sources: a real ``datasets.Dataset`` and synthetic ones (``.with_format("torch")``);
2. a streaming synthetic source, a ``datasets.IterableDataset``, next to a map-style one: every batch still holds
   exactly its planned real count, and the synthetic slots are shared between the sources by ``synthetic_weights``;
3. one dataset whose ``source`` column tells real from synthetic rows: ``MixedDataModule.from_provenance_column``.

Samples are dicts (``{"pixel_values", "label"}``), so batches are dicts; ``HeldOutRealCheck`` reads the usual key
names (``pixel_values``, ``input_ids``, ``label``, ...) without a ``batch_fn``.
"""
from __future__ import annotations

import argparse
import warnings

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor
from collapse_guard.loop import ClassConditionalGMM, generation_chain


class DigitsClassifier(pl.LightningModule):
    """The user's model; its batches are dicts of tensors, as a ``with_format("torch")`` dataset collates them."""

    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch["pixel_values"]), batch["label"])
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def build_datasets(quick: bool, seed: int = 0) -> dict:
    """Real digits and two synthetic generations as ``datasets.Dataset`` objects (local, from arrays)."""
    from collapse_guard._digits import split_digits_parts

    parts = split_digits_parts(seed, {"train": 1200, "test": None})  # pixels 0..16
    (x_train, y_train), (x_test, y_test) = parts["train"], parts["test"]
    per_generation = 200 if quick else 600
    chain = generation_chain(lambda: ClassConditionalGMM(n_components=2, n_pca=20, random_state=seed),
                             x_train, y_train, generations=10, samples_per_generation=per_generation, seed=seed)

    def table(xs, ys) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"pixel_values": np.clip(xs, 0, 1).astype(np.float32),
                                           "label": ys.astype(np.int64)})

    return {
        "real": table(x_train / 16, y_train),
        "test": table(x_test / 16, y_test),
        "gen2": table(chain[1][0] / 16, chain[1][1]),
        "gen10": table(chain[9][0] / 16, chain[9][1]),
    }


def fit(dm: MixedDataModule, epochs: int) -> tuple[pl.Trainer, DigitsClassifier]:
    pl.seed_everything(0, verbose=False)
    model = DigitsClassifier()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[RatioMonitor(), HeldOutRealCheck(), CollapseGuard(action="warn", verbose=False)])
    trainer.fit(model, datamodule=dm)
    return trainer, model


@torch.no_grad()
def test_accuracy(model: DigitsClassifier, test: datasets.Dataset) -> float:
    t = test.with_format("torch")[:]
    return float((model(t["pixel_values"]).argmax(-1) == t["label"]).float().mean())


def summary(title: str, dm: MixedDataModule, trainer: pl.Trainer, model, test) -> dict:
    metrics = trainer.callback_metrics
    shares = {k.split("/")[-1]: round(float(v), 3) for k, v in metrics.items() if k.startswith("collapse/share/")}
    row = {
        "samples": dm.samples_by_source(),
        "last_epoch_shares": shares,
        "heldout_real_acc": round(float(metrics["collapse/heldout_real/acc"]), 3),
        "gap_acc": round(float(metrics["collapse/gap/acc"]), 3) if "collapse/gap/acc" in metrics else None,
        "test_acc": round(test_accuracy(model, test), 3),
        "heldout_copies": {k: v["duplicates"] for k, v in dm.contamination.get("sources", {}).items()},
    }
    print(f"\n{title}")
    for key, value in row.items():
        print(f"  {key:>17}: {value}")
    return row


def main(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    epochs = 2 if quick else 6
    data = build_datasets(quick)
    real = data["real"].with_format("torch")
    results = {}

    # 1. separate sources, each a datasets.Dataset
    dm = MixedDataModule(real=real, synthetic={"gen2": data["gen2"].with_format("torch"),
                                               "gen10": data["gen10"].with_format("torch")},
                         real_fraction=0.3, holdout=0.2, reserve=0.1, batch_size=64)
    trainer, model = fit(dm, epochs)
    results["separate"] = summary("1. real and synthetic datasets.Dataset", dm, trainer, model, data["test"])

    # 2. a streaming synthetic source next to a map-style one (a stream has no length: say how long an epoch is)
    stream = data["gen10"].with_format("torch").to_iterable_dataset(num_shards=2).shuffle(seed=0, buffer_size=256)
    dm = MixedDataModule(real=real, synthetic={"gen2": data["gen2"].with_format("torch"), "gen10_stream": stream},
                         real_fraction=0.3, holdout=0.2, batch_size=64, samples_per_epoch=1280,
                         synthetic_weights={"gen2": 0.5, "gen10_stream": 0.5}, stream_heldout_samples=64)
    trainer, model = fit(dm, epochs)
    results["stream"] = summary("2. a streaming datasets.IterableDataset source", dm, trainer, model, data["test"])

    # 3. one dataset with a provenance column ("real", "gen2", "gen10"); the column never reaches the model
    mixed = datasets.concatenate_datasets([data[name].add_column("source", [name] * len(data[name]))
                                           for name in ("real", "gen2", "gen10")]).shuffle(seed=0)
    dm = MixedDataModule.from_provenance_column(mixed.with_format("torch"), column="source", real_values=("real",),
                                                real_fraction=0.3, holdout=0.2, batch_size=64)
    trainer, model = fit(dm, epochs)
    results["provenance_column"] = summary("3. one dataset with a provenance column", dm, trainer, model, data["test"])
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster run")
    args = parser.parse_args()
    for noise in ("does not have many workers", "LeafSpec", "no `validation_step`"):
        warnings.filterwarnings("ignore", f".*{noise}.*")
    datasets.disable_progress_bars()
    main(quick=args.quick)
