"""Smoke tests of the benchmark scripts: their smallest configuration runs and yields the documented structure.

Benchmarks print figures; they are not tests of the figures. The detection script's drift alternative needs the
``bench`` extra (torchdrift): its smoke test is skipped without it.
"""
from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_detection_smallest_configuration(tmp_path, capsys):
    pytest.importorskip("torchdrift")
    detection = _load("detection")
    out = tmp_path / "detection.json"
    result = detection.main(["--scenarios", "mode_loss,pure_real", "--seeds", "0", "--epochs", "5",
                             "--permutations", "20", "--json", str(out)])
    printed = capsys.readouterr().out
    assert out.exists()
    assert result["drift_backend"] == "torchdrift"
    assert [(r["scenario"], r["seed"]) for r in result["runs"]] == [("mode_loss", 0), ("pure_real", 0)]
    for run in result["runs"]:
        assert set(run["fired"]) == set(detection.DETECTORS)
        assert len(run["trajectory"]) == 5
        row = run["trajectory"][-1]
        for key in ("test_acc", "heldout_real_loss", "mixed_val_loss", "p_inputs", "p_features",
                    "collapse/heldout_real/acc"):
            assert math.isfinite(row[key]), key
        assert 0.0 <= row["p_inputs"] <= 1.0
        assert run["onset"] is None or 1 <= run["onset"] < 5
    scores = result["scores"]
    assert scores["collapsed_runs"] + scores["healthy_runs"] == 2
    assert list(scores["detectors"]) == list(detection.DETECTORS)
    for name, d in scores["detectors"].items():
        assert {"detected", "false_alarms", "warmup_fires", "median_delay"} <= set(d)
        assert ("vs_guard" in d) == (name != "collapse_guard")
    for run in result["runs"]:  # which held-out samples were right at each check, for paired replays
        assert all(len(row["heldout_correct"]) == 360 and set(row["heldout_correct"]) <= {"0", "1"}
                   for row in run["trajectory"])
    # the rule replay reproduces what the guard decided when it replays the default rules
    replay = _load("replay_rules")
    for run in result["runs"]:
        fired = [e for e in replay.fires(run["trajectory"], "sigmas", 2.0, 0.0, 2) if e is not None]
        assert (min(fired) if fired else None) == run["fired"]["collapse_guard"]
    table = replay.main([str(out), "--groups", "0-0"])["table"]
    default = next(t for t in table if (t["shape"], t["s"], t["d"], t["patience"]) == ("sigmas", 2.0, 0.0, 2))
    guard = scores["detectors"]["collapse_guard"]
    assert default["all"][0] == guard["detected"] and default["all"][2] == guard["false_alarms"]
    [mitigation] = result["mitigation"]
    assert mitigation["scenario"] == "mode_loss"
    for key in ("real_only", "mixed", "guarded", "real_share_guarded"):
        assert 0.0 <= mitigation[key] <= 1.0
    assert "| detector | collapses detected |" in printed and "| scenario | real only |" in printed


def test_ground_truth_needs_a_lasting_fall():
    detection = _load("detection")
    assert detection.ground_truth([0.90, 0.95, 0.96, 0.93, 0.96, 0.96], 0.02) is None  # a dip that recovers
    assert detection.ground_truth([0.90, 0.95, 0.96, 0.93, 0.92, 0.91], 0.02) == 3
    assert detection.ground_truth([0.90, 0.95, 0.96, 0.95, 0.95], 0.02) is None


def test_digits_heldout_option_moves_training_digits_and_keeps_the_test_set():
    common = _load("_common")
    base, larger = common.digits_splits(3), common.digits_splits(3, heldout=540)
    assert [len(base[k][0]) for k in ("train", "val", "test")] == [900, 360, 537]
    assert [len(larger[k][0]) for k in ("train", "val", "test")] == [720, 540, 537]
    for k in (0, 1):
        assert (larger["test"][k] == base["test"][k]).all()
        assert (larger["val"][k][:360] == base["val"][k]).all()
        assert (larger["val"][k][360:] == base["train"][k][:180]).all()
        assert (larger["train"][k] == base["train"][k][180:]).all()
    with pytest.raises(ValueError, match="heldout"):
        common.digits_splits(3, heldout=900)


def test_own_mmd_permutation_test_separates_shifted_samples():
    detection = _load("detection")
    g = torch.Generator().manual_seed(0)
    ref, same, shifted = (torch.randn(100, 8, generator=g) for _ in range(3))
    assert detection.mmd_p_value(ref, shifted + 1.0, 50, seed=0, backend="ours") < 0.05
    assert detection.mmd_p_value(ref, same, 50, seed=0, backend="ours") > 0.05


