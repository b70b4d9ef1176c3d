"""CollapseReport and ``collapse-guard report``: the JSON record and its schema, provenance, plots, the HTML page,
re-rendering from JSON alone, fits without a guard or a MixedDataModule, and failures that must not end a fit."""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import matplotlib.figure
import matplotlib.image
import pytest
import torch

from collapse_guard import CollapseGuard, CollapseReport, HeldOutRealCheck, RatioMonitor, Rule, SyntheticSource
from collapse_guard.cli import main
from collapse_guard.report import ReportWarning, load_record
from collapse_guard.report.plots import EVENT_GID, event_markers, figure_indicators, figure_real_fraction
from collapse_guard.report.record import as_float, jsonable

from cg_testing import SYNTH_BASE, RealDM, TinyMLP, id_dataset, make_mixed, make_trainer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPORT_KEYS = {"schema_version", "kind", "created", "status", "error", "run", "ratio", "indicators", "guards",
               "injections", "provenance", "final", "reference",
               "source_indicators"}
RUN_KEYS = {"current_epoch", "global_step", "max_epochs", "world_size", "should_stop", "dirpath"}
RATIO_ROW_KEYS = {"epoch", "real_fraction", "real_fraction_cumulative", "real_fraction_target", "samples", "shares"}
GUARD_KEYS = {"state", "injections", "cooldown_left", "config", "rules", "events", "checks"}
RULE_KEYS = {"name", "monitor", "mode", "threshold", "relative", "sigmas", "stderr", "baseline", "baseline_checks",
             "min_change", "min_delta", "patience", "action", "non_finite", "noise", "state", "baseline_value", "bound"}
EVENT_KEYS = {"epoch", "global_step", "rule", "monitor", "value", "threshold", "action", "reason", "rules"}
FINAL_KEYS = {"epoch", "global_step", "real_fraction", "real_fraction_cumulative", "guard_state", "events",
              "stopped_by_guard", "metrics", "guard_health"}
PROVENANCE_KEYS = {"schema_version", "kind", "seed", "samples_total", "real_share", "sources", "heldout",
                   "injections", "contamination"}
SOURCE_KEYS = {"name", "kind", "generator", "generation", "params", "size", "training_pool", "samples", "share",
               "heldout_copies"}
FILES = ["report.json", "provenance.json", "real_fraction.png", "indicators.png", "indicators_other.png", "report.html"]


