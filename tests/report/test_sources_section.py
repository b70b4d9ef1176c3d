"""The report's "Synthetic sources" section (issue 17): each source's share over training, its own indicators at the
last check and their trend (``SourceCheck``), the audit before training (``SourceAudit``) and the quarantines; left out
of a run without synthetic sources."""
from __future__ import annotations

import copy
import io
import json

import pytest
import torch
from rich.console import Console
from torch.utils.data import TensorDataset

from collapse_guard import CollapseReport, MixedDataModule, RatioMonitor
from collapse_guard._compat import Callback
from collapse_guard.callbacks.source_audit import SourceAudit
from collapse_guard.callbacks.source_check import SourceCheck
from collapse_guard.report import load_record
from collapse_guard.report.html import render_html
from collapse_guard.report.record import check_record
from collapse_guard.report.sources import has_section, indicator_keys, source_tables, synthetic_sources
from collapse_guard.report.summary import plain_summary, print_summary

from cg_testing import REAL_BASE, SYNTH_BASE, TinyMLP, id_dataset, make_mixed, make_trainer

QUARANTINE_EPOCH = 1


class QuarantineAt(Callback):
    """Quarantines ``wrong`` at the end of epoch :data:`QUARANTINE_EPOCH` (as a guard's quarantine does)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == QUARANTINE_EPOCH:
            trainer.datamodule.quarantine("wrong", reason="its labels disagree with its inputs")


def two_sources() -> MixedDataModule:
    x, y = id_dataset(120, 2 * SYNTH_BASE, seed=4).tensors
    return MixedDataModule(id_dataset(160, REAL_BASE), {"good": id_dataset(120, SYNTH_BASE, seed=3),
                                                        "wrong": TensorDataset(x, (y + 1) % 3)},
                           real_fraction=0.5, holdout=0.25, batch_size=16, samples_per_epoch=64,
                           synthetic_holdout=0.25)


def fit(tmp_path, dm, *callbacks, report_first: bool = True, epochs: int = 3):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    report = CollapseReport(dirpath=tmp_path / "report", summary=False, plots=False, on_error="raise")
    callbacks = [report, *callbacks] if report_first else [*callbacks, report]
    make_trainer(max_epochs=epochs, callbacks=callbacks).fit(TinyMLP(), datamodule=dm)
    return report


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 3-epoch fit on real data and two synthetic sources (``wrong``: every label wrong), with a RatioMonitor, a
    SourceAudit, a SourceCheck and ``wrong`` quarantined at the end of epoch 1."""
    tmp_path = tmp_path_factory.mktemp("sources")
    report = fit(tmp_path, two_sources(), RatioMonitor(), SourceAudit(max_samples=40),
                 SourceCheck(samples=16, batches=2), QuarantineAt())
    return report


def test_the_record_keeps_every_check_audit_and_quarantine(written):
    record = load_record(written.dirpath)
    check_record(record)
    checks = record["source_indicators"]
    assert [row["epoch"] for row in checks["history"]] == [0, 1, 2]
    assert {"collapse/source/acc_gap/good", "collapse/source/grad_cosine/wrong"} <= set(checks["keys"])
    assert set(indicator_keys(record)) == {"good", "wrong"} and synthetic_sources(record) == ["good", "wrong"]
    provenance = record["provenance"]
    assert set(provenance["audit"]["sources"]) == {"good", "wrong"}
    (quarantine,) = provenance["quarantines"]
    assert quarantine["epoch"] == QUARANTINE_EPOCH and quarantine["sources"] == ["wrong"]
    shares = {row["epoch"]: row["shares"] for row in record["ratio"]["history"]}
    assert shares[2]["wrong"] == 0 < shares[0]["wrong"]  # dropped from the epoch after the quarantine


def test_the_text_summary_has_the_section(written):
    record = written.record
    text = plain_summary(record)
    assert "Synthetic sources: each source's share" in text and "Synthetic sources: audit before training" in text
    titles = [title for title, _, _ in source_tables(record)]
    assert len(titles) == 4, titles
    share_lines = [line for line in text.splitlines() if "quarantined wrong (from the next epoch)" in line]
    assert len(share_lines) == 1 and share_lines[0].split()[0] == str(QUARANTINE_EPOCH)
    last = record["ratio"]["history"][-1]["shares"]
    assert f"{last['good']:.3f}" in text.split("Synthetic sources: indicators")[0]
    indicators = text.split("Synthetic sources: indicators")[1].split("\n\n")[0]
    assert "grad_cosine" in indicators and "acc_gap" in indicators and " ± " in indicators
    assert "good" in indicators and "wrong" in indicators
    quarantines = text.split("Synthetic sources: quarantines")[1]
    assert "its labels disagree with its inputs" in quarantines
    assert "wrong 0." in quarantines and "→ 0.000" in quarantines
    print_summary(record, console=Console(file=io.StringIO(), width=200))  # the rich tables too


def test_the_html_page_has_the_section(written):
    page = (written.dirpath / "report.html").read_text(encoding="utf-8")
    section = page.split("<h2>Synthetic sources</h2>")[1].split("<h2>")[0]
    for title in ("share of the epoch", "indicators at the last check", "audit before training", "quarantines"):
        assert title in section, title
    assert "real (baseline)" in section and "its labels disagree with its inputs" in section
    assert '<tr class="violated"><td class="num">1</td>' in section  # the quarantine's epoch, marked


