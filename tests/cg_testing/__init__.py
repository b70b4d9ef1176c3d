"""Shared helpers for the collapse_guard core tests: id-carrying datasets, a tiny real DataModule, a tiny MLP.

Every sample carries a unique integer id (``x[0]`` for tuple samples, ``"id"`` for dict samples), so a test can
tell from a collated batch exactly which samples of which source the model received.

Test modules import them as ``cg_testing`` (``tests/`` is on pytest's ``pythonpath``; a script under ``tests/``
puts it on ``sys.path`` itself).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from collapse_guard._trainer import quiet_trainer_kwargs


DIM = 4
NUM_CLASSES = 3

#: id offsets: real training data, real validation data, reserve datasets, synthetic sources
REAL_BASE, VAL_BASE, RESERVE_BASE, SYNTH_BASE = 0, 10_000, 20_000, 100_000


def id_dataset(n: int, base: int, *, dim: int = DIM, seed: int = 0, label: Optional[int] = None) -> TensorDataset:
    """``n`` samples ``(x, y)``: ``x[0]`` is the sample id ``base + i``, the other features carry the class.

    Classes are learnable from ``x[1:]`` (a shifted Gaussian blob per class); ``label`` fixes every label.
    """
    g = torch.Generator().manual_seed(seed + base)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g) if label is None else torch.full((n,), label)
    x = torch.randn(n, dim, generator=g) * 0.5
    x[:, 1:] += F.one_hot(y, NUM_CLASSES)[:, : dim - 1].float() * 2.0
    x[:, 0] = torch.arange(n, dtype=torch.float32) + base
    return TensorDataset(x, y.long())


def hf_dataset(n: int, base: int, label: Optional[int] = None, **extra: Any):
    """:func:`id_dataset` as a Hugging Face ``datasets.Dataset`` in torch format: ``pixels`` (``pixels[0]`` is the
    id), ``label``, ``id``, and any ``extra`` columns."""
    import datasets

    x, y = id_dataset(n, base, label=label).tensors
    columns = {"pixels": x.numpy(), "label": y.numpy(), "id": x[:, 0].round().long().numpy()}
    columns.update(extra)
    return datasets.Dataset.from_dict(columns).with_format("torch")


def ids_of(batch: Any) -> list[int]:
    """Sample ids of a collated batch (tuple ``(x, y)`` or dict with an ``"id"`` / ``"pixels"`` entry)."""
    if isinstance(batch, dict):
        ids = batch["id"] if "id" in batch else batch["pixels"][:, 0]
    else:
        ids = batch[0][:, 0]
    return [int(round(float(v))) for v in ids]


def dict_collate(samples: list) -> dict:
    """A user's collate function returning a dict (the format the mixed batches must keep)."""
    xs = torch.stack([s[0] for s in samples])
    ys = torch.stack([s[1] for s in samples])
    return {"pixels": xs, "label": ys, "id": xs[:, 0].round().long(), "collated_by": "dict_collate"}


class RealDM(pl.LightningDataModule):
    """The user's own real DataModule: id-carrying train and val sets, its own batch size and collate."""

    def __init__(self, n_train: int = 60, n_val: int = 20, batch_size: int = 8, collate_fn: Optional[Callable] = None):
        super().__init__()
        self.n_train, self.n_val, self.bs, self.collate_fn = n_train, n_val, batch_size, collate_fn
        self.setup_calls = 0

    def setup(self, stage: str) -> None:
        self.setup_calls += 1
        self.train_set = id_dataset(self.n_train, REAL_BASE)
        self.val_set = id_dataset(self.n_val, VAL_BASE)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.bs, shuffle=True, collate_fn=self.collate_fn)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.bs, collate_fn=self.collate_fn)


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["pixels"], batch["label"]
    return batch[0], batch[1]