def strict_json(path: Path) -> dict:
    """Parse ``path`` as strict JSON (NaN and Infinity are not JSON)."""
    def no_constants(name):
        raise ValueError(f"{path.name} holds the non-JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_constants)


def guarded_dm():
    dm = make_mixed(real_fraction=0.5, synth_sizes={})
    dm.synthetic = {  # provenance as a user gives it, and a source without any
        "g1": SyntheticSource(id_dataset(60, SYNTH_BASE, label=0), generator="GMM(k=2)", generation=3,
                              params={"temperature": 0.7, "mix": torch.tensor([0.5, 0.5])}),
        "g2": id_dataset(40, 2 * SYNTH_BASE, label=0),
    }
    return dm


@pytest.fixture(scope="module")
def guarded_run(tmp_path_factory):
    """One fit whose guard injects twice then stops (a rule no model can satisfy), with a report."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("guarded") / "report"
    dm = guarded_dm()
    guard = CollapseGuard(
        rules=[Rule("collapse/heldout_real/acc", threshold=1.01, name="acc_floor"),
               Rule("collapse/heldout_real/worst_class_recall", relative=0.5, patience=2),
               Rule("collapse/heldout_real/acc", sigmas=50.0, min_change=0.05, patience=2, name="acc_noise")],  # never fires
        action="inject", verbose=False,
    )
    ratio, check, report = RatioMonitor(), HeldOutRealCheck(), CollapseReport(dirpath=out, summary=False)
    trainer = make_trainer(max_epochs=8, callbacks=[report, ratio, check, guard])
    trainer.fit(TinyMLP(), datamodule=dm)
    return SimpleNamespace(out=out, dm=dm, guard=guard, ratio=ratio, check=check, report=report, trainer=trainer)


def test_report_files_follow_the_documented_schema(guarded_run):
    run = guarded_run
    assert run.report.result.ok and run.report.dirpath == run.out
    for name in FILES:
        assert (run.out / name).is_file(), name
    record = strict_json(run.out / "report.json")
    assert record == run.report.record
    assert set(record) == REPORT_KEYS
    assert (record["schema_version"], record["kind"], record["status"], record["error"]) == (
        1, "collapse_guard.report", "completed", None)
    assert set(record["run"]) == RUN_KEYS and record["run"]["dirpath"] == str(run.out)

    # ratio history per epoch and source: the RatioMonitor's, with shares that sum to 1
    ratio = record["ratio"]
    assert ratio["sources"] == ["real", "reserve", "g1", "g2"]
    assert len(ratio["history"]) == len(run.ratio.history) > 0
    for row, mine in zip(ratio["history"], run.ratio.history):
        assert set(row) == RATIO_ROW_KEYS
        assert row["samples"] == mine["samples"] and row["real_fraction"] == pytest.approx(mine["real_fraction"])
        assert sum(row["shares"].values()) == pytest.approx(1.0)

    # indicators per check: the HeldOutRealCheck's history
    indicators = record["indicators"]
    assert indicators["every_n_epochs"] == 1
    assert [r["epoch"] for r in indicators["history"]] == [r["epoch"] for r in run.check.history]
    assert "collapse/heldout_real/acc" in indicators["keys"]
    assert indicators["history"][-1]["collapse/heldout_real/acc"] == pytest.approx(
        run.check.history[-1]["collapse/heldout_real/acc"])

    # the guard: rules with their state, baseline and bound; events with reasons; final state
    (guard,) = record["guards"]
    assert set(guard) == GUARD_KEYS and guard["state"] == run.guard.state == "stop"
    assert guard["injections"] == 2 and guard["config"]["action"] == "inject"
    for rule, state in zip(guard["rules"], run.guard.states):
        assert set(rule) == RULE_KEYS
        assert rule["state"] == state.state_dict()
        assert rule["baseline_value"] == state.baseline() and rule["bound"] == state.bound(state.last_stderr)
    assert guard["rules"][0]["name"] == "acc_floor" and guard["rules"][1]["relative"] == 0.5
    # a sigmas rule: its bound is measured in the standard error of its last check
    noise = guard["rules"][2]
    assert noise["sigmas"] == 50.0 and noise["stderr"] == "collapse/heldout_real/acc_stderr"
    assert noise["state"]["last_stderr"] == pytest.approx(run.check.history[-1]["collapse/heldout_real/acc_stderr"])
    assert noise["bound"] == pytest.approx(noise["baseline_value"] - 50.0 * noise["state"]["last_stderr"])
    # schema 1 writes an event's bound (the bound in force) under its published name, threshold
    assert guard["events"] == [{("threshold" if k == "bound" else k): list(v) if isinstance(v, tuple) else v
                                for k, v in dataclasses.asdict(e).items()} for e in run.guard.events]
    assert [e["action"] for e in guard["events"]] == ["inject", "inject", "stop"]
    for event in guard["events"]:
        assert set(event) - {"sources"} == EVENT_KEYS and not event.get("sources") and "bound 1.0100" in event["reason"]
    assert [i["samples"] for i in record["injections"]] == [i["samples"] for i in run.dm.injections]

    final = record["final"]
    assert set(final) == FINAL_KEYS
    assert final["guard_state"] == "stop" and final["stopped_by_guard"] and final["events"] == 3
    assert final["epoch"] == run.ratio.history[-1]["epoch"]
    assert final["metrics"]["collapse/guard/state"] == 3.0


def test_provenance_shares_sum_to_one_and_match_the_counts(guarded_run):
    dm = guarded_run.dm
    manifest = strict_json(guarded_run.out / "provenance.json")
    assert manifest == guarded_run.report.record["provenance"]
    assert set(manifest) == PROVENANCE_KEYS and manifest["kind"] == "collapse_guard.provenance"
    sources = manifest["sources"]
    assert [s["name"] for s in sources] == list(dm.samples_by_source())
    counts = list(dm.samples_by_source().values())
    assert [s["samples"] for s in sources] == counts and manifest["samples_total"] == sum(counts)
    assert sum(s["share"] for s in sources) == pytest.approx(1.0)
    for s, n in zip(sources, counts):
        assert set(s) == SOURCE_KEYS and s["share"] == pytest.approx(n / sum(counts))
    real, reserve, g1, g2 = sources
    assert (real["kind"], reserve["kind"], real["generation"]) == ("real", "real", 0)
    assert reserve["samples"] > 0  # the guard injected reserve data
    assert manifest["real_share"] == pytest.approx((counts[0] + counts[1]) / sum(counts))
    # provenance as the user gave it
    assert (g1["kind"], g1["generator"], g1["generation"]) == ("synthetic", "GMM(k=2)", 3)
    assert g1["params"] == {"temperature": 0.7, "mix": [0.5, 0.5]}
    assert (g2["generator"], g2["generation"], g2["params"]) == (None, None, {})
    assert g1["size"] == 60 and g1["training_pool"] == len(dm.mixer.synthetic_pools[0])
    assert manifest["heldout"]["real"] == len(dm.heldout_real)


def test_html_page_is_self_contained(guarded_run):
    page = (guarded_run.out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(images) == 3
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    for text in ("acc_floor", "GMM(k=2)", "collapse/heldout_real/acc", "inject", "stop", "50 standard errors from best",
                 "at least 0.05 from it"):
        assert text in page
    assert page.count("<table>") >= 4


def test_plots_are_valid_pngs(guarded_run):
    for name in ("real_fraction.png", "indicators.png", "indicators_other.png"):
        path = guarded_run.out / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 600


def _event_lines(fig) -> set:
    """x of every vertical guard-event line of ``fig``."""
    return {line.get_xdata()[0] for ax in fig.axes for line in ax.get_lines()
            if line.get_gid() == EVENT_GID and line.get_linestyle() == "--"}


def test_guard_events_are_in_the_plot_data_and_marked(guarded_run):
    record = load_record(guarded_run.out)
    events = [dataclasses.asdict(e) for e in guarded_run.guard.events]
    markers = event_markers(record)
    assert [(m["epoch"], m["action"], m["rule"]) for m in markers] == [(e["epoch"], e["action"], e["rule"]) for e in events]
    assert [m["value"] for m in markers] == pytest.approx([e["value"] for e in events])

    epochs = {e["epoch"] for e in events}
    assert _event_lines(figure_real_fraction(record)) == epochs
    fig = figure_indicators(record)
    assert _event_lines(fig) == epochs
    # the values on which a rule fired and the guard acted are crosses in the monitored indicator's panel (the
    # first: acc_floor fires at every check; in a cooldown its cross is grey and not an event's)
    crosses = [(line.get_xdata()[0], line.get_ydata()[0]) for line in fig.axes[0].get_lines()
               if line.get_gid() == EVENT_GID and line.get_marker() == "X"]
    assert "heldout_real/acc" in fig.axes[0].get_title(loc="left")
    acc_events = [e for e in events if e["monitor"] == "collapse/heldout_real/acc"]
    assert [x for x, _ in crosses] == [e["epoch"] for e in acc_events]
    assert [y for _, y in crosses] == pytest.approx([e["value"] for e in acc_events])  # flat: newer pytest refuses nested


def test_cli_report_rerenders_from_the_json_alone(guarded_run, tmp_path, capsys):
    run_dir = tmp_path / "copy" / "collapse_report"
    run_dir.mkdir(parents=True)
    shutil.copy(guarded_run.out / "report.json", run_dir / "report.json")  # nothing else
    assert main(["report", str(run_dir.parent)]) == 0  # the run's root folder works too
    for name in FILES:
        assert (run_dir / name).is_file(), name
    assert (run_dir / "provenance.json").read_text() == (guarded_run.out / "provenance.json").read_text()
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "acc_floor" in page
    out = capsys.readouterr().out
    assert "Training data" in out and "Guard events" in out and "acc_floor" in out

    # into another folder, page only, no summary: no plot is drawn or embedded
    other = tmp_path / "html_only"
    assert main(["report", str(run_dir / "report.json"), "--out", str(other), "--no-plots", "--no-summary"]) == 0
    assert sorted(p.name for p in other.iterdir()) == ["provenance.json", "report.html"]
    assert "data:image/png" not in (other / "report.html").read_text() and capsys.readouterr().out == ""


def test_cli_report_without_a_report(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no collapse report" in capsys.readouterr().err
    (tmp_path / "report.json").write_text(json.dumps({"kind": "something else"}))
    assert main(["report", str(tmp_path)]) == 2
    assert "not a collapse_guard report" in capsys.readouterr().err


def test_report_without_a_guard_in_the_default_folder(tmp_path, capsys):
    report = CollapseReport()
    trainer = make_trainer(max_epochs=2, callbacks=[RatioMonitor(), HeldOutRealCheck(features=False), report],
                           default_root_dir=tmp_path)
    trainer.fit(TinyMLP(), datamodule=make_mixed())
    folder = tmp_path / "collapse_report"
    assert report.dirpath == folder and report.result.ok
    assert all((folder / n).is_file() for n in FILES if n != "indicators_other.png")
    assert not (folder / "indicators_other.png").exists()  # no rule: indicators.png holds every indicator
    record = strict_json(folder / "report.json")
    assert record["guards"] == [] and record["final"]["guard_state"] is None
    assert not record["final"]["stopped_by_guard"] and record["final"]["events"] == 0
    assert len(record["ratio"]["history"]) == 2 and len(record["indicators"]["history"]) == 2
    assert "No CollapseGuard in this fit" in (folder / "report.html").read_text()
    out = capsys.readouterr().out  # the rich summary, on rank zero
    assert "collapse_guard report" in out and "Training data" in out and "Guard rules" not in out


def test_report_without_any_collapse_guard_callback_or_mixed_data(tmp_path):
    report = CollapseReport(dirpath=tmp_path, summary=False)
    trainer = make_trainer(max_epochs=1, callbacks=[report])
    trainer.fit(TinyMLP(), datamodule=RealDM())
    record = strict_json(tmp_path / "report.json")
    assert (record["ratio"], record["indicators"], record["provenance"], record["guards"]) == (None, None, None, [])
    assert report.result.ok and (tmp_path / "report.html").is_file()
    assert not (tmp_path / "provenance.json").exists() and not (tmp_path / "indicators.png").exists()


def test_a_plotting_failure_warns_and_the_fit_keeps_its_checkpoint(tmp_path, monkeypatch):
    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("no fonts on this machine")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    report = CollapseReport(dirpath=tmp_path / "report", summary=False)
    trainer = make_trainer(max_epochs=2, callbacks=[RatioMonitor(), HeldOutRealCheck(), report],
                           default_root_dir=tmp_path, enable_checkpointing=True)
    with pytest.warns(ReportWarning, match="no fonts on this machine"):
        trainer.fit(TinyMLP(), datamodule=make_mixed())
    assert trainer.state.finished and trainer.current_epoch == 2
    assert list(tmp_path.glob("**/checkpoints/*.ckpt"))  # the checkpoint is untouched
    assert set(report.result.errors) == {"real_fraction plot", "indicators plot"}  # no guard: no other-indicators plot
    folder = tmp_path / "report"
    assert strict_json(folder / "report.json")["status"] == "completed"
    assert (folder / "provenance.json").is_file() and not list(folder.glob("*.png"))
    page = (folder / "report.html").read_text()
    assert "data:image/png" not in page and "no plot" in page


class FailsAtEpoch2(TinyMLP):
    def training_step(self, batch, batch_idx):
        if self.current_epoch == 2:
            raise RuntimeError("loss exploded")
        return super().training_step(batch, batch_idx)


def test_a_failed_fit_writes_what_it_has(tmp_path):
    report = CollapseReport(dirpath=tmp_path, summary=False, plots=False)
    trainer = make_trainer(max_epochs=4, callbacks=[RatioMonitor(), HeldOutRealCheck(), report])
    with pytest.raises(RuntimeError, match="loss exploded"):
        trainer.fit(FailsAtEpoch2(), datamodule=make_mixed())
    record = strict_json(tmp_path / "report.json")
    assert record["status"] == "failed" and record["error"] == "RuntimeError: loss exploded"
    assert [r["epoch"] for r in record["ratio"]["history"]] == [0, 1]
    assert sum(s["share"] for s in record["provenance"]["sources"]) == pytest.approx(1.0)
    assert (tmp_path / "report.html").is_file() and not (tmp_path / "real_fraction.png").exists()


def test_an_interrupt_before_set_up_is_recorded_in_the_default_folder(tmp_path):
    trainer = SimpleNamespace(is_global_zero=True, callbacks=[], datamodule=None, default_root_dir=str(tmp_path),
                              current_epoch=0, global_step=0, callback_metrics={}, fast_dev_run=False, loggers=[])
    report = CollapseReport(summary=False, plots=False)
    report.on_exception(trainer, None, KeyboardInterrupt())
    record = strict_json(tmp_path / "collapse_report" / "report.json")
    assert record["status"] == "interrupted" and record["error"].startswith("KeyboardInterrupt")


def test_only_global_rank_zero_writes(tmp_path):
    report = CollapseReport(dirpath=tmp_path)
    assert report.write(SimpleNamespace(is_global_zero=False)) is None
    assert list(tmp_path.iterdir()) == []


def test_non_finite_values_are_strict_json_and_read_back():
    data = jsonable({"a": math.nan, "b": math.inf, "c": -math.inf, 1: torch.tensor(2.5), "big": torch.zeros(100)})
    assert data == {"a": "nan", "b": "inf", "c": "-inf", "1": 2.5, "big": "<Tensor shape=(100,) dtype=torch.float32>"}
    json.dumps(data, allow_nan=False)
    assert math.isnan(as_float("nan")) and as_float("-inf") == -math.inf and math.isnan(as_float(None))


def test_bad_on_error_is_rejected():
    with pytest.raises(ValueError, match="on_error"):
        CollapseReport(on_error="ignore")


def test_fast_dev_run_writes_no_report(tmp_path):
    """As Lightning writes no logs or checkpoints under ``fast_dev_run``."""
    report = CollapseReport(dirpath=tmp_path / "report")
    trainer = make_trainer(max_epochs=3, callbacks=[RatioMonitor(), HeldOutRealCheck(), report], fast_dev_run=True,
                           default_root_dir=tmp_path)
    trainer.fit(TinyMLP(), datamodule=make_mixed())
    assert trainer.global_step == 1 and report.record is None and not (tmp_path / "report").exists()
