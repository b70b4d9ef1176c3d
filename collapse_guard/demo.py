"""The main job, on real data: three fits of a digit classifier as the synthetic share grows.

Real data: scikit-learn's ``load_digits`` (1797 real 8x8 digits), split into real training, held-out real
(the guard's validation set) and a real test set that no callback ever sees. Synthetic digits: a
class-conditional Gaussian mixture fitted on the real training digits, then refitted on its own samples
generation after generation (``replace``), so later generations have collapsed the way published collapse
does: variance shrinks, modes and tails vanish, rare classes drift away.

Fits, on the same data and seed:

1. ``real_only``: the real training digits alone (reserve included);
2. ``mixed``: real plus synthetic, the real fraction falling epoch by epoch, no guard;
3. ``guarded``: the same mixture with ``CollapseGuard(action="inject", rules=DEMO_RULES)``.

The guarded fit states its own accuracy rule (:data:`DEMO_RULES`), as a user who knows the smallest fall that
matters would: this collapse takes 2.7 points of held-out accuracy at once, less than the 3 standard errors (4.1
points on these 360 held-out digits) of the default accuracy rule below its level and less than the default paired
rule's 3.5 paired standard errors (3.9 points: the samples that flipped since the best check), and no class falls 30
points; the default rules see nothing here (``benchmarks/RESULTS.md``, sections 5 and 8: the digits ``replace`` runs
are among the default rules' misses).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from collapse_guard._digits import split_digits_parts
from collapse_guard._compat import Callback, LightningDataModule, LightningModule, Trainer
from collapse_guard._trainer import quiet_trainer_kwargs
from collapse_guard.callbacks import CollapseGuard, CollapseReport, HeldOutRealCheck, RatioMonitor, Rule, default_rules
from collapse_guard.data import MixedDataModule, SyntheticSource
from collapse_guard.loop import ClassConditionalGMM, generation_chain

PIXEL_MAX = 16.0


#: the guarded fit's rules: the defaults with a more sensitive accuracy rule (2 standard errors below its best,
#: at one check: it false-alarms more often than the default on other data)
DEMO_RULES = [Rule("collapse/heldout_real/acc", mode="max", sigmas=2.0, name="heldout_real_acc_2se")]
DEMO_RULES += default_rules()[1:]

def digits_tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """Digits as the user's DataModule serves them: float32 pixels scaled to ``[0, 1]``, int64 labels."""
    return TensorDataset(torch.as_tensor(x / PIXEL_MAX, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))