def test_the_trend_flags_a_fall_beyond_twice_its_standard_error_only(written):
    record = copy.deepcopy(written.record)
    first, last = record["source_indicators"]["history"][0], record["source_indicators"]["history"][-1]
    key, se = "collapse/source/grad_cosine/{}", "collapse/source/grad_cosine_stderr/{}"
    first.update({key.format("wrong"): 0.5, key.format("good"): 0.8})
    last.update({key.format("wrong"): -0.4, key.format("good"): 0.7, se.format("wrong"): 0.1, se.format("good"): 0.1})
    (_, columns, rows), = [t for t in source_tables(record) if "indicators" in t[0]]
    cell = {row[0]: dict(zip([c for c, _ in columns], row)) for row, _ in rows}
    assert cell["wrong"]["grad_cosine"] == "-0.400 ± 0.100 (-0.900)" and "grad_cosine ↓" in cell["wrong"][
        "moved the bad way"]
    assert cell["good"]["grad_cosine"] == "0.700 ± 0.100 (-0.100)" and "grad_cosine" not in cell["good"][
        "moved the bad way"]


def test_the_share_plot_marks_the_quarantine(written):
    from collapse_guard.report.plots import QUARANTINE_GID, figure_real_fraction

    shares = figure_real_fraction(written.record).axes[1]
    (line,) = [a for a in shares.get_lines() if a.get_gid() == QUARANTINE_GID]
    assert list(line.get_xdata()) == [QUARANTINE_EPOCH + 0.5, QUARANTINE_EPOCH + 0.5]
    assert [t.get_text() for t in shares.texts if t.get_gid() == QUARANTINE_GID] == ["quarantined wrong"]


def test_missing_classes_copies_and_coverage_vs_best_are_shown_and_flagged(written):
    record = copy.deepcopy(written.record)
    audit = record["provenance"]["audit"]["sources"]
    audit["wrong"].update(missing_classes=[1, 2], heldout_copies=3, coverage_vs_best=0.25)
    audit["good"].update(coverage_vs_best=1.0)
    record["guards"] = [{"state": "quarantine", "events": [{
        "epoch": QUARANTINE_EPOCH, "rule": "accuracy vs the best source", "action": "quarantine", "value": -0.5,
        "threshold": -0.15, "reason": "wrong fell behind", "sources": ["wrong"]}]}]
    check_record(json.loads(json.dumps(record)))
    (title, columns, rows), = [t for t in source_tables(record) if "audit" in t[0]]
    assert "coverage vs best" in [c for c, _ in columns]
    flagged = {row[0]: (row[-1], style) for row, style in rows}
    assert flagged["wrong"] == ("lacks classes [1, 2]; 3 copies of held-out real samples", "red")
    assert flagged["good"][1] is None and flagged["real (baseline)"][0] == "—"
    (_, _, (quarantine,)), = [t for t in source_tables(record) if "quarantines" in t[0]]
    assert quarantine[0][:4] == ["1", "wrong", "0.00", "accuracy vs the best source"]
    page = render_html(record, {})
    assert '<td class="num">0.250</td>' in page and "<td>quarantine (wrong)</td>" in page  # the event's sources
    assert "quarantine (wrong)" in plain_summary(record)


def test_older_records_and_events_without_sources_still_pass(written):
    record = copy.deepcopy(written.record)
    del record["source_indicators"]
    del record["provenance"]["audit"], record["provenance"]["quarantines"]
    record["guards"] = [{"state": "inject", "events": [{"epoch": 1, "rule": "r", "action": "inject", "value": 0.1,
                                                       "threshold": 0.2, "reason": "low"}]}]
    check_record(record)
    assert has_section(record)  # the shares alone
    assert [t[0].split(":")[1].split()[0] for t in source_tables(record)] == ["each"]
    bad = copy.deepcopy(record)
    bad["guards"][0]["events"][0]["sources"] = "wrong"
    with pytest.raises(ValueError, match=r"guards\[0\].events\[0\].sources is a string"):
        check_record(bad)


def test_the_check_is_kept_at_its_epoch_whichever_callback_comes_first(tmp_path):
    report = fit(tmp_path, two_sources(), SourceCheck(samples=16, batches=2, every_n_epochs=2), report_first=False,
                 epochs=4)
    assert [row["epoch"] for row in report.record["source_indicators"]["history"]] == [1, 3]
    report = fit(tmp_path, two_sources(), SourceCheck(samples=16, batches=2, every_n_epochs=2), epochs=4)
    assert [row["epoch"] for row in report.record["source_indicators"]["history"]] == [1, 3]


def test_a_run_without_synthetic_sources_has_no_section(tmp_path):
    report = fit(tmp_path, make_mixed(real_fraction=1.0, synth_sizes={}), RatioMonitor(), epochs=2)
    record = report.record
    assert record["source_indicators"] is None and not synthetic_sources(record) and not has_section(record)
    assert source_tables(record) == [] and "Synthetic sources" not in plain_summary(record)
    assert "Synthetic sources" not in (report.dirpath / "report.html").read_text(encoding="utf-8")
