"""Shared pieces of the benchmarks: the machine record, quiet Lightning fits, real digits and their synthetic sources.

Nothing here is part of collapse_guard; the benchmarks import the package exactly as a user would.
"""
from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import multiprocessing
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from pytorch_lightning import LightningDataModule, LightningModule
from torch.utils.data import DataLoader

from collapse_guard._trainer import quiet_trainer_kwargs
from collapse_guard.demo import PIXEL_MAX, digits_tensors, real_fraction_schedule, split_digits
from collapse_guard.data import SyntheticSource
from collapse_guard.loop import ClassConditionalGMM, generation_chain

NUM_CLASSES = 10


# -- the machine ------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def write_record(result: dict, path: str) -> None:
    """Write a benchmark's JSON record to ``path`` (folders made as needed; ``""``: nowhere) and say where."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"\nJSON record: {out}")


class CrossEntropyClassifier(LightningModule):
    """The benchmarks' user model: ``net`` trained with cross-entropy and Adam at ``lr``; subclasses build ``net``."""

    def __init__(self, net: torch.nn.Module, lr: float) -> None:
        super().__init__()
        self.net, self.lr = net, lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def machine_info() -> dict:
    """What the figures were measured on: cores, CPU model, load averages (1, 5, 15 min), versions."""
    import pytorch_lightning

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": pytorch_lightning.__version__,
        "torch_threads": torch.get_num_threads(),
        "collapse_guard": collapse_guard_version(),
    }


def collapse_guard_version() -> str:
    """Where collapse_guard was imported from and at which commit (a ``COMMIT`` file beside an exported tree, or git)."""
    import subprocess

    import collapse_guard

    root = Path(collapse_guard.__file__).resolve().parent.parent
    commit = ""
    if (root / "COMMIT").exists():
        commit = (root / "COMMIT").read_text().strip()
    else:
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "collapse_guard"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            commit += " + uncommitted changes" if dirty else ""
        except (OSError, subprocess.SubprocessError):
            pass
    return f"{root} @ {commit or 'unknown commit'}"


def quiet() -> None:
    """Silence Lightning's per-fit banners and the advice that does not apply to these CPU fits."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "collapse_guard"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def trainer_kwargs(max_epochs: int) -> dict:
    return quiet_trainer_kwargs(max_epochs=max_epochs, deterministic=True, accelerator="cpu", devices=1)


# -- synthetic digits: generators that collapse in different ways, and healthy ones --------------------------------
#: the good generator: a class-conditional GMM with 4 components per class in 30 PCA dimensions, fitted on the real
#: training digits (a classifier trained on 1800 of its samples alone scores about as well as on the real digits)
GOOD_GMM = dict(n_components=4, n_pca=30)
SYNTHETIC_SIZE = 1800


def _gmm(seed: int, **kw) -> ClassConditionalGMM:
    return ClassConditionalGMM(random_state=seed, **{**GOOD_GMM, **kw})


def _source(x: np.ndarray, y: np.ndarray, generator: str, generation: int = 1, **params) -> SyntheticSource:
    return SyntheticSource(digits_tensors(x, y), generator=generator, generation=generation, params=params)


def _class_means(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.stack([x[y == c].mean(0) if np.any(y == c) else np.zeros(x.shape[1]) for c in range(NUM_CLASSES)])


_BASE: dict = {}


def _good_samples(splits: dict, seed: int, n: int = SYNTHETIC_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of the good generator fitted on the real training digits of ``splits`` (cached per seed)."""
    key = (seed, n, splits["train"][0].tobytes().__hash__())
    if key not in _BASE:
        if len(_BASE) > 8:
            _BASE.clear()
        _BASE[key] = _gmm(seed).fit(*splits["train"]).sample(n, rng=seed + 1)
    return _BASE[key]


def synth_good(splits, seed):
    return {"gen1": _source(*_good_samples(splits, seed), "ClassConditionalGMM(4, 30)")}


def synth_accumulate(splits, seed, generations=10, per_generation=200):
    chain = generation_chain(lambda: _gmm(seed), *splits["train"], generations=generations,
                             samples_per_generation=per_generation, regime="accumulate", seed=seed)
    return {f"gen{g + 1}": _source(x, y, "ClassConditionalGMM(4, 30)", g + 1, regime="accumulate")
            for g, (x, y) in enumerate(chain)}


def synth_variance_shrink(splits, seed, factor=0.3):
    x, y = _good_samples(splits, seed)
    means = _class_means(x, y)
    x = np.clip(means[y] + factor * (x - means[y]), 0, PIXEL_MAX).astype(np.float32)
    return {"shrunk": _source(x, y, f"GMM, within-class spread x{factor}", factor=factor)}


