"""The paired indicators (issue 14, round 2): the change of held-out accuracy and of each class's recall from the
reference check, on the same samples, with the paired standard error (McNemar 1947)."""
from __future__ import annotations

import math

import pytest
import torch

from collapse_guard import HeldOutRealCheck
from collapse_guard.callbacks.paired import PairedReference
from collapse_guard.metrics.classification import PairedCorrectness
from collapse_guard.metrics.functional import paired_counts, paired_difference

from cg_testing import TinyMLP, make_mixed, make_trainer

PREFIX = "collapse/heldout_real/"


def direct(correct: list, reference: list) -> tuple[float, float]:
    """The paired difference computed from its definition: the mean and standard error of ``d_i = x_i - y_i``."""
    d = [float(a) - float(b) for a, b in zip(correct, reference)]
    n = len(d)
    mean = sum(d) / n
    # var of the mean of d with the plug-in (1/n) variance: (sum d^2 / n - mean^2) / n = (b + c - (b-c)^2/n) / n^2
    var = (sum(x * x for x in d) / n - mean * mean) / n
    return mean, math.sqrt(var)


def random_pair(n: int, seed: int, classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=gen) < 0.7, torch.rand(n, generator=gen) < 0.8,
            torch.randint(0, classes, (n,), generator=gen))


def test_paired_difference_is_the_mean_and_standard_error_of_the_per_sample_differences():
    for seed in range(5):
        correct, reference, target = random_pair(97, seed)
        b, c, n = paired_counts(correct, reference)[:, 0]
        change, stderr = paired_difference(b, c, n)
        want = direct(correct.tolist(), reference.tolist())
        assert (change.item(), stderr.item()) == pytest.approx(want, abs=1e-12)
        assert change.item() == pytest.approx(correct.double().mean().item() - reference.double().mean().item())
        # per class: the same on each class's samples
        per_class = paired_counts(correct, reference, target, 4)
        changes, stderrs = paired_difference(*per_class)
        for k in range(4):
            on = target == k
            want = direct(correct[on].tolist(), reference[on].tolist())
            assert (changes[k].item(), stderrs[k].item()) == pytest.approx(want, abs=1e-12)


def test_paired_difference_edges():
    change, stderr = paired_difference(torch.tensor([0, 3, 0]), torch.tensor([0, 0, 0]), torch.tensor([5, 10, 0]))
    assert change[0].item() == 0 and stderr[0].item() == 0  # nothing flipped
    assert change[1].item() == pytest.approx(-0.3) and stderr[1].item() == pytest.approx(math.sqrt(3 - 0.9) / 10)
    assert math.isnan(change[2].item()) and math.isnan(stderr[2].item())  # no sample
    with pytest.raises(ValueError, match="paired"):
        paired_counts(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))


def test_two_ranks_merged_give_the_counts_of_the_whole_set():
    correct, reference, target = random_pair(200, 7)
    whole = PairedCorrectness(num_classes=4)
    whole.update(correct, reference, target)
    ranks = [PairedCorrectness(num_classes=4) for _ in range(2)]
    ranks[0].update(correct[:120], reference[:120], target[:120])
    ranks[1].update(correct[120:], reference[120:], target[120:])
    ranks[0].merge_state(ranks[1])
    got, want = ranks[0].compute(), whole.compute()
    assert got.keys() == want.keys() and {"acc_change", "class_recall_change_stderr/3"} <= set(got)
    for key in want:
        assert got[key].item() == pytest.approx(want[key].item(), abs=1e-12)
    assert got["acc_change"].item() == pytest.approx(direct(correct.tolist(), reference.tolist())[0])
    # a rank without a reference of its length counts its samples as unpaired
    lone = PairedCorrectness(num_classes=4)
    lone.update(correct, None, target)
    lone.update(correct, reference[:5], target)
    assert lone.compute()["unpaired"].item() == 400


def fit_with_check(max_epochs: int, ckpt_dir=None, ckpt_path=None) -> HeldOutRealCheck:
    torch.manual_seed(0)
    check = HeldOutRealCheck(synthetic=False, prog_bar=False)
    trainer = make_trainer(max_epochs=max_epochs, callbacks=[check], ckpt_dir=ckpt_dir)
    trainer.fit(TinyMLP(), datamodule=make_mixed(real_fraction=0.5, reserve=0.25), ckpt_path=ckpt_path)
    return check


def test_the_check_logs_the_change_from_its_best_check_and_resume_keeps_the_reference(tmp_path):
    check = fit_with_check(4, ckpt_dir=tmp_path)
    rows = check.history
    assert rows[0][PREFIX + "acc_change"] == 0.0 and rows[0][PREFIX + "acc_change_stderr"] == 0.0
    best = rows[0][PREFIX + "acc"]
    for row in rows[1:]:  # each check against the best accuracy of the checks before it
        assert row[PREFIX + "acc"] - best == pytest.approx(row[PREFIX + "acc_change"], abs=1e-9)
        assert 0.0 <= row[PREFIX + "acc_change_stderr"] <= 1.0
        classes = [k.rsplit("/", 1)[1] for k in row if k.startswith(PREFIX + "class_recall/")]
        assert classes and all(f"{PREFIX}class_recall_change_stderr/{c}" in row for c in classes)
        best = max(best, row[PREFIX + "acc"])
    assert check.paired.best == pytest.approx(best)
    shard = check.paired.shards[0]
    assert shard.dtype == torch.bool and len(shard) == 20  # the 20 held-out real samples, in loader order
    # resumed from the checkpoint of epoch 1: the same reference, the same later values
    resumed = fit_with_check(4, ckpt_path=tmp_path / "epoch=1.ckpt")
    saved = torch.load(tmp_path / "epoch=1.ckpt", weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("HeldOutRealCheck"))["paired"]
    again = PairedReference()
    again.load_state_dict(state)
    assert again.state_dict() == state and again.best == max(r[PREFIX + "acc"] for r in rows[:2])
    assert [r[PREFIX + "acc_change"] for r in resumed.history] == [r[PREFIX + "acc_change"] for r in rows]
    assert torch.equal(resumed.paired.shards[0], shard)