def split_digits(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real digits split into train (900), val (360, held-out real) and test (537, seen by no callback)."""
    return split_digits_parts(seed, {"train": 900, "val": 360, "test": None})


class DigitsDataModule(LightningDataModule):
    """An ordinary user DataModule over real digits: the thing collapse_guard wraps, unchanged."""

    def __init__(self, splits: dict, batch_size: int = 64) -> None:
        super().__init__()
        self.splits = splits
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        self.data = {k: digits_tensors(*v) for k, v in self.splits.items()}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data["val"], batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.data["test"], batch_size=256)


class DigitsClassifier(LightningModule):
    """A small MLP classifier (64-128-10); the user's model, which collapse_guard never changes."""

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

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    data = digits_tensors(x, y)
    return float((model(data.tensors[0]).argmax(-1) == data.tensors[1]).float().mean())


def real_fraction_schedule(start: float, end: float, decline_from: int, decline_to: int):
    """``start`` until epoch ``decline_from``, then linear down to ``end`` at ``decline_to``, then flat."""

    def schedule(epoch: int) -> float:
        t = min(1.0, max(0.0, (epoch - decline_from) / max(1, decline_to - decline_from)))
        return start + (end - start) * t

    return schedule


def make_synthetic(splits: dict, generations: list[int], per_generation: int, seed: int, **gmm) -> dict:
    """Generations of a class-conditional GMM refitted on its own samples (``replace``), as named sources.

    Args:
        splits: the real splits; the generator is fitted on ``splits["train"]`` only.
        generations: which generations become synthetic sources (named ``gen<g>``).
        per_generation: samples drawn per generation.
        seed: seed of the chain.
        gmm: keyword arguments of :class:`~collapse_guard.loop.ClassConditionalGMM`.
    """
    x, y = splits["train"]
    chain = generation_chain(
        lambda: ClassConditionalGMM(random_state=seed, **gmm),
        x,
        y,
        generations=max(generations),
        samples_per_generation=per_generation,
        regime="replace",
        seed=seed,
    )
    sources = {}
    for g in generations:
        xg, yg = chain[g - 1]
        params = {**gmm, "samples_per_generation": per_generation, "regime": "replace"}
        sources[f"gen{g}"] = SyntheticSource(
            digits_tensors(xg, yg), generator="ClassConditionalGMM", generation=g, params=params
        )
    return sources


def run_fit(
    name: str, splits: dict, synthetic: Optional[dict], schedule, guard: bool, cfg: dict,
    report_dir: Optional[str] = None,
) -> dict:
    """One fit; returns its per-epoch history, guard events and final accuracies (and writes a collapse report
    into ``report_dir`` when given)."""
    torch.manual_seed(cfg["seed"])
    real_dm = DigitsDataModule(splits, batch_size=cfg["batch_size"])
    dm = MixedDataModule(
        real=real_dm,
        synthetic=synthetic,
        real_fraction=schedule,
        holdout="val",
        reserve=0.0 if synthetic is None else cfg["reserve"],
        samples_per_epoch=cfg["samples_per_epoch"],
        seed=cfg["seed"],
    )
    ratio, check = RatioMonitor(), HeldOutRealCheck(features=True)
    callbacks = [ratio, check]
    collapse_guard = CollapseGuard(action="inject", rules=DEMO_RULES, verbose=False) if guard else None
    if collapse_guard is not None:
        callbacks.append(collapse_guard)
    if report_dir is not None:
        callbacks.append(CollapseReport(dirpath=report_dir, summary=False))
    per_epoch: list[dict] = []

    class Recorder(Callback):  # copies the logged collapse/ values of every epoch for the table
        def on_train_epoch_end(self, trainer, pl_module):
            values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("collapse/")}
            per_epoch.append({"epoch": trainer.current_epoch, **values})

    trainer = Trainer(**quiet_trainer_kwargs(max_epochs=cfg["epochs"], callbacks=callbacks + [Recorder()],
                                             deterministic=True))
    model = DigitsClassifier(lr=cfg["lr"])
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    events = [e.__dict__ for e in collapse_guard.events] if collapse_guard is not None else []
    return {
        "name": name,
        "seconds": seconds,
        "epochs": per_epoch,
        "events": events,
        "injections": dm.injections,
        "samples": dm.samples_by_source(),
        "heldout_real_acc": accuracy(model, *splits["val"]),
        "test_acc": accuracy(model, *splits["test"]),
    }


DEFAULTS = {
    "seed": 0,
    "epochs": 14,
    "batch_size": 64,
    "lr": 5e-3,
    "samples_per_epoch": 1920,
    "reserve": 0.3,
    "generations": [10, 20, 30],
    "samples_per_generation": 200,
    "gmm_components": 2,
    "gmm_pca": 20,
    "real_fraction_start": 0.9,
    "real_fraction_end": 0.0,
    "real_fraction_decline": [3, 8],
}


def run_demo(out: Optional[str] = "runs/demo", quick: bool = False, **overrides) -> dict:
    """Run the three fits, print the per-epoch table and the final accuracies, write ``out/demo.json``.

    Args:
        out: folder for the JSON record (``None``: write nothing).
        quick: smaller run for tests (fewer epochs and generations).
        overrides: any key of :data:`DEFAULTS`.

    Returns:
        The JSON record: configuration, the three fits (per-epoch indicators, events, accuracies).
    """
    cfg = dict(DEFAULTS)
    if quick:
        cfg.update(epochs=9, real_fraction_decline=[2, 5])
    cfg.update(overrides)
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and immune to oversubscription
    t0 = time.perf_counter()
    splits = split_digits(cfg["seed"])
    synthetic = make_synthetic(
        splits, cfg["generations"], cfg["samples_per_generation"], cfg["seed"],
        n_components=cfg["gmm_components"], n_pca=cfg["gmm_pca"],
    )
    gen_seconds = time.perf_counter() - t0
    schedule = real_fraction_schedule(cfg["real_fraction_start"], cfg["real_fraction_end"], *cfg["real_fraction_decline"])
    fits = [
        run_fit("real_only", splits, None, 1.0, guard=False, cfg=cfg),
        run_fit("mixed", splits, synthetic, schedule, guard=False, cfg=cfg),
        run_fit("guarded", splits, synthetic, schedule, guard=True, cfg=cfg,
                report_dir=None if out is None else str(Path(out) / "collapse_report")),
    ]
    record = {
        "config": cfg,
        "data": {k: len(v[1]) for k, v in splits.items()},
        "synthetic": {
            name: {"generation": s.generation, "generator": s.generator, "size": len(s.data), "params": s.params}
            for name, s in synthetic.items()
        },
        "generator_seconds": gen_seconds,
        "fits": fits,
        "total_seconds": time.perf_counter() - t0,
    }
    print(format_report(record))
    print(f"\nwall time: {record['total_seconds']:.1f} s (generator chain {gen_seconds:.1f} s)")
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        (path / "demo.json").write_text(json.dumps(record, indent=2, default=float))
        print(f"\nJSON record: {path / 'demo.json'}")
        print(f"collapse report of the guarded fit: {path / 'collapse_report' / 'report.html'} "
              f"(re-render: collapse-guard report {path / 'collapse_report'})")
    return record