def synth_tail_truncation(splits, seed, keep=0.25):
    x, y = _good_samples(splits, seed, int(SYNTHETIC_SIZE / keep))
    dist = np.linalg.norm(x - _class_means(x, y)[y], axis=1)
    kept = np.zeros(len(x), bool)
    for c in range(NUM_CLASSES):
        m = y == c
        if m.any():
            kept[m] = dist[m] <= np.quantile(dist[m], keep)
    return {"truncated": _source(x[kept], y[kept], f"GMM, the {keep:.0%} of samples nearest their class mean", keep=keep)}


def synth_mode_loss(splits, seed, lost=3):
    rng = np.random.default_rng(seed)
    gone = rng.choice(NUM_CLASSES, size=lost, replace=False)
    x, y = _good_samples(splits, seed, int(SYNTHETIC_SIZE * NUM_CLASSES / (NUM_CLASSES - lost)))
    kept = ~np.isin(y, gone)
    return {"modes_lost": _source(x[kept], y[kept], f"GMM without classes {sorted(gone.tolist())}",
                                  lost=sorted(gone.tolist()))}


def synth_label_noise(splits, seed, rate=0.6):
    x, y = _good_samples(splits, seed)
    rng = np.random.default_rng(seed + 2)
    noisy = rng.random(len(y)) < rate
    y = y.copy()
    y[noisy] = (y[noisy] + rng.integers(1, NUM_CLASSES, noisy.sum())) % NUM_CLASSES  # always a wrong class
    return {"noisy_labels": _source(x, y, f"GMM, {rate:.0%} of labels wrong", rate=rate)}


def synth_artifact(splits, seed):
    """A generator artifact that leaks the label: pixel ``(0, c)`` of every class-``c`` sample lit (16/16)."""
    x, y = _good_samples(splits, seed)
    x = x.copy()
    x[np.arange(len(x)), y] = PIXEL_MAX
    return {"artifact": _source(x, y, "GMM + a lit top-row pixel at the class index")}


def synth_offset(splits, seed, pixels=1):
    """A fixed offset: every generated digit lies ``pixels`` to the right of where real digits lie."""
    x, y = _good_samples(splits, seed)
    im = np.roll(x.reshape(-1, 8, 8), pixels, axis=2)
    im[:, :, :pixels] = 0
    return {"offset": _source(im.reshape(-1, 64).astype(np.float32), y, f"GMM, digits shifted {pixels} pixel right",
                              pixels=pixels)}


def synth_replace(splits, seed, generations=(10, 20, 30), per_generation=200):
    chain = generation_chain(lambda: ClassConditionalGMM(n_components=2, n_pca=20, random_state=seed),
                             *splits["train"], generations=max(generations), samples_per_generation=per_generation,
                             regime="replace", seed=seed)
    return {f"gen{g}": _source(*chain[g - 1], "ClassConditionalGMM(2, 20)", g, regime="replace") for g in generations}


#: the schedule of every run, as in the demo: 90% real for epochs 0-3 (healthy training), then the real share falls
#: linearly to ``end`` at epoch 8 and stays there
WARMUP_EPOCHS = 4


def schedule(end: float = 0.0) -> Callable[[int], float]:
    return real_fraction_schedule(0.9, end, WARMUP_EPOCHS - 1, 8)


#: held-out real digits of the demo's split (the guard's validation set)
DIGITS_HELDOUT = 360


def digits_splits(seed: int, heldout: int = DIGITS_HELDOUT) -> dict:
    """The demo's split of the real digits; ``heldout`` above 360 moves that many more of the seed's training digits
    into the held-out set (the test set stays the same 537 digits)."""
    splits = split_digits(seed)
    extra = heldout - DIGITS_HELDOUT
    if extra:
        train_x, train_y = splits["train"]
        if not 0 < extra < len(train_x) // 2:
            raise ValueError(f"heldout must be in [{DIGITS_HELDOUT}, {DIGITS_HELDOUT + len(train_x) // 2}), got {heldout}")
        val_x, val_y = splits["val"]
        splits["val"] = (np.concatenate([val_x, train_x[:extra]]), np.concatenate([val_y, train_y[:extra]]))
        splits["train"] = (train_x[extra:], train_y[extra:])
    return splits


@dataclass
class Task:
    """A real dataset, the user's DataModule and model for it, and the ground-truth margin of its test set."""

    name: str
    margin: float  # points of real test accuracy that count as a collapse (about 2.5 standard errors of the test set)
    make: Callable[[int], Any]  # seed -> the seed's data (splits)
    real_dm: Callable[[Any, int], Any]  # (data, batch size) -> the user's LightningDataModule
    model: Callable[[], Any]  # -> a fresh LightningModule
    test: Callable[[Any], tuple]  # data -> (inputs, labels) of the real test set no detector sees