class TinyMLP(pl.LightningModule):
    """A tiny classifier that ignores the id feature; records the ids of every training batch it receives."""

    def __init__(self, lr: float = 0.05, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM - 1, 16), nn.ReLU(), nn.Linear(16, num_classes))
        self.lr = lr
        self.seen: dict[int, list[int]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, 1:])

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.setdefault(self.current_epoch, []).extend(ids_of(batch))
        x, y = split_batch(batch)
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def guard_state(guard) -> dict:
    """``guard.state_dict()`` comparable with ``==`` and JSON-ready: the best weights' tensors (a default guard keeps
    them for ``stop``) as lists."""
    state = dict(guard.state_dict())
    best = state.get("best_weights")
    if best is not None:
        state["best_weights"] = {**best, "weights": {k: v.tolist() for k, v in best["weights"].items()}}
    return state


def epoch_checkpoints(ckpt_dir: Path) -> ModelCheckpoint:
    """Lightning's ``ModelCheckpoint`` writing ``epoch={k}.ckpt`` into ``ckpt_dir`` after every epoch, all kept."""
    return ModelCheckpoint(dirpath=ckpt_dir, filename="{epoch}", save_top_k=-1, every_n_epochs=1)


def make_trainer(max_epochs: int = 3, callbacks: Optional[list] = None, ckpt_dir: Optional[Path] = None,
                 **kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer for small fits; with ``ckpt_dir``, Lightning's ``ModelCheckpoint`` (appended to
    ``callbacks``) saves ``epoch={k}.ckpt`` there at the end of every epoch."""
    callbacks = list(callbacks or [])
    if ckpt_dir is not None:
        callbacks.append(epoch_checkpoints(ckpt_dir))
        kwargs.setdefault("enable_checkpointing", True)
    opts = quiet_trainer_kwargs(max_epochs=max_epochs, accelerator="cpu", devices=1, callbacks=callbacks)
    opts.update(kwargs)
    return pl.Trainer(**opts)


def make_mixed(
    real_fraction: Any = 0.25,
    n_real: int = 80,
    synth_sizes: Optional[dict] = None,
    holdout: Any = 0.25,
    reserve: Any = 0.25,
    batch_size: int = 8,
    samples_per_epoch: Optional[int] = 64,
    **kwargs: Any,
):
    """A ``MixedDataModule`` over an id-carrying real Dataset and id-carrying synthetic sources."""
    from collapse_guard import MixedDataModule

    synth_sizes = {"g1": 60} if synth_sizes is None else synth_sizes
    synthetic = {
        name: id_dataset(n, SYNTH_BASE * (i + 1), label=0) for i, (name, n) in enumerate(synth_sizes.items())
    }
    return MixedDataModule(
        id_dataset(n_real, REAL_BASE),
        synthetic,
        real_fraction=real_fraction,
        holdout=holdout,
        reserve=reserve,
        batch_size=batch_size,
        samples_per_epoch=samples_per_epoch,
        **kwargs,
    )


def source_of_id(sample_id: int) -> str:
    """``"real"``, ``"val"``, ``"reserve_ds"`` or ``"g<k>"`` from an id made by :func:`id_dataset`."""
    if sample_id >= SYNTH_BASE:
        return f"g{sample_id // SYNTH_BASE}"
    if sample_id >= RESERVE_BASE:
        return "reserve_ds"
    if sample_id >= VAL_BASE:
        return "val"
    return "real"


def pool_layout(n_real: int, synth_sizes: list[int]):
    """Dataset indices laid out as MixedDataModule does: real (source 0), reserve (1, empty here), synthetic
    (2, 3, ...). Returns ``(real_pool, synthetic_pools, source_of, num_sources)``."""
    pools, offset = [], n_real
    for n in synth_sizes:
        pools.append(torch.arange(offset, offset + n))
        offset += n
    source_of = torch.zeros(offset, dtype=torch.int16)
    for i, p in enumerate(pools):
        source_of[p] = i + 2
    return torch.arange(n_real), pools, source_of, 2 + len(synth_sizes)


#: the folder of the integration examples a user copies from
EXAMPLES = Path(__file__).resolve().parents[2] / "integration_examples"


def load_example(name: str):
    """The module ``integration_examples/<name>.py``, loaded as ``python integration_examples/<name>.py`` would run
    it: with its folder on ``sys.path`` (for the helpers the examples share)."""
    import importlib.util
    import sys

    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
