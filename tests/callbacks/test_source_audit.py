"""SourceAudit: each synthetic source against the real training data at set-up (issue 17, the audit)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from collapse_guard import CollapseGuard, CollapseReport, MixedDataModule, Rule, SourceAudit
from collapse_guard.data.audit import audit_metrics
from collapse_guard.metrics.functional.class_marginal import class_shares, missing_classes

from cg_testing import REAL_BASE, SYNTH_BASE, TinyMLP, id_dataset, make_trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def without_classes(ds: TensorDataset, classes: set) -> TensorDataset:
    x, y = ds.tensors
    keep = torch.tensor([int(c) not in classes for c in y])
    return TensorDataset(x[keep], y[keep])


def mixed(synthetic: dict) -> MixedDataModule:
    return MixedDataModule(id_dataset(300, REAL_BASE), synthetic, real_fraction=0.5, holdout=0.2, batch_size=16,
                           samples_per_epoch=64)


def test_missing_classes_and_shares():
    real = torch.tensor([0, 1, 2] * 10 + [3])  # class 3: one real sample, too rare to judge
    assert missing_classes(real, torch.tensor([0, 1] * 15), 4).tolist() == [2]
    assert missing_classes(real, torch.tensor([0, 1, 2] * 10), 4).tolist() == []
    # 1 of 60 samples of class 2 is below 10% of its real share (10/31): missing; 1 of 30 is not
    assert missing_classes(real, torch.tensor([0, 1] * 29 + [2, 0]), 4).tolist() == [2]
    assert missing_classes(real, torch.tensor([0, 1] * 14 + [2, 0]), 4).tolist() == []
    assert class_shares(torch.tensor([0, 0, 2]), 3).tolist() == pytest.approx([2 / 3, 0, 1 / 3])


def test_the_audit_names_the_source_that_lacks_a_class_before_training():
    good = id_dataset(200, SYNTH_BASE)
    bad = without_classes(id_dataset(300, 2 * SYNTH_BASE, seed=1), {2})
    audit = SourceAudit(max_samples=500)
    dm = mixed({"good": good, "bad": bad})
    with pytest.warns(UserWarning, match=r"synthetic source 'bad' lacks classes \[2\]"):
        make_trainer(max_epochs=1, callbacks=[audit]).fit(TinyMLP(), datamodule=dm)
    sources = audit.report["sources"]
    assert sources["good"]["missing_classes"] == [] and sources["bad"]["missing_classes"] == [2]
    assert sources["bad"]["class_tv"] > 0.25 > sources["good"]["class_tv"]
    # input space: both sources are real-like blobs; the k-NN measures and the real baseline are in range
    for entry in (sources["good"], sources["bad"], audit.report["real"]):
        assert 0.0 <= entry["precision"] <= 1.0 and 0.0 <= entry["coverage"] <= 1.0
    assert sources["good"]["heldout_copies"] == 0
    assert dm.provenance()["audit"] is audit.report
    assert audit_metrics(audit.report)["collapse/audit/missing_classes/bad"] == 1.0


def test_a_rule_reads_the_audit_at_the_first_check_and_the_report_holds_it(tmp_path):
    bad = without_classes(id_dataset(300, 2 * SYNTH_BASE, seed=1), {2})
    rule = Rule("collapse/audit/missing_classes/bad", mode="min", threshold=0.5, action="stop")
    guard = CollapseGuard(rules=[rule])
    report = CollapseReport(dirpath=str(tmp_path))
    model = TinyMLP()
    make_trainer(max_epochs=3, callbacks=[SourceAudit(), guard, report]).fit(model, datamodule=mixed({"bad": bad}))
    assert [(e.epoch, e.action, e.monitor) for e in guard.events] == [(0, "stop", rule.monitor)]
    assert list(model.seen) == [0]
    assert report.record["provenance"]["audit"]["sources"]["bad"]["missing_classes"] == [2]


def test_a_rule_on_an_audit_key_of_no_source_is_refused_at_setup():
    guard = CollapseGuard(rules=[Rule("collapse/audit/missing_classes/gen9", mode="min", threshold=0.5)],
                          action="stop")
    model = TinyMLP()
    with pytest.raises(ValueError, match=r"SourceAudit never logs.*audit/missing_classes/good"):
        make_trainer(max_epochs=1, callbacks=[SourceAudit(), guard]).fit(
            model, datamodule=mixed({"good": id_dataset(200, SYNTH_BASE)}))
    assert model.seen == {}


@pytest.mark.parametrize("kwargs", [dict(max_samples=3), dict(k=0), dict(missing_share=1.5), dict(seed=-1),
                                    dict(missing_share=float("nan"))])
def test_settings_are_checked_when_built(kwargs):
    with pytest.raises(ValueError):
        SourceAudit(**kwargs)


# -- quarantine: a synthetic source dropped or down-weighted from the next epoch ------------------------------------
def test_a_quarantined_source_is_not_drawn_from_the_next_epoch_and_the_record_resumes(tmp_path):
    from pytorch_lightning.callbacks import Callback

    good, bad = id_dataset(200, SYNTH_BASE), id_dataset(200, 2 * SYNTH_BASE)
    dm = mixed({"good": good, "bad": bad})

    class QuarantineAtEpoch0(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                self.record = dm.quarantine("bad", reason="test")

    q = QuarantineAtEpoch0()
    model = TinyMLP()
    make_trainer(max_epochs=3, callbacks=[q]).fit(model, datamodule=dm)
    record = q.record
    assert record["sources"] == ["bad"] and record["weight"] == 0.0 and record["epoch"] == 0
    assert record["shares_before"] == pytest.approx({"good": 0.5, "bad": 0.5})
    assert record["shares_after"] == {"good": 1.0, "bad": 0.0}
    seen = {e: {i for i in ids if i >= SYNTH_BASE} for e, ids in model.seen.items()}
    assert any(i >= 2 * SYNTH_BASE for i in seen[0])                       # drawn before
    assert not any(i >= 2 * SYNTH_BASE for e in (1, 2) for i in seen[e])   # never after
    assert dm.provenance()["quarantines"][0]["sources"] == ["bad"]
    # checkpointed: a fresh datamodule restored from the state keeps the quarantine
    fresh = mixed({"good": good, "bad": bad})
    fresh.setup("fit")
    fresh.load_state_dict(dm.state_dict())
    assert fresh.mixer.quarantined == {"bad": 0.0} and fresh.quarantines == dm.quarantines


def test_quarantining_every_synthetic_source_trains_on_real_only_and_bad_calls_are_refused():
    dm = mixed({"good": id_dataset(200, SYNTH_BASE)})
    with pytest.raises(RuntimeError, match="needs setup"):
        dm.quarantine("good")
    dm.setup("fit")
    for bad_call in (lambda: dm.quarantine("real"), lambda: dm.quarantine([]), lambda: dm.quarantine("nope"),
                     lambda: dm.quarantine("good", weight=1.0), lambda: dm.quarantine("good", weight=float("nan"))):
        with pytest.raises(ValueError):
            bad_call()
    half = dm.quarantine("good", weight=0.5)
    assert half["shares_after"] == {"good": 1.0} and half["real_fraction_after"] == 0.5
    record = dm.quarantine("good")
    assert record["real_fraction_after"] == 1.0 and dm.current_real_fraction(1) == 1.0
    assert dm.quarantine("good", weight=0.5)["shares_after"] == {"good": 0.0}  # never raised back


# -- SourceCheck: per-source indicators and the gradient alignment with held-out real data --------------------------
def test_gradient_cosines_of_aligned_and_opposed_gradients():
    from collapse_guard.metrics.functional.gradient_alignment import gradient_cosines

    ref = torch.tensor([1.0, 0.0], dtype=torch.float64)
    mean, se = gradient_cosines([torch.tensor([1.0, 0.0]).double(), torch.tensor([1.0, 1.0]).double()], ref)
    assert mean == pytest.approx((1 + 2 ** -0.5) / 2) and se > 0
    assert gradient_cosines([-ref, -2 * ref], ref) == (pytest.approx(-1.0), pytest.approx(0.0))


def test_a_source_with_wrong_labels_pulls_against_held_out_real_data_and_a_good_one_with_it():
    from collapse_guard import SourceCheck

    good = id_dataset(300, SYNTH_BASE, seed=3)
    x, y = id_dataset(300, 2 * SYNTH_BASE, seed=4).tensors
    wrong = TensorDataset(x, (y + 1) % 3)  # every label wrong
    dm = MixedDataModule(id_dataset(300, REAL_BASE), {"good": good, "wrong": wrong}, real_fraction=0.5, holdout=0.2,
                         batch_size=16, samples_per_epoch=128, synthetic_holdout=0.2)
    check = SourceCheck(samples=48, batches=4)
    trainer = make_trainer(max_epochs=3, callbacks=[check])
    trainer.fit(TinyMLP(), datamodule=dm)
    m = check.last
    assert m["collapse/source/grad_cosine/good"] > 0 > m["collapse/source/grad_cosine/wrong"], m
    assert m["collapse/source/acc_gap/wrong"] < 0 < m["collapse/source/acc/good"]
    assert 0 < m["collapse/source/grad_cosine_stderr/wrong"] < 1
    assert float(trainer.callback_metrics["collapse/source/grad_cosine/wrong"]) == pytest.approx(
        m["collapse/source/grad_cosine/wrong"])
    assert check.metric_keys(trainer) == set(m) | {k.rsplit("/", 1)[0] + "/*" for k in m}


def test_a_family_rule_on_the_gradient_cosine_names_the_harmful_source():
    from collapse_guard import SourceCheck

    x, y = id_dataset(300, 2 * SYNTH_BASE, seed=4).tensors
    dm = MixedDataModule(id_dataset(300, REAL_BASE), {"good": id_dataset(300, SYNTH_BASE, seed=3),
                                                      "wrong": TensorDataset(x, (y + 1) % 3)},
                         real_fraction=0.5, holdout=0.2, batch_size=16, samples_per_epoch=128, synthetic_holdout=0.2)
    guard = CollapseGuard(rules=[Rule("collapse/source/grad_cosine/*", threshold=0.0, action="warn")], cooldown=0)
    make_trainer(max_epochs=3, callbacks=[SourceCheck(samples=48, batches=4), guard]).fit(TinyMLP(), datamodule=dm)
    assert guard.events and all("wrong" in e.reason and "good" not in e.reason for e in guard.events)


def test_source_check_splits_its_samples_into_its_batches_in_order():
    from types import SimpleNamespace

    from collapse_guard import SourceCheck

    ds = TensorDataset(torch.arange(20).float().unsqueeze(1), torch.arange(20))
    moved = []
    trainer = SimpleNamespace(strategy=SimpleNamespace(batch_to_device=lambda b: moved.append(b) or b))
    batches = SourceCheck(batches=4)._split(trainer, ds, [1, 3, 5, 7, 9, 11, 13, 15, 17, 19], None)
    assert [b[1].tolist() for b in batches] == [[1, 3, 5], [7, 9, 11], [13, 15, 17], [19]]
    assert len(moved) == 4 and batches[0][0].shape == (3, 1)  # each batch collated, then put on the device


def test_the_audit_rules_follow_what_was_measured_in_either_order():
    audit = SourceAudit()
    entry = {"missing_classes": None, "coverage_vs_best": 0.5}
    audit.report = {"sources": {"a": entry, "b": entry}}
    assert [r.monitor for r in audit.attribution_rules(None)] == ["collapse/audit/coverage_vs_best/*"]
    audit.report = {"sources": {"a": {"missing_classes": [], "coverage_vs_best": 1.0}, "b": entry}}
    assert [r.name for r in audit.attribution_rules(None)] == ["missing classes", "coverage vs the best source"]
