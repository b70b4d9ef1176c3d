"""Held-out check at scale (issue 16): ``MixedDataModule`` set-up against one plain ``DataLoader`` pass.

For each kind of synthetic source, 1M rows of 32 float32 and an int64 label, mixed with 100k real rows of the same
kind (``holdout=0.1``: 10k held-out real rows, ``reserve=0``, ``synthetic_holdout=0.1``, batches of 256):

* ``tensor``: a ``TensorDataset``;
* ``memmap``: an ``np.memmap`` behind a plain ``Dataset`` whose ``__getitem__`` reads a row (opaque: no bulk access,
  so set-up hashes the real data only and the synthetic digests are taken as the first epoch reads the samples);
* ``memmap_rows``: the same ``Dataset`` with a ``row_arrays()`` method returning its memmaps (bulk access);
* ``hf``: an Arrow-backed Hugging Face ``datasets.Dataset`` built with ``Dataset.from_dict`` from numpy, format
  ``"torch"``.

It prints, for each kind, the set-up time (``dm.setup("fit")``, digest cache cleared: a first fit in a fresh
process), the set-up time of a second ``MixedDataModule`` over the same data (the in-process cache: a resume or a
second fit), the time of one plain ``DataLoader`` pass over the synthetic source (batch 256, 0 workers, default
collate), and the ratio set-up / pass (goal at most 0.25). The ``finite s`` column is the part of set-up spent looking
for NaN and infinities in the synthetic source (``checks.check_finite``: every row of a source with bulk access; the
first few samples of an opaque one, whose other samples are checked as the first epoch reads them). ``--epoch``
also times, for an opaque source, one epoch of the mixed training loader (990k samples, half of them synthetic,
0 workers) with both first-epoch checks (held-out copies and non-finite values), with each alone and with neither;
and one epoch of the same loader over a torch ``IterableDataset`` stream of the synthetic rows (tensor kind), with
and without the non-finite check of its samples; and the seconds spent inside the non-finite check. Wall-clock seconds, best of ``--repeats``;
``torch.set_num_threads(1)``.

Usage::

    python benchmarks/holdout_scale.py                       # 1M synthetic, 100k real, every kind (~2 min)
    python benchmarks/holdout_scale.py --synthetic 20000 --real 2000 --repeats 1   # smoke size
    python benchmarks/holdout_scale.py --epoch               # and the first-epoch check's cost (~3 min)
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from collapse_guard import MixedDataModule
from collapse_guard.data import checks, digest_cache
from collapse_guard.data.sources import DataSource

DIM, BATCH = 32, 256
KINDS = ("tensor", "memmap", "memmap_rows", "hf")


class MemmapRows(Dataset):
    """A plain ``Dataset`` over memory-mapped arrays: ``__getitem__`` reads one row (no bulk access)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.array(self.x[i])), torch.tensor(int(self.y[i]))


class MemmapWithRows(MemmapRows):
    """The same, declaring its arrays (``row_arrays``): digests are read off them in bulk."""

    def row_arrays(self):
        return self.x, self.y


def arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, DIM), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)


def memmaps(folder: str, name: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for part, a in (("x", x), ("y", y)):
        path = os.path.join(folder, f"{name}_{part}.npy")
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=a.dtype, shape=a.shape)
        mm[:] = a
        mm.flush()
        out.append(np.load(path, mmap_mode="r"))
    return out[0], out[1]


def make(kind: str, n_real: int, n_synth: int, folder: str):
    """``(real, synthetic)`` datasets of ``kind``."""
    real_xy, synth_xy = arrays(n_real, 0), arrays(n_synth, 1)
    if kind == "tensor":
        return tuple(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)) for x, y in (real_xy, synth_xy))
    if kind in ("memmap", "memmap_rows"):
        cls = MemmapRows if kind == "memmap" else MemmapWithRows
        return cls(*memmaps(folder, f"{kind}_real", *real_xy)), cls(*memmaps(folder, f"{kind}_synth", *synth_xy))
    if kind == "hf":
        import datasets

        datasets.disable_progress_bars()
        return tuple(datasets.Dataset.from_dict({"x": x, "label": y}).with_format("torch")
                     for x, y in (real_xy, synth_xy))
    raise ValueError(kind)


def plain_pass(dataset) -> float:
    start = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=BATCH, num_workers=0):
        pass
    return time.perf_counter() - start


