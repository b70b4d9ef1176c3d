"""A fit stopped at any epoch and resumed from its checkpoint replays the uninterrupted fit exactly.

Lightning restores a datamodule's ``load_state_dict`` and every callback's (by ``state_key``) after ``setup``
(``Trainer._run``: ``_call_setup_hook`` then ``_restore_modules_and_callbacks``), and ``ModelCheckpoint`` runs after
every other callback's ``on_train_epoch_end``, so an epoch's checkpoint holds that epoch's counts, injections and
guard decisions.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor, Rule, default_rules
from collapse_guard._compat import Callback

from cg_testing import TinyMLP, guard_state, make_mixed, make_trainer

EPOCHS = 6
LOSS = "collapse/heldout_real/loss"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def schedule(epoch: int) -> float:
    return max(0.25, 0.75 - 0.25 * epoch)  # 0.75, 0.5, 0.25, 0.25, ...


class Spy(Callback):
    """Listed last: what every epoch measured and decided (not checkpointed: compared after the resume only)."""

    def __init__(self):
        self.epochs: dict[int, dict] = {}

    def on_train_epoch_end(self, trainer, pl_module):
        check = next(cb for cb in trainer.callbacks if isinstance(cb, HeldOutRealCheck))
        self.epochs[trainer.current_epoch] = {
            "check": dict(check.last),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "seen": list(pl_module.seen.get(trainer.current_epoch, [])),
            "mixer": trainer.datamodule.state_dict(),
        }


def parts():
    """The same datamodule, callbacks and model for every run: two guards with different rules."""
    torch.manual_seed(0)
    dm = make_mixed(real_fraction=schedule, n_real=96, synth_sizes={"g1": 60, "g2": 40}, holdout=0.25, reserve=0.25,
                    batch_size=8, samples_per_epoch=64, seed=3)
    guard = CollapseGuard(
        rules=default_rules() + [
            # 0.25 < 0.3 at epochs 2 and 3: fires at epoch 3 (patience 2 spans a checkpoint at epoch 2) and injects
            Rule("collapse/real_fraction", mode="max", threshold=0.3, patience=2, action="inject", name="floor"),
            # a baseline of the first two checks, restored from the checkpoint
            Rule(LOSS, mode="min", relative=0.05, baseline="first", baseline_checks=2, action="warn", name="loss"),
        ],
        action="inject", inject_fraction=0.5, real_fraction_step=0.5, cooldown=1, verbose=False,
    )
    watcher = CollapseGuard(rules=[Rule("collapse/heldout_real/acc", threshold=1.01, action="warn", name="always")],
                            action="warn", cooldown=1)
    callbacks = [RatioMonitor(), HeldOutRealCheck(), guard, watcher, Spy()]
    return dm, callbacks, TinyMLP()


def fit(max_epochs, ckpt_dir=None, ckpt_path=None):
    dm, callbacks, model = parts()
    trainer = make_trainer(max_epochs=max_epochs, callbacks=callbacks, ckpt_dir=ckpt_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warn rules
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    ratio, check, guard, watcher, spy = callbacks[:5]
    return {"trainer": trainer, "dm": dm, "ratio": ratio, "check": check, "guard": guard, "watcher": watcher,
            "spy": spy, "model": model}


@pytest.fixture(scope="module")
def uninterrupted():
    return fit(EPOCHS)


def test_the_reference_fit_injects_and_decides_on_both_sides_of_the_stop_epochs(uninterrupted):
    guard, dm = uninterrupted["guard"], uninterrupted["dm"]
    floor = [(e.epoch, e.action) for e in guard.events if e.rule == "floor"]
    assert floor == [(3, "inject")]
    assert dm.injections and dm.injections[0]["epoch"] == 3 and dm.reserve_remaining < dm.reserve_size
    assert [e.epoch for e in uninterrupted["watcher"].events] == [0, 2, 4]  # cooldown 1
    assert [h["real_fraction_target"] for h in uninterrupted["ratio"].history] == [0.75, 0.5, 0.25, 0.25, 0.75, 0.75]


@pytest.mark.parametrize("stop", [0, 2, 3, 4])  # before the injection, one check into its patience, at it, after it
def test_resumed_fit_replays_the_uninterrupted_one(tmp_path, uninterrupted, stop):
    first = fit(stop + 1, ckpt_dir=tmp_path)
    assert first["trainer"].current_epoch == stop + 1
    resumed = fit(EPOCHS, ckpt_dir=tmp_path / "after", ckpt_path=tmp_path / f"epoch={stop}.ckpt")
    ref = uninterrupted

    # the ratio history, guard events of both guards, rule states and injections are the uninterrupted fit's
    assert resumed["ratio"].history == ref["ratio"].history
    assert resumed["guard"].events == ref["guard"].events
    assert resumed["watcher"].events == ref["watcher"].events
    assert guard_state(resumed["guard"]) == guard_state(ref["guard"])
    assert guard_state(resumed["watcher"]) == guard_state(ref["watcher"])
    assert resumed["dm"].state_dict() == ref["dm"].state_dict()
    assert resumed["dm"].samples_by_source() == ref["dm"].samples_by_source()
    # every epoch after the resume drew the same batches and measured the same indicators
    for epoch in range(stop + 1, EPOCHS):
        got, want = resumed["spy"].epochs[epoch], ref["spy"].epochs[epoch]
        assert got["seen"] == want["seen"], epoch
        assert got["check"] == want["check"], epoch
        assert got["mixer"] == want["mixer"], epoch
        for key, value in want["metrics"].items():
            if key.startswith("collapse/"):
                assert got["metrics"][key] == value, (epoch, key)
    assert resumed["check"].state_dict() == ref["check"].state_dict()
    for a, b in zip(resumed["model"].state_dict().values(), ref["model"].state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoint_holds_each_guard_under_its_own_key_and_the_datamodule_state(tmp_path):
    run = fit(1, ckpt_dir=tmp_path)
    ckpt = torch.load(tmp_path / "epoch=0.ckpt", weights_only=False)
    guard_keys = [k for k in ckpt["callbacks"] if str(k).startswith("CollapseGuard")]
    assert sorted(guard_keys) == sorted([run["guard"].state_key, run["watcher"].state_key])
    assert run["guard"].state_key != run["watcher"].state_key
    state = ckpt[MixedDataModule.__qualname__]
    assert state == run["dm"].state_dict()
    assert set(state) >= {"seed", "reserve_cursor", "real_fraction_floor", "injections", "total_counts", "pools"}
    # two guards with the same rules would clash: Lightning refuses them when the Trainer is built
    same = [CollapseGuard(rules=[Rule(LOSS, threshold=9.0)]), CollapseGuard(rules=[Rule(LOSS, threshold=9.0)])]
    with pytest.raises(RuntimeError, match="state_key"):
        make_trainer(callbacks=same)
    # ... and the same monitor with another bound is another guard
    other = [CollapseGuard(rules=[Rule(LOSS, threshold=9.0)]), CollapseGuard(rules=[Rule(LOSS, threshold=8.0)])]
    make_trainer(callbacks=other)


def test_datamodule_state_is_loaded_after_setup(tmp_path):
    fit(1, ckpt_dir=tmp_path)
    dm, callbacks, model = parts()
    calls = []
    setup, load = dm.setup, dm.load_state_dict  # wrapped on the instance: the checkpoint key is the class name

    def recording_setup(stage):
        calls.append("setup")
        setup(stage)

    def recording_load(state_dict):
        calls.append(("load", dm.mixer is not None))
        load(state_dict)

    dm.setup, dm.load_state_dict = recording_setup, recording_load
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer(max_epochs=2, callbacks=callbacks).fit(model, datamodule=dm, ckpt_path=tmp_path / "epoch=0.ckpt")
    assert calls[:2] == ["setup", ("load", True)]
    assert dm._pending_state is None and dm.mixer.current_epoch == 1
    assert sum(dm.samples_by_source().values()) == 2 * 64  # epoch 0 from the checkpoint, epoch 1 drawn now


@pytest.mark.filterwarnings("ignore:Be aware that when using `ckpt_path`")  # Lightning's own, less specific
def test_resume_with_other_rules_warns_that_the_guard_state_is_not_restored(tmp_path):
    fit(1, ckpt_dir=tmp_path)
    dm, callbacks, model = parts()
    callbacks[2] = CollapseGuard(rules=[Rule(LOSS, mode="min", threshold=99.0, action="warn")])
    with pytest.warns(UserWarning, match="not restored"):
        make_trainer(max_epochs=2, callbacks=callbacks[:3]).fit(model, datamodule=dm,
                                                                ckpt_path=tmp_path / "epoch=0.ckpt")
    assert callbacks[2].states[0].checks == 1  # it started afresh at epoch 1


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(seed=4), "seed=3"),
        (dict(n_real=100), "other training pools"),
        (dict(reserve=0.3), "other training pools"),
    ],
)
def test_resume_with_other_data_or_seed_raises(tmp_path, change, match):
    fit(1, ckpt_dir=tmp_path)
    _, callbacks, model = parts()
    kwargs = dict(real_fraction=schedule, n_real=96, synth_sizes={"g1": 60, "g2": 40}, holdout=0.25, reserve=0.25,
                  batch_size=8, samples_per_epoch=64, seed=3)
    kwargs.update(change)
    dm = make_mixed(**kwargs)
    with pytest.raises(ValueError, match=match):
        make_trainer(max_epochs=2, callbacks=callbacks[:3]).fit(model, datamodule=dm,
                                                                ckpt_path=tmp_path / "epoch=0.ckpt")


def test_a_resumed_fit_with_dataloader_workers_plans_the_epoch_it_runs(tmp_path):
    """DataLoader workers prefetch, and so plan, an epoch's first batches when Lightning creates the epoch's iterator,
    which it does before it sets the sampler's epoch; on a resumed fit the first epoch was planned as epoch 0. The
    batch sampler takes the epoch from the fit loop instead."""

    def run(max_epochs, **kwargs):
        torch.manual_seed(0)
        dm = make_mixed(real_fraction=schedule, n_real=96, synth_sizes={"g1": 60}, holdout=0.25, batch_size=8,
                        samples_per_epoch=64, seed=3, num_workers=2)
        model = TinyMLP()
        trainer = make_trainer(max_epochs=max_epochs, ckpt_dir=kwargs.pop("ckpt_dir", None))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's note that the checkpoint's ModelCheckpoint is not listed
            trainer.fit(model, datamodule=dm, **kwargs)
        return model.seen

    reference = run(3)
    assert reference[1] != reference[0]
    run(1, ckpt_dir=tmp_path)
    resumed = run(3, ckpt_path=tmp_path / "epoch=0.ckpt")
    assert sorted(resumed) == [1, 2] and all(resumed[e] == reference[e] for e in (1, 2))
