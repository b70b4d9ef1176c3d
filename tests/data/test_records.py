"""The datamodule's public record API (sources by name, samples drawn, reserve, injections, provenance) and
``inject(min_real_fraction=)``: what callbacks and the report read instead of the mixer's internals."""
from __future__ import annotations

import pytest

from collapse_guard import RatioMonitor
from collapse_guard.data.provenance import PROVENANCE_KIND, SCHEMA_VERSION

from cg_testing import TinyMLP, make_mixed, make_trainer


def test_records_before_setup_are_empty():
    dm = make_mixed()
    assert dm.source_names == [] and dm.real_source_names == [] and dm.samples_by_source() == {}
    assert dm.source_provenance() == [] and RatioMonitor().summary() == {"sources": [], "history": []}
    assert dm.reserve_size == 0 and dm.reserve_remaining == 0 and dm.injections == [] and dm.epoch_size == 0
    assert dm.provenance() is None


def test_sources_by_name_and_reserve_size_after_setup():
    dm = make_mixed(n_real=80, holdout=0.25, reserve=0.25, synth_sizes={"g1": 60, "g2": 20})
    dm.setup("fit")
    assert dm.source_names == ["real", "reserve", "g1", "g2"] and dm.real_source_names == ["real", "reserve"]
    assert dm.samples_by_source() == {"real": 0, "reserve": 0, "g1": 0, "g2": 0}
    assert dm.reserve_size == 15 == dm.reserve_remaining
    assert dm.epoch_size == 64  # make_mixed's samples_per_epoch
    pools = make_mixed(n_real=80, holdout=0.25, reserve=0.25, synth_sizes={"g1": 60, "g2": 20}, samples_per_epoch=None)
    pools.setup("fit")
    assert pools.epoch_size == 45 + 54 + 18  # without samples_per_epoch: the real and synthetic training pools
    with pytest.raises(ValueError, match="`scope` must be one of"):
        dm.samples_by_source("week")
    assert make_mixed(reserve=0.0).reserve_size == 0


def test_inject_min_real_fraction_records_the_target_before_and_after():
    dm = make_mixed(real_fraction=0.25, n_real=80, holdout=0.25, reserve=0.25)
    dm.setup("fit")
    record = dm.inject(num_samples=4, min_real_fraction=0.6, reason="recall fell")
    assert record == {"epoch": None, "samples": 4, "real_fraction_floor": 0.6, "reserve_remaining": 11,
                      "reason": "recall fell", "real_fraction_before": 0.25, "real_fraction_after": 0.6}
    lower = dm.inject(min_real_fraction=0.4)  # a floor: it never lowers the target
    assert (lower["real_fraction_before"], lower["real_fraction_after"], lower["samples"]) == (0.6, 0.6, 0)
    assert dm.current_real_fraction() == 0.6 and dm.current_real_fraction(7) == 0.6
    assert dm.injections == [record, lower]
    with pytest.raises(ValueError, match="`min_real_fraction` must be a real number in \\[0, 1\\]"):
        dm.inject(min_real_fraction=1.2)
    assert dm.reserve_remaining == 11 and len(dm.injections) == 2  # a rejected call moves nothing


def test_inject_real_fraction_is_a_deprecated_alias():
    dm = make_mixed()
    dm.setup("fit")
    with pytest.warns(DeprecationWarning, match="min_real_fraction"):
        record = dm.inject(real_fraction=0.7)
    assert record["real_fraction_floor"] == 0.7 and record["real_fraction_after"] == 0.7
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="not both"):
        dm.inject(min_real_fraction=0.5, real_fraction=0.7)


def test_fraction_of_reserve_moves_what_is_left_when_less_is_left():
    dm = make_mixed(n_real=80, holdout=0.25, reserve=0.25)  # a reserve of 15
    dm.setup("fit")
    assert dm.inject(num_samples=12)["samples"] == 12
    record = dm.inject(fraction_of_reserve=0.5, min_real_fraction=0.5)  # 8 asked, 3 left
    assert record["samples"] == 3 and record["reserve_remaining"] == 0 == dm.reserve_remaining
    with pytest.raises(ValueError, match="the reserve is spent"):
        dm.inject(fraction_of_reserve=0.5)
    assert dm.inject(min_real_fraction=0.8)["real_fraction_floor"] == 0.8  # the guard's call on a spent reserve


