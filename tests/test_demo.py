"""The main job at reduced size: the guard acts on collapse and the guarded fit ends closer to real-only."""
import json

import pytest
import torch

from collapse_guard.cli import main
from collapse_guard.demo import run_demo


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_quick_demo_guard_acts_and_helps(tmp_path, capsys):
    record = run_demo(out=str(tmp_path), quick=True)
    fits = {f["name"]: f for f in record["fits"]}

    # the synthetic generations hurt the unguarded fit on real data it never saw
    assert fits["mixed"]["test_acc"] < fits["real_only"]["test_acc"] - 0.02
    # the guard acted, by injecting reserve data, and the injection shows in the next epoch's real fraction
    events = fits["guarded"]["events"]
    assert events and all(e["action"] == "inject" for e in events)
    assert all(e["reason"] and e["bound"] is not None for e in events)
    first = events[0]["epoch"]
    after = next(r for r in fits["guarded"]["epochs"] if r["epoch"] == first + 1)
    assert after["collapse/real_fraction"] >= 0.45
    assert fits["guarded"]["injections"][0]["samples"] > 0
    assert fits["guarded"]["samples"]["reserve"] > 0 and fits["mixed"]["samples"]["reserve"] == 0
    # and the guarded fit ends closer to real-only on the unseen real test set
    gap_mixed = fits["real_only"]["test_acc"] - fits["mixed"]["test_acc"]
    gap_guarded = fits["real_only"]["test_acc"] - fits["guarded"]["test_acc"]
    assert gap_guarded < gap_mixed
    # the unguarded and guarded fits are identical until the guard acts (same data, same seed)
    for m, g in zip(fits["mixed"]["epochs"][: first + 1], fits["guarded"]["epochs"][: first + 1]):
        assert m["collapse/heldout_real/acc"] == g["collapse/heldout_real/acc"]

    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["fits"][2]["events"] == json.loads(json.dumps(events))  # tuples (an event's rules) as lists
    assert {s["generation"] for s in saved["synthetic"].values()} == set(record["config"]["generations"])
    out = capsys.readouterr().out
    assert "guard events:" in out and "test accuracy below real-only" in out


def test_cli_demo_quick(tmp_path):
    assert main(["demo", "--quick", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "demo.json").exists()
