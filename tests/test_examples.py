"""The integration examples a user copies from run, each with its one command (small sizes here)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cg_testing import EXAMPLES, load_example


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


load = load_example


def test_wrap_datamodule(tmp_path, capsys):
    result = load("wrap_datamodule").main(quick=True, out=str(tmp_path))
    out = capsys.readouterr().out
    assert "held-out acc" in out and "test accuracy on unseen real digits" in out
    assert set(result["test"]) == {"real only", "mixed + guard"} and all(0.5 < v <= 1 for v in result["test"].values())
    assert sum(result["counts"]) > 0
    assert json.loads((tmp_path / "collapse_report" / "report.json").read_text())["status"] == "completed"


def test_hf_datasets(capsys):
    results = load("hf_datasets").main(quick=True)
    assert set(results) == {"separate", "stream", "provenance_column"}
    for row in results.values():
        assert row["last_epoch_shares"]["real"] == pytest.approx(0.3, abs=0.01)
        assert 0.5 < row["test_acc"] <= 1
    assert results["stream"]["samples"]["gen2"] == results["stream"]["samples"]["gen10_stream"]
    assert "provenance column" in capsys.readouterr().out


def test_lightning_cli_one_command(tmp_path):
    """``cd integration_examples/lightning_cli && python main.py fit --config config.yaml`` (one epoch here)."""
    cmd = [sys.executable, "main.py", "fit", "--config", "config.yaml", "--trainer.max_epochs=1",
           f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}",
           "--trainer.enable_progress_bar=false", "--data.init_args.synthetic.gen20.init_args.generation=3"]
    done = subprocess.run(cmd, cwd=EXAMPLES / "lightning_cli", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = list(tmp_path.glob("lightning_logs/version_*/collapse_report/report.json"))
    assert len(reports) == 1
    record = json.loads(reports[0].read_text())
    assert [s["name"] for s in record["provenance"]["sources"]] == ["real", "reserve", "gen10", "gen20"]
    assert record["status"] == "completed" and len(record["indicators"]["history"]) == 1