class SplitsDataModule(LightningDataModule):
    """The user's own DataModule over ready splits: ``data["train"]`` for training, ``data["val"]`` for validation
    (the held-out real data ``MixedDataModule`` takes over). The cost benchmark's digits and the text task use it."""

    def __init__(self, data: dict, batch_size: int = 64) -> None:
        super().__init__()
        self.data, self.batch_size = data, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data["val"], batch_size=256)


def _digits_task(heldout: int = DIGITS_HELDOUT) -> Task:
    from collapse_guard.demo import DigitsClassifier, DigitsDataModule

    return Task("digits", 0.02, functools.partial(digits_splits, heldout=heldout),
                lambda s, bs: DigitsDataModule(s, batch_size=bs),
                lambda: DigitsClassifier(lr=5e-3), lambda s: (tensor(s["test"][0]), torch.as_tensor(s["test"][1])))


def _text_task() -> Task:
    import _text

    return Task("text", 0.05, _text.TextData, lambda d, bs: SplitsDataModule(d.tensors, bs),
                lambda: _text.TextClassifier(lr=2e-3), lambda d: tuple(d.tensors["test"].tensors))


TASKS = {"digits": _digits_task, "text": _text_task}


def _text_builder(name: str):
    def build(data, seed):
        import _text

        return getattr(_text, name)(data, seed)

    return build


#: name -> (task, expected, what the synthetic source is, builder, real fraction schedule)
SCENARIOS: dict[str, tuple] = {
    "variance_shrink": ("digits", "collapse", "good GMM's samples pulled to their class mean (spread x0.3)", synth_variance_shrink, schedule()),
    "tail_truncation": ("digits", "collapse", "good GMM, only the 25% of samples nearest their class mean", synth_tail_truncation, schedule()),
    "mode_loss": ("digits", "collapse", "good GMM without 3 of the 10 classes", synth_mode_loss, schedule()),
    "label_noise": ("digits", "collapse", "good GMM, 60% of labels wrong (uniform over the other classes)", synth_label_noise, schedule()),
    "artifact": ("digits", "collapse", "good GMM + a lit top-row pixel at the class index (a label-leaking artifact)", synth_artifact, schedule()),
    "offset": ("digits", "collapse", "good GMM, every digit shifted one pixel right", synth_offset, schedule()),
    "replace": ("digits", "collapse", "generations 10, 20, 30 of a refitted GMM (replace, as the demo)", synth_replace, schedule()),
    "good_generator": ("digits", "healthy", "good GMM, generation 1", synth_good, schedule()),
    "accumulate": ("digits", "healthy", "generations 1-10 of an accumulate chain; real share falls to 10%", synth_accumulate, schedule(0.1)),
    "pure_real": ("digits", "healthy", "real digits only", None, 1.0),
    "text_replace": ("text", "collapse", "help-text topics: generations 10, 20, 30 of refitted char 3-gram models (replace)", _text_builder("synth_text_replace"), schedule()),
    "text_good_generator": ("text", "healthy", "help-text topics: char 3-gram models, generation 1", _text_builder("synth_text_good"), schedule()),
}


def build_scenario(name: str, data: Any, seed: int):
    """``(synthetic sources or None, real fraction schedule)`` of scenario ``name`` on the seed's ``data``."""
    _, _, _, builder, frac = SCENARIOS[name]
    return (builder(data, seed) if builder is not None else None), frac


def tensor(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x / PIXEL_MAX, dtype=torch.float32)


def median(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def fit_groups(groups: list[tuple], fit_group: Callable[..., list[dict]], extra: tuple = (), jobs: int = 1,
               describe: Callable[[list[dict]], str] = lambda result: "", width: int = 14) -> list[dict]:
    """The runs of every ``(dataset, seed)`` group, ``fit_group(dataset, seed, *extra)``: in this process with
    ``jobs <= 1`` (its torch thread count put back after), else in up to ``jobs`` spawned worker processes (fresh
    workers: no forked torch state). Each group's line (``describe(its runs)``) goes to stderr as it ends; the runs
    come back in the order the groups ended (callers sort them). ``suite.py``, ``suite_tasks.py`` and
    ``_multisource.py`` fit through it."""
    t0, runs = time.perf_counter(), []

    def done(group: tuple, result: list[dict]) -> None:
        runs.extend(result)
        print(f"  {group[0]:<{width}} seed {group[1]}: {describe(result)} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)

    if jobs <= 1:
        threads = torch.get_num_threads()
        for group in groups:
            done(group, fit_group(*group, *extra))
        torch.set_num_threads(threads)
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            pending = {pool.submit(fit_group, *group, *extra): group for group in groups}
            for future in concurrent.futures.as_completed(pending):
                done(pending[future], future.result())
    return runs