def format_report(record: dict) -> str:
    """The per-epoch table of the mixed and guarded fits and the final accuracies, as text."""
    fits = {f["name"]: f for f in record["fits"]}
    mixed, guarded = fits["mixed"], fits["guarded"]
    events = {}
    for e in guarded["events"]:
        events.setdefault(e["epoch"], e["action"])
    lines = [
        "collapse_guard demo: digit classifier, synthetic share growing, synthetic digits from generations "
        + ", ".join(str(s["generation"]) for s in record["synthetic"].values())
        + " of a refitted class-conditional GMM",
        "",
        f"{'':5} | {'real only':^9} | {'mixed, no guard':^27} | {'mixed, guarded':^55}",
        f"{'epoch':>5} | {'acc':>9} | {'real%':>6} {'acc':>6} {'worst':>6} {'effK':>6}"
        f" | {'real%':>6} {'acc':>6} {'worst':>6} {'effK':>6} {'gap':>6} {'event':<16}",
    ]
    key = "collapse/heldout_real/"
    for o, m, g in zip(fits["real_only"]["epochs"], mixed["epochs"], guarded["epochs"]):
        row = f"{m['epoch']:>5} | {o.get(key + 'acc', float('nan')):>9.3f} | "
        for r in (m, g):
            row += (
                f"{100 * r.get('collapse/real_fraction', float('nan')):>6.1f} {r.get(key + 'acc', float('nan')):>6.3f} "
                f"{r.get(key + 'worst_class_recall', float('nan')):>6.3f} {r.get(key + 'eff_classes_ratio', float('nan')):>6.3f}"
            )
            row += " | " if r is m else ""
        row += f" {g.get('collapse/gap/acc', float('nan')):>+6.3f} {events.get(g['epoch'], ''):<16}"
        lines.append(row)
    lines += [
        "",
        "real%: real share of the epoch's training samples (RatioMonitor); acc, worst, effK: held-out real accuracy,",
        "worst-class recall, effective number of predicted classes / real (HeldOutRealCheck); gap: held-out synthetic",
        "minus held-out real accuracy.",
        "",
        "guard events:",
    ]
    lines += [f"  epoch {e['epoch']}: {e['action']} ({e['rule']}) — {e['reason']}" for e in guarded["events"]] or ["  none"]
    lines += ["", f"{'fit':<10} {'held-out real acc':>18} {'test acc (unseen)':>18} {'real share trained':>19}"]
    for f in record["fits"]:
        total = sum(f["samples"].values())
        real = f["samples"].get("real", 0) + f["samples"].get("reserve", 0)
        lines.append(
            f"{f['name']:<10} {f['heldout_real_acc']:>18.3f} {f['test_acc']:>18.3f} {real / total:>19.3f}"
        )
    gap_mixed = fits["real_only"]["test_acc"] - mixed["test_acc"]
    gap_guarded = fits["real_only"]["test_acc"] - guarded["test_acc"]
    lines.append(
        f"\ntest accuracy below real-only: mixed {100 * gap_mixed:.1f} points, guarded {100 * gap_guarded:.1f} points"
    )
    return "\n".join(lines)
