"""Smoke tests of the issue-15 benchmarks (language models and regression): the smallest configuration of
``benchmarks/suite_tasks.py`` runs with collapse_guard's defaults observing and records the new indicators per
epoch; the choice on its development runs; the generators behave as their scenarios say; the cost variant's
smallest configuration.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from test_benchmarks_smoke import _keep_threads, _load  # noqa: F401 (the autouse fixture restores torch's threads)

LM_KEYS = ("loss", "loss_stderr", "perplexity", "token_acc", "token_acc_stderr", "entropy")
REGRESSION_KEYS = ("loss", "loss_stderr", "mse", "mae", "r2", "pred_var_ratio", "residual_tail_mass")


def test_suite_tasks_smallest_configuration_records_the_new_indicators(tmp_path, capsys):
    suite_tasks = _load("suite_tasks")
    out = tmp_path / "suite_tasks.json"
    record = suite_tasks.main(["--quick", "--datasets", "pydoc,diabetes", "--epochs", "3",
                               "--samples-per-epoch", "128", "--scenarios", "pure_real,replace,label_chain",
                               "--json", str(out)])
    printed = capsys.readouterr().out
    assert out.exists()
    assert [(r["task"], r["kind"], r["scenario"], r["seed"]) for r in record["runs"]] == [
        ("pydoc", "language_model", "pure_real", 0), ("pydoc", "language_model", "replace", 0),
        ("diabetes", "regression", "pure_real", 0), ("diabetes", "regression", "label_chain", 0)]
    for run in record["runs"]:
        assert suite_tasks.part(run) == "development" and len(run["trajectory"]) == 3
        keys = LM_KEYS if run["kind"] == "language_model" else REGRESSION_KEYS
        for row in run["trajectory"]:
            for key in ("test_loss", "test_loss_se", *(f"collapse/heldout_real/{k}" for k in keys)):
                assert math.isfinite(row[key]), (run["scenario"], key)
        if run["scenario"] != "pure_real":  # the held-out synthetic data and the gap
            assert "collapse/gap/loss" in run["trajectory"][-1]
        assert run["onset"] is None or 1 <= run["onset"] < 3
    lm = record["runs"][0]["trajectory"][-1]
    assert lm["collapse/heldout_real/perplexity"] == pytest.approx(math.exp(lm["collapse/heldout_real/loss"]), rel=1e-4)
    # the live guard ran each task's default rules, and their replay gives its first firings
    for kind in ("language_model", "regression"):
        assert record["scores"][kind]["mismatches"] == []
        assert record["scores"][kind]["parts"]["development"]["summary"]["runs"] == 2
    assert "### language_model" in printed and "### regression" in printed
    rescored = suite_tasks.main(["--score-from", str(out)])
    assert rescored["scores"]["regression"]["parts"] == json.loads(json.dumps(record["scores"]["regression"]["parts"]))
    choose = _load("choose_task_defaults")
    result = choose.main([str(out), "--top", "2", "--json", ""])
    for kind in ("language_model", "regression"):
        assert result[kind]["runs"] == 2 and result[kind]["chosen"]["pure_real_fired"] == 0


def test_generators_do_what_their_scenarios_say():
    tasks = _load("_tasks")
    data = tasks.TextData("pydoc", 0)
    assert data.windows["val"].shape == (tasks.HELDOUT_WINDOWS, tasks.WINDOW + 1)
    train = {w.tobytes() for w in data.windows["train"]}
    assert not any(w.tobytes() in train for k in ("val", "test") for w in data.windows[k])  # no leak
    rng = np.random.default_rng(0)

    def distinct_4grams(temperature: float) -> int:
        x, _ = tasks.CharNGram(5, temperature).fit(*data.train).sample(200, rng)
        return len({tuple(row[i:i + 4]) for row in x for i in range(len(row) - 3)})

    assert distinct_4grams(0.2) < 0.5 * distinct_4grams(1.0)  # low temperature: degenerate text
    table = tasks.TableData("diabetes", 0)
    gauss = tasks.JointGaussian(0.5).fit(*table.train)
    x, y = gauss.sample(2000, rng)
    assert np.var(y) == pytest.approx(0.25 * np.var(table.train[1]), rel=0.2)
    chain = tasks.label_chain(*table.train, generations=30, seed=0)
    drift = [float(np.mean((y_g - table.train[1]) ** 2)) for _, y_g in chain]
    assert drift[-1] > drift[0]  # the ridge chain's targets wander off the real ones


def test_cost_language_model_smallest_configuration(tmp_path, capsys):
    cost = _load("cost")
    out = tmp_path / "cost_lm.json"
    result = cost.main(["--task", "language_model", "--lm-samples", "128", "--lm-synthetic", "300", "--epochs", "1",
                        "--repeats", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert out.exists() and set(result["fits"]) == {"guarded", "mixed"}
    fits = result["fits"]
    cpu = {v: fits[v][0]["cpu_seconds"] + fits[v][1]["cpu_seconds"] for v in fits}
    assert result["fit_ratios"]["guarded/mixed"]["cpu"]["all"][0] == pytest.approx(cpu["guarded"] / cpu["mixed"])
    assert "HeldOutRealCheck (total)" in result["breakdown"]
    assert "language-model indicators: compute" in result["breakdown"]
    assert "| fit, RatioMonitor + HeldOutRealCheck + CollapseGuard (defaults, task inferred)" in printed
    assert cost.attributable(fits) > 1.0 and "(attributable)" in printed  # the checks cost CPU outside the epochs