def test_cost_smallest_configuration(tmp_path, capsys):
    cost = _load("cost")
    out = tmp_path / "cost.json"
    result = cost.main(["--synthetic", "1000", "--epochs", "1", "--repeats", "1", "--loader-repeats", "1",
                        "--json", str(out)])
    printed = capsys.readouterr().out
    assert out.exists()
    assert set(result["fit_ratios"]) == {"guarded/mixed", "guarded_features/mixed", "mixed/plain", "guarded/plain"}
    for ratio in result["fit_ratios"].values():
        for clock in ("cpu", "wall"):
            assert ratio[clock]["median"] > 0 and len(ratio[clock]["all"]) == 1
    # palindromic order: every variant ran twice, and a repetition's ratio is the ratio of the two fits' sums
    fits = result["fits"]
    assert all(len(f) == 2 for f in fits.values())
    cpu = {v: fits[v][0]["cpu_seconds"] + fits[v][1]["cpu_seconds"] for v in ("guarded", "mixed")}
    assert result["fit_ratios"]["guarded/mixed"]["cpu"]["all"][0] == pytest.approx(cpu["guarded"] / cpu["mixed"])
    loader = result["loader"]
    assert loader["batches"]["mixed"] == result["config"]["batches_per_epoch"]
    assert loader["ratio_mixed_vs_plain"]["cpu"]["median"] > 0
    assert "HeldOutRealCheck (total)" in result["breakdown"]
    assert "CollapseGuard" in result["breakdown"] and "RatioMonitor" in result["breakdown"]
    # the defaults run no feature pass; the opt-in variant's breakdown shows it
    assert "training-synthetic feature pass" not in result["breakdown"]
    assert "training-synthetic feature pass" in result["breakdown_features"]
    assert "HeldOutRealCheck(features=True) (opt-in)" in printed
    assert result["machine"]["nproc"] >= 1
    assert "| fit, RatioMonitor + HeldOutRealCheck + CollapseGuard (defaults)" in printed


def test_suite_smallest_configuration_and_choice(tmp_path, capsys):
    suite = _load("suite")
    choose = _load("choose_defaults")
    out = tmp_path / "suite.json"
    record = suite.main(["--quick", "--datasets", "wine", "--epochs", "3", "--json", str(out)])
    printed = capsys.readouterr().out
    assert out.exists()
    assert [(r["task"], r["scenario"], r["seed"]) for r in record["runs"]] == [
        ("wine", s, 0) for s in ("pure_real", "good_generator", "accumulate", "mode_loss", "label_noise", "offset",
                                 "replace")]
    for run in record["runs"]:
        assert len(run["trajectory"]) == 3 and suite.part(run) == "seen"  # round 1's untouched part (round 2)
        row = run["trajectory"][-1]
        for key in ("test_acc", "collapse/heldout_real/acc", "collapse/heldout_real/class_recall/2",
                    "collapse/heldout_real/class_recall_stderr/2"):
            assert math.isfinite(row[key]), key
    scores = record["scores"]
    assert scores["mismatches"] == []  # the replay of the default rules gives the live guard's first firings
    assert scores["parts"]["seen"]["summary"]["runs"] == 7 and scores["parts"]["development"]["summary"]["runs"] == 0
    assert "| part | caught / collapsed |" in printed
    rescored = suite.main(["--score-from", str(out)])
    assert rescored["scores"]["parts"] == json.loads(json.dumps(scores["parts"]))
    # the choice refuses a record without development runs, and scores only those it has
    with pytest.raises(SystemExit):
        choose.main([str(out), "--json", ""])
    for run in record["runs"]:
        run["task"] = "digits"
    (tmp_path / "dev.json").write_text(json.dumps(record, default=float))
    result = choose.main([str(tmp_path / "dev.json"), "--top", "3", "--json", ""])
    assert result["development_runs"] == 7 and len(result["top"]) >= 1
    assert result["chosen"]["pure_real_fired"] == 0 and result["chosen"]["false_alarms"] == 0
    from collapse_guard import default_rules
    from collapse_guard.callbacks.rules import Rule, heldout_loss_rule

    for rule in default_rules():  # the chosen rules are printed as code that builds them
        assert eval(choose.rule_code(rule), {"Rule": Rule, "heldout_loss_rule": heldout_loss_rule}) == rule


def test_multi_source_smallest_configuration(tmp_path, capsys):
    detection = _load("detection")
    multisource = _load("_multisource")
    out = tmp_path / "multisource.json"
    record = detection.main(["--multi-source", "--datasets", "wine", "--seeds", "0", "--epochs", "2",
                             "--mixes", "mode_loss,good2,real_only", "--json", str(out)])
    printed = capsys.readouterr().out
    assert out.exists() and json.loads(out.read_text())["scenarios"] == ["mode_loss", "good2", "real_only"]
    runs = record["runs"]
    assert [(r["dataset"], r["scenario"], r["seed"]) for r in runs] == [
        ("wine", s, 0) for s in ("mode_loss", "good2", "real_only")]
    mode_loss, control, real_only = runs
    assert mode_loss["sources"] == ["good", "mode_loss"] and control["sources"] == ["good", "good2"]
    assert mode_loss["harmful"] == "mode_loss" and control["harmful"] is None
    assert mode_loss["audit_missing"]["mode_loss"] and not mode_loss["audit_missing"]["good"]  # flagged at set-up
    for run in (mode_loss, control):
        assert len(run["trajectory"]) == 2 and run["real_only_acc"] == real_only["final_test_acc"]
        assert 0.0 < run["synthetic_share"] < 1.0 and sum(run["last_epoch_shares"].values()) == pytest.approx(1.0)
        assert set(run["named"]) <= set(run["sources"]) and math.isfinite(run["final_test_acc"])
        assert any(k.startswith("collapse/source/acc_gap/") for k in run["trajectory"][-1])
    assert record["scores"]["parts"]["development"]["summary"]["two_source_runs"] == 2
    assert multisource.part("iris", 0) == "untouched" and multisource.part("text", 1) == "development"
    assert multisource.member_source("collapse/source/acc_gap/good2", ["good", "good2"]) == "good2"
    assert "| part | harmful named |" in printed