class RowStream(IterableDataset):
    """A torch stream of the rows of a ``TensorDataset``."""

    def __init__(self, dataset: TensorDataset) -> None:
        self.dataset = dataset

    def __iter__(self):
        return zip(*self.dataset.tensors)


def mixed(real, synth, **kwargs) -> MixedDataModule:
    return MixedDataModule(real, {"gen": synth}, real_fraction=0.5, holdout=0.1, reserve=0.0,
                           synthetic_holdout=0.1, batch_size=BATCH, num_workers=0, seed=0, **kwargs)


def finite_check(synth) -> float:
    """The set-up time of ``checks.check_finite`` on the synthetic source alone."""
    source = DataSource("gen", synth, is_real=False)
    start = time.perf_counter()
    checks.check_finite([(source, synth[0], (0, len(synth)))])
    return time.perf_counter() - start


def timed_setup(real, synth, clear: bool, **kwargs) -> tuple[float, MixedDataModule]:
    if clear:
        digest_cache.clear_cache()
    dm = mixed(real, synth, **kwargs)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm.setup("fit")
    return time.perf_counter() - start, dm


def epoch_pass(dm: MixedDataModule) -> float:
    start = time.perf_counter()
    for batch in dm.train_dataloader():
        dm.on_after_batch_transfer(batch, 0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", type=int, default=1_000_000)
    parser.add_argument("--real", type=int, default=100_000)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epoch", action="store_true", help="also time one epoch of the training loader")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {args.real} real rows, {args.synthetic} synthetic rows of {DIM} float32 + int64 label; "
          f"best of {args.repeats}; load: {os.getloadavg()}")
    print(f"{'kind':<12} {'set-up s':>9} {'cached s':>9} {'pass s':>8} {'ratio':>7} {'finite s':>9}  contamination")
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.kinds.split(","):
            real, synth = make(kind, args.real, args.synthetic, folder)
            setup = min(timed_setup(real, synth, clear=True)[0] for _ in range(args.repeats))
            again, dm = timed_setup(real, synth, clear=False)
            passed = min(plain_pass(synth) for _ in range(args.repeats))
            finite = min(finite_check(synth) for _ in range(args.repeats))
            record = dm.contamination["sources"]["gen"]
            print(f"{kind:<12} {setup:9.2f} {again:9.2f} {passed:8.2f} {setup / passed:7.3f} {finite:9.3f}  "
                  f"{ {k: record.get(k) for k in ('duplicates', 'deferred')} }", flush=True)
            if args.epoch and dm._scan is not None:  # an opaque source: checked as the first epoch reads it
                variants = {"both checks": (1, 1), "held-out scan": (1, 0), "non-finite check": (0, 1),
                            "neither": (0, 0)}
                print(f"{'':<12} one training epoch, s: {epochs(real, synth, variants)}", flush=True)
            if args.epoch and kind == "tensor":  # the same rows as a stream: its samples checked as training reads them
                variants = {"non-finite check": (0, 1), "without": (0, 0)}
                times = epochs(real, RowStream(synth), variants, samples_per_epoch=len(synth) * 99 // 100)
                print(f"{'stream':<12} one training epoch, s: {times}", flush=True)
            del real, synth, dm


def epochs(real, synth, variants: dict, **kwargs) -> dict:
    """One training epoch for each ``label: (held-out scan, non-finite check)`` kept, alternating, best of two; and
    ``"in the non-finite check"``: the seconds of an epoch spent inside the non-finite check itself (least of its
    variants' epochs), which the load of a shared machine shifts less than the difference of two epochs."""
    best = {label: float("inf") for label in variants}
    best["in the non-finite check"] = float("inf")
    for _ in range(2):
        for label, (scan, finite) in variants.items():
            _, dm = timed_setup(real, synth, clear=False, **kwargs)
            dm._scan = dm._scan if scan else None
            dm._finite = dm._finite if finite else None
            spent = [0.0]
            if dm._finite is not None:
                dm._finite.check = timed(dm._finite.check, spent)
            best[label] = min(best[label], round(epoch_pass(dm), 2))
            if finite:
                best["in the non-finite check"] = min(best["in the non-finite check"], round(spent[0], 2))
    return best


def timed(fn, spent: list):
    """``fn``, adding the seconds of every call to ``spent[0]``."""
    def call(*args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            spent[0] += time.perf_counter() - start
    return call

if __name__ == "__main__":
    main()
