"""The guard action "quarantine" (issue 17): the default CollapseGuard() names the harmful synthetic source, drops it
and keeps the good one; two good sources raise no event; the policy, the refusals and the resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from collapse_guard import (
    CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor, Rule, SourceAudit, SourceCheck,
)
from collapse_guard.callbacks.events import GuardEvent, state_word
from collapse_guard.callbacks.policy import decide
from collapse_guard.callbacks.rules import RuleState
from collapse_guard.data import SyntheticSource
from collapse_guard.demo import DigitsClassifier, DigitsDataModule, accuracy, digits_tensors, split_digits
from collapse_guard.loop import ClassConditionalGMM, GenerationGuard

from cg_testing import make_trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ACC = Rule("collapse/heldout_real/acc", threshold=0.5)
GAP = Rule("collapse/source/acc_vs_best/*", threshold=-0.15, action="quarantine")


def verdicts(acc: float, gaps: dict) -> list:
    gap = RuleState(GAP).judge_row({f"collapse/source/acc_vs_best/{k}": v for k, v in gaps.items()})
    return [RuleState(ACC).judge(acc), gap]


# -- the policy -----------------------------------------------------------------------------------------------------
def test_a_named_source_is_quarantined_in_place_of_an_injection():
    d = decide(verdicts(0.3, {"good": 0.0, "bad": -0.5}), "inject", quarantinable=("good", "bad"), max_injections=2,
               reserve_size=10, reserve_remaining=10, real_fraction_step=0.5)
    assert (d.action, d.asked, d.sources) == ("quarantine", "inject", ("bad",))
    assert len(d.fired) == 2  # both rules are listed in the one event


def test_naming_every_source_left_injects_and_a_source_already_dropped_is_not_named_again():
    both = verdicts(0.9, {"a": -0.5, "b": -0.6})
    d = decide(both, "inject", quarantinable=("a", "b"), max_injections=2, reserve_size=10, reserve_remaining=10)
    assert (d.action, d.sources, d.samples) == ("inject", (), 10)
    d = decide(verdicts(0.9, {"good": 0.0, "bad": -0.5}), "inject", quarantinable=("good",), max_injections=2)
    assert (d.action, d.asked) == ("ok", "quarantine")
    # after the quarantine, the held-out real rule still firing: harm persists, so inject, then stop
    d = decide(verdicts(0.3, {"good": 0.0, "bad": -0.5}), "inject", quarantinable=("good",), max_injections=1,
               reserve_size=10, reserve_remaining=10)
    assert d.action == "inject"
    d = decide(verdicts(0.3, {"good": 0.0, "bad": -0.5}), "inject", quarantinable=("good",), injections=1,
               max_injections=1)
    assert (d.action, d.escalated) == ("stop", "persists")


def test_quarantine_is_refused_where_it_could_name_no_source():
    with pytest.raises(ValueError, match="'quarantine' is a rule's action"):
        CollapseGuard(action="quarantine")
    with pytest.raises(ValueError, match=r"rules\[0\].*asks for 'quarantine'.*family"):
        CollapseGuard(rules=[Rule("collapse/heldout_real/acc", threshold=0.5, action="quarantine")])
    with pytest.raises(ValueError, match="GenerationGuard: rules .* ask for 'quarantine'"):
        GenerationGuard(rules=[GAP])


def test_a_quarantine_event_keeps_its_sources_through_a_checkpoint():
    event = GuardEvent(rule="r", monitor="m", value=1.0, bound=0.5, action="quarantine", reason="x", epoch=2,
                       global_step=9, sources=("bad",))
    state = event.state_dict()
    assert state["sources"] == ("bad",)
    assert GuardEvent.from_state({**state, "sources": ["bad"]}).sources == ("bad",)
    assert GuardEvent.from_state({k: v for k, v in state.items() if k != "sources"}).sources == ()
    assert state_word("quarantine", (), False, "quarantine") == "quarantined"


# -- fits on real digits ------------------------------------------------------------------------------------------
SPLITS = split_digits(0)


def good_samples(seed: int, n: int = 900) -> tuple[np.ndarray, np.ndarray]:
    return ClassConditionalGMM(n_components=4, n_pca=30, random_state=seed).fit(*SPLITS["train"]).sample(n, rng=seed)


def source(x, y, generator: str) -> SyntheticSource:
    return SyntheticSource(digits_tensors(x, y), generator=generator)


def with_wrong_labels(x, y, seed: int, rate: float = 0.6):
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y)) < rate
    return x, np.where(wrong, (y + rng.integers(1, 10, len(y))) % 10, y)


def fit(synthetic, real_fraction: float, epochs: int = 8, guard: bool = True):
    torch.manual_seed(0)
    dm = MixedDataModule(DigitsDataModule(SPLITS), synthetic, real_fraction=real_fraction, holdout="val",
                         reserve=0.2, samples_per_epoch=1280, seed=0)
    guard_cb = CollapseGuard(verbose=False)
    callbacks = [RatioMonitor(), HeldOutRealCheck(), SourceAudit(), SourceCheck(), guard_cb] if guard else []
    model = DigitsClassifier(lr=5e-3)
    trainer = make_trainer(max_epochs=epochs, callbacks=callbacks)
    trainer.fit(model, datamodule=dm)
    return dm, guard_cb, accuracy(model, *SPLITS["test"])


def last_epoch_shares(dm) -> dict:
    counts = dm.samples_by_source("epoch")
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()}


def test_the_default_guard_quarantines_the_harmful_source_and_keeps_the_good_one():
    good = source(*good_samples(1), "GMM")
    noisy = source(*with_wrong_labels(*good_samples(2), seed=3), "GMM, 60% of labels wrong")
    dm, guard, acc = fit({"good": good, "noisy": noisy}, real_fraction=0.4)
    assert [(e.action, e.sources) for e in guard.events] == [("quarantine", ("noisy",))]
    assert "noisy" in guard.events[0].reason and "noisy 0.50 -> 0.00" in guard.events[0].reason
    shares = last_epoch_shares(dm)
    assert shares.get("noisy", 0.0) <= 0.05 and shares["good"] >= 0.20
    fit_counts = dm.samples_by_source()
    synthetic = (fit_counts["good"] + fit_counts["noisy"]) / sum(fit_counts.values())
    assert synthetic >= 0.5
    assert dm.quarantines[0]["sources"] == ["noisy"] and guard.summary()["state"] == "quarantine"
    # the dropped source is no longer judged: the checks after it hold only the good source, none fires again
    checks = guard.summary()["checks"]
    assert all(c["word"].startswith("ok") or c["word"] in ("quarantined", "cooling") for c in checks), checks
    assert checks[-1]["word"] == "ok (quarantined)"
    _, _, real_only = fit(None, real_fraction=1.0, guard=False)
    assert acc >= real_only - 0.01


def test_two_good_sources_raise_no_event():
    dm, guard, _ = fit({"good": source(*good_samples(1), "GMM"), "good2": source(*good_samples(7), "GMM")},
                       real_fraction=0.4)
    assert guard.events == [] and dm.quarantines == []
    assert any(r.monitor == "collapse/source/acc_vs_best/*" for r in guard.rules)  # attribution was on


def test_several_sources_without_attribution_callbacks_are_warned_about_at_setup():
    dm = MixedDataModule(DigitsDataModule(SPLITS), {"a": source(*good_samples(1, 200), "GMM"),
                                                    "b": source(*good_samples(7, 200), "GMM")},
                         real_fraction=0.5, holdout="val", reserve=0.2, samples_per_epoch=256, seed=0)
    with pytest.warns(UserWarning, match=r"mixes 2 synthetic sources, but no callback attributes harm.*SourceAudit"):
        make_trainer(max_epochs=1, callbacks=[HeldOutRealCheck(), CollapseGuard()]).fit(DigitsClassifier(),
                                                                                         datamodule=dm)


def test_source_check_keeps_every_check_and_resumes_it():
    check = SourceCheck()
    dm = MixedDataModule(DigitsDataModule(SPLITS), {"a": source(*good_samples(1, 200), "GMM"),
                                                    "b": source(*good_samples(7, 200), "GMM")},
                         real_fraction=0.5, holdout="val", samples_per_epoch=256, seed=0)
    make_trainer(max_epochs=2, callbacks=[check]).fit(DigitsClassifier(), datamodule=dm)
    assert [row["epoch"] for row in check.history] == [0, 1]
    assert set(check.history[-1]) >= {"collapse/source/acc_vs_best/a", "collapse/source/acc/b", "global_step"}
    again = SourceCheck()
    again.load_state_dict(check.state_dict())
    assert again.history == check.history and again.last == check.last


def test_the_audit_gives_rules_only_over_what_it_measured():
    audit = SourceAudit()
    entry = {"missing_classes": [], "coverage": 0.0, "coverage_vs_best": None}
    audit.report = {"sources": {"a": dict(entry), "b": dict(entry)}}
    assert [r.monitor for r in audit.attribution_rules(None)] == ["collapse/audit/missing_classes/*"]
    audit.report = {"sources": {"a": {**entry, "missing_classes": None}}}
    assert audit.attribution_rules(None) is None  # one source: nothing to attribute
    audit.report = {"sources": {n: {"missing_classes": None, "coverage_vs_best": None} for n in "ab"}}
    assert audit.attribution_rules(None) is None
