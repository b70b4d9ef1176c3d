"""Two processes on Lightning's own DDP strategy (gloo, CPU): sharding, reduced counts and indicators, one decision.

The test launches this file as a script (``python tests/test_ddp.py OUT MODE``) with
``Trainer(accelerator="cpu", devices=2, strategy="ddp")``: Lightning starts rank 1 by re-running the script, and
every rank writes what it saw to ``OUT/rank<r>.json``. A script rather than ``ddp_spawn`` from inside pytest, because
spawned workers would have to unpickle the test helpers (``cg_testing`` is registered by conftest, not importable).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest

try:
    import cg_testing  # noqa: F401 - registered by conftest under pytest
except ImportError:  # run as the DDP script: conftest registers it on import
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import conftest  # noqa: F401

from cg_testing import SYNTH_BASE, VAL_BASE, TinyMLP, ids_of, make_mixed

HERE = Path(__file__).resolve()
BATCH, SAMPLES, EPOCHS = 8, 64, 4


# -- the script: one rank --------------------------------------------------------------------------------------
def fit_parts(fail: str = ""):
    """Datamodule, callbacks and model of one fit; ``fail`` makes the guard or the check raise on rank 1."""
    from collapse_guard import CollapseGuard, HeldOutRealCheck, RatioMonitor, Rule, default_rules
    from collapse_guard.callbacks.heldout import default_batch_fn

    dm = make_mixed(real_fraction=0.25, n_real=120, synth_sizes={"g1": 80, "g2": 80}, holdout=0.25, reserve=0.25,
                    batch_size=BATCH, samples_per_epoch=SAMPLES)
    rules = default_rules() + [
        # the epoch's real share is 0.25 < 0.3: fires at the second check (epoch 1) and injects
        Rule("collapse/real_fraction", mode="max", threshold=0.3, patience=2, action="inject", name="ratio"),
        # the module's own train_loss is not synced: its value differs between ranks (never fires)
        Rule("train_loss", mode="min", threshold=1e6, action="warn", name="train_loss"),
    ]

    def on_rank1_at_epoch1(trainer) -> bool:
        return trainer.global_rank == 1 and trainer.current_epoch == 1

    class FailingGuard(CollapseGuard):
        def _read(self, trainer):
            if fail == "guard" and on_rank1_at_epoch1(trainer):
                raise ZeroDivisionError("a guard check that fails on rank 1 only")
            return super()._read(trainer)

    holder: dict = {}

    def batch_fn(batch):
        if fail == "check" and on_rank1_at_epoch1(holder["trainer"]):
            raise ZeroDivisionError("a held-out check that fails on rank 1 only")
        return default_batch_fn(batch)

    guard = FailingGuard(rules=rules, action="inject", inject_fraction=0.5, real_fraction_step=0.5, cooldown=1,
                         verbose=False)
    return dm, RatioMonitor(), HeldOutRealCheck(batch_fn=batch_fn), guard, TinyMLP(), holder


def make_ddp_trainer(callbacks, max_epochs=EPOCHS):
    import pytorch_lightning as pl

    return pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=max_epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=callbacks,
    )


def failing_fits(record: dict, scenarios: list[str]) -> None:
    """Fits in which a check raises on rank 1 at epoch 1; each rank records the error it ended with, and when."""
    record.setdefault("failures", {})
    for fail in scenarios:
        dm, ratio, check, guard, model, holder = fit_parts(fail)
        trainer = holder["trainer"] = make_ddp_trainer([ratio, check, guard], max_epochs=3)
        start = time.perf_counter()
        try:
            trainer.fit(model, datamodule=dm)
            outcome = "finished"
        except Exception as err:  # noqa: BLE001 - what each rank ended with is the result
            outcome = f"{type(err).__name__}: {err}"
        record["failures"][fail] = {"outcome": outcome, "seconds": time.perf_counter() - start,
                                    "epoch": trainer.current_epoch}
        record["rank"] = trainer.global_rank


def run_rank(out: Path, scenario: str) -> None:
    """``main``: a full fit, then, in the same two processes, one where the guard fails on rank 1.
    ``check``: one fit where HeldOutRealCheck fails on rank 1."""
    import torch

    torch.set_num_threads(1)
    if scenario == "check":
        record: dict = {}
        failing_fits(record, ["check"])
        (out / f"rank{record['rank']}.json").write_text(json.dumps(record))
        return

    from collapse_guard._compat import Callback
    from collapse_guard.metrics.classification import ClassificationIndicators

    dm, ratio, check, guard, model, _ = fit_parts()
    record = {"epochs": []}

    class Recorder(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                record["heldout_ids"] = [i for b in dm.heldout_real_dataloader() for i in ids_of(b)]
                synth = dm.heldout_synthetic_dataloader()
                record["heldout_synthetic_ids"] = [i for b in synth for i in ids_of(b)]
            record["epochs"].append({
                "epoch": trainer.current_epoch,
                "seen": pl_module.seen.get(trainer.current_epoch, []),
                "ratio": ratio.history[-1],
                "check": dict(check.last),
                "guard_state": guard.state,
                "events": len(guard.events),
                "mixer": dm.mixer.state_dict(),
                "local_counts": dm.mixer.local_epoch_counts.tolist(),
            })

    trainer = make_ddp_trainer([ratio, check, guard, Recorder()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=dm)
    model.eval()
    with torch.no_grad():
        # one process over the whole held-out set, no sync (a metric built outside the fit would sync on compute)
        direct = ClassificationIndicators(num_classes=3, sync_on_compute=False)
        for batch in dm.heldout_real_dataloader(shard=False):
            direct.update(model(batch[0]), batch[1])
        values = {k: float(v) for k, v in direct.compute().items()}
    rank = trainer.global_rank
    record.update(
        rank=rank,
        world_size=trainer.world_size,
        events=[asdict(e) for e in guard.events],
        direct=values,
        warnings=[str(w.message) for w in caught],
        mixer=dm.mixer.state_dict(),
        failures={},
    )
    failing_fits(record, ["guard"])
    (out / f"rank{rank}.json").write_text(json.dumps(record))


# -- the tests ----------------------------------------------------------------------------------------------------
def launch(tmp_path: Path, scenario: str, timeout: float = 150.0) -> tuple[subprocess.CompletedProcess, float]:
    """Run the script on two ranks; on a timeout, kill both (they share a new session) and fail with their output."""
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK", "WORLD_SIZE",
                                                            "NODE_RANK", "RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore::DeprecationWarning")
    start = time.perf_counter()
    popen = subprocess.Popen([sys.executable, str(HERE), str(tmp_path), scenario], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)  # rank 0 and the rank 1 it started: this test's processes only
        stdout, stderr = popen.communicate()
        pytest.fail(f"the two ranks did not finish in {timeout:.0f} s (a hang):\n{stderr[-4000:]}")
    proc = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
    return proc, time.perf_counter() - start


def kind(sample_id: int) -> str:
    if sample_id >= SYNTH_BASE:
        return "synthetic"
    if sample_id >= VAL_BASE:
        return "val"
    return "real"


def test_two_ranks_shard_reduce_decide_together_and_fail_together(tmp_path):
    proc, seconds = launch(tmp_path, "main")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    a, b = ranks

    # the guard fired once, at epoch 1 (the ratio rule), and both ranks took the same decision and recorded the
    # same events; both datamodules applied the same injection
    assert a["events"] == b["events"] and a["events"]
    assert [(e["epoch"], e["action"]) for e in a["events"] if e["rule"] == "ratio"] == [(1, "inject")]
    assert a["mixer"] == b["mixer"]
    assert a["mixer"]["reserve_cursor"] > 0 and a["mixer"]["real_fraction_floor"] == 0.75
    for ea, eb in zip(a["epochs"], b["epochs"]):
        assert ea["mixer"] == eb["mixer"] and ea["guard_state"] == eb["guard_state"] and ea["events"] == eb["events"]

    for epoch, (ea, eb) in enumerate(zip(a["epochs"], b["epochs"])):
        assert ea["epoch"] == eb["epoch"] == epoch
        seen_a, seen_b = ea["seen"], eb["seen"]
        # each rank draws its shard: half the epoch each, no sample on both ranks
        assert len(seen_a) == len(seen_b) == SAMPLES // 2
        assert not set(seen_a) & set(seen_b)
        assert all(kind(i) != "val" for i in seen_a + seen_b)
        # every batch at the target ratio: 0.25 * 8 = 2 real samples, 0.75 * 8 = 6 after the injection at epoch 1
        target = 0.25 if epoch <= 1 else 0.75
        for seen in (seen_a, seen_b):
            for k in range(0, len(seen), BATCH):
                assert sum(kind(i) == "real" for i in seen[k : k + BATCH]) == round(target * BATCH)
        # counts are reduced over ranks and the same on both: they match the union of what the ranks received
        assert ea["ratio"] == eb["ratio"]
        union = seen_a + seen_b
        real = sum(kind(i) == "real" for i in union)
        assert ea["ratio"]["real_fraction"] == pytest.approx(real / len(union))
        assert sum(ea["ratio"]["samples"].values()) == SAMPLES
        assert ea["ratio"]["samples"]["g1"] + ea["ratio"]["samples"]["g2"] == len(union) - real
        assert [x + y for x, y in zip(ea["local_counts"], eb["local_counts"])] == list(ea["ratio"]["samples"].values())
        assert ea["ratio"]["real_fraction_target"] == target
        if epoch >= 2:
            assert ea["ratio"]["samples"]["reserve"] > 0
        # the held-out indicators are the same on both ranks
        assert ea["check"] == eb["check"] and "collapse/heldout_real/acc" in ea["check"]
    assert a["epochs"][-1]["mixer"]["total_counts"] == [sum(e["ratio"]["samples"][n] for e in a["epochs"])
                                                        for n in ["real", "reserve", "g1", "g2"]]

    # the held-out loaders are sharded: disjoint halves that together are the whole held-out set, once
    held_a, held_b = a["heldout_ids"], b["heldout_ids"]
    assert not set(held_a) & set(held_b) and len(held_a) + len(held_b) == 30
    assert abs(len(held_a) - len(held_b)) <= 1
    assert not set(a["heldout_synthetic_ids"]) & set(b["heldout_synthetic_ids"])
    # ... so the synced indicators count every held-out sample once: they equal one process's over the whole set
    last = a["epochs"][-1]["check"]
    for key in ("acc", "loss", "worst_class_recall", "eff_classes", "calibration_error"):
        assert last[f"collapse/heldout_real/{key}"] == pytest.approx(a["direct"][key], rel=1e-6, abs=1e-9), key
    assert a["direct"] == b["direct"]

    # a metric the module logs without sync_dist differs between ranks: the guard says so, and judges rank 0's
    assert any("train_loss differs between ranks" in w for w in a["warnings"])

    # a guard check that raises on rank 1 only ends the fit on both ranks at that epoch, each with the reason,
    # rank 0 without waiting for rank 1 in the next collective (run_collectively)
    fa, fb = a["failures"]["guard"], b["failures"]["guard"]
    assert fb["outcome"] == "ZeroDivisionError: a guard check that fails on rank 1 only", fb
    assert fa["outcome"] == f"RuntimeError: FailingGuard failed on rank 1, so every rank stops: {fb['outcome']}", fa
    assert fa["epoch"] == fb["epoch"] == 1
    assert fa["seconds"] < 30 and fb["seconds"] < 30
    assert seconds < 90


def test_heldout_loaders_are_sharded_by_rank_without_processes():
    from types import SimpleNamespace

    dm = make_mixed(n_real=80, holdout=0.25, synthetic_holdout=0.2)
    dm.setup("fit")
    full = [i for b in dm.heldout_real_dataloader() for i in ids_of(b)]
    full_synth = [i for b in dm.heldout_synthetic_dataloader() for i in ids_of(b)]
    shards, synth_shards = [], []
    for rank in range(3):
        dm.trainer = SimpleNamespace(world_size=3, global_rank=rank)
        shards.append([i for b in dm.heldout_real_dataloader() for i in ids_of(b)])
        synth_shards.append([i for b in dm.heldout_synthetic_dataloader() for i in ids_of(b)])
        # Lightning shards the validation loader itself; shard=False gives every rank all of it
        assert [i for b in dm.heldout_real_dataloader(shard=False) for i in ids_of(b)] == full
        assert [i for b in dm.val_dataloader() for i in ids_of(b)] == full
    for parts, whole in ((shards, full), (synth_shards, full_synth)):
        assert sorted(i for p in parts for i in p) == sorted(whole)  # every sample on exactly one rank
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shards[1] == full[1::3]


def test_a_heldout_check_failing_on_one_rank_stops_every_rank(tmp_path):
    proc, _ = launch(tmp_path, "check", timeout=60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    a, b = [json.loads((tmp_path / f"rank{r}.json").read_text())["failures"]["check"] for r in range(2)]
    assert b["outcome"] == "ZeroDivisionError: a held-out check that fails on rank 1 only", b
    assert a["outcome"].startswith("RuntimeError") and "HeldOutRealCheck failed on rank 1" in a["outcome"], a
    assert a["epoch"] == b["epoch"] == 1 and a["seconds"] < 30 and b["seconds"] < 30


if __name__ == "__main__":
    run_rank(Path(sys.argv[1]), sys.argv[2])