def test_samples_by_source_and_provenance_after_a_fit():
    dm = make_mixed(real_fraction=0.25, synth_sizes={"g1": 60, "g2": 30}, samples_per_epoch=64)
    monitor = RatioMonitor()
    trainer = make_trainer(max_epochs=2, callbacks=[monitor])
    trainer.fit(TinyMLP(), datamodule=dm)
    drawn = dm.samples_by_source()
    assert list(drawn) == dm.source_names and sum(drawn.values()) == 2 * 64
    assert drawn == {name: sum(h["samples"][name] for h in monitor.history) for name in drawn}
    assert dm.samples_by_source("epoch") == monitor.history[-1]["samples"] == dm.samples_by_source("rank_epoch")
    real = drawn["real"] + drawn["reserve"]
    assert trainer.callback_metrics["collapse/real_fraction_cumulative"].item() == pytest.approx(real / 128)
    assert monitor.history[-1]["real_fraction_target"] == 0.25

    manifest = dm.provenance()
    assert (manifest["schema_version"], manifest["kind"]) == (SCHEMA_VERSION, PROVENANCE_KIND)
    assert [s["name"] for s in manifest["sources"]] == dm.source_names
    assert {s["name"]: s["samples"] for s in manifest["sources"]} == drawn
    assert manifest["samples_total"] == 128 and manifest["real_share"] == pytest.approx(real / 128)
    assert [s["training_pool"] for s in manifest["sources"]] == [45, 15, 54, 27]  # 80 - 20 held out - 15 reserve
    assert manifest["heldout"] == {"real": 20, "synthetic": 6 + 3} and manifest["injections"] == []
    assert manifest["seed"] == dm.seed and manifest["contamination"]["checked"] is True

    own = dm.source_provenance()  # what the user gave, without what the fit drew
    assert [p["name"] for p in own] == dm.source_names
    assert [p["kind"] for p in own] == ["real", "real", "synthetic", "synthetic"]
    assert [p["size"] for p in own] == [s["size"] for s in manifest["sources"]]
    assert all("samples" not in p and "share" not in p for p in own)

    summary = monitor.summary()  # what the report's ratio section holds
    assert summary["sources"] == dm.source_names and len(summary["history"]) == 2
    last = summary["history"][-1]
    assert last["shares"] == {name: n / 64 for name, n in last["samples"].items()}
    assert sum(last["shares"].values()) == pytest.approx(1.0)


def test_provenance_is_the_report_manifest():
    from collapse_guard.report.record import provenance_section

    dm = make_mixed(reserve=0.25)
    dm.setup("fit")
    dm.inject(num_samples=2, min_real_fraction=0.5, reason="r")
    manifest = provenance_section(dm)
    assert dm.provenance() == manifest
    # what the report writes holds the injection and the reserve it moved, read from the datamodule's public state
    (injection,) = manifest["injections"]
    assert injection == dm.injections[0] and (injection["samples"], injection["reason"]) == (2, "r")
    assert injection["reserve_remaining"] == dm.reserve_remaining == dm.reserve_size - 2
    assert [s["name"] for s in manifest["sources"]] == dm.source_names
    assert provenance_section(None) is None and provenance_section(object()) is None  # not a MixedDataModule


def test_quarantine_factors_are_read_off_the_records_and_survive_a_state_round_trip():
    dm = make_mixed(n_real=80, holdout=0.25, reserve=0.25, synth_sizes={"g1": 60, "g2": 20})
    dm.setup("fit")
    sizes = [len(p) for p in dm.mixer.synthetic_pools]
    dm.quarantine("g1", weight=0.5, reason="a")
    dm.quarantine(["g1", "g2"], weight=0.75, reason="b")  # g1 stays at 0.5: a later quarantine never raises it
    assert dm.mixer.quarantined == {"g1": 0.5, "g2": 0.75}
    weights = [sizes[0] * 0.5, sizes[1] * 0.75]
    want = {"g1": weights[0] / sum(weights), "g2": weights[1] / sum(weights)}
    assert dm.quarantines[-1]["shares_after"] == pytest.approx(want) == dm.mixer.synthetic_shares()
    state = dm.mixer.state_dict()
    assert state["quarantined"] == {"g1": 0.5, "g2": 0.75}  # the checkpoint format is unchanged
    fresh = make_mixed(n_real=80, holdout=0.25, reserve=0.25, synth_sizes={"g1": 60, "g2": 20})
    fresh.setup("fit")
    assert fresh.mixer.quarantined == {} and fresh.mixer.synthetic_shares() != dm.mixer.synthetic_shares()
    fresh.mixer.load_state_dict(state)
    assert fresh.mixer.quarantined == {"g1": 0.5, "g2": 0.75} and fresh.quarantines == dm.quarantines
    assert fresh.mixer.synthetic_shares() == dm.mixer.synthetic_shares()
