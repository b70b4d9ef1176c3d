"""A user's own code, as a LightningCLI finds it by class path: a DataModule over scikit-learn's real 8x8 digits,
a classifier, and synthetic digits made by a generator refitted on its own samples (collapse_guard.loop).

Nothing here knows about collapse_guard's callbacks or its MixedDataModule: config.yaml wraps these classes.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from collapse_guard.demo import DigitsClassifier as _DemoDigitsClassifier
from collapse_guard.demo import PIXEL_MAX, split_digits
from collapse_guard.loop import ClassConditionalGMM, generation_chain


@lru_cache(maxsize=4)
def digits_split(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The 1797 real digits split into train (900), val (360) and test (537), pixels scaled to [0, 1]."""
    parts = split_digits(seed)  # the demo's split
    return {k: (x / np.float32(PIXEL_MAX), y) for k, (x, y) in parts.items()}


def as_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.as_tensor(x), torch.as_tensor(y))


class DigitsDataModule(pl.LightningDataModule):
    """Real digits: train / val / test splits of one seeded permutation."""

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed

    def setup(self, stage: str) -> None:
        self.data = {k: as_dataset(*v) for k, v in digits_split(self.seed).items()}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data["val"], batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.data["test"], batch_size=256)


@lru_cache(maxsize=4)
def _chain(generations: int, samples: int, seed: int, n_components: int, n_pca: int) -> list:
    x, y = digits_split(seed)["train"]  # the generator sees the real training split only
    return generation_chain(
        lambda: ClassConditionalGMM(n_components=n_components, n_pca=n_pca, random_state=seed),
        x, y, generations=generations, samples_per_generation=samples, regime="replace", seed=seed,
    )


class SyntheticDigits(Dataset):
    """Generation ``generation`` of a class-conditional GMM refitted on its own samples (the ``replace`` regime):
    the later the generation, the more collapsed (variance, modes and rare classes lost)."""

    def __init__(self, generation: int = 10, samples: int = 200, seed: int = 0, n_components: int = 2,
                 n_pca: int = 20) -> None:
        x, y = _chain(generation, samples, seed, n_components, n_pca)[generation - 1]
        self.data = as_dataset(np.clip(x, 0.0, 1.0).astype(np.float32), y.astype(np.int64))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index]


# the model is the demo's small MLP (64-128-10), unchanged: any LightningModule works here
DigitsClassifier = _DemoDigitsClassifier


class DecliningFraction:
    """A real-fraction schedule: ``start`` until ``decline_from``, then linear to ``end`` at ``decline_to``."""

    def __init__(self, start: float = 0.9, end: float = 0.0, decline_from: int = 3, decline_to: int = 8) -> None:
        self.start, self.end, self.decline_from, self.decline_to = start, end, decline_from, decline_to

    def __call__(self, epoch: int) -> float:
        t = min(1.0, max(0.0, (epoch - self.decline_from) / max(1, self.decline_to - self.decline_from)))
        return self.start + (self.end - self.start) * t
