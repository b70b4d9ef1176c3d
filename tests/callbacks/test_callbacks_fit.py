"""RatioMonitor + HeldOutRealCheck + CollapseGuard in full fits: logged keys, measured fractions, batch formats."""
from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pytorch_lightning.loggers import CSVLogger

from collapse_guard import CollapseGuard, HeldOutRealCheck, MixedDataModule, RatioMonitor, Rule
from collapse_guard._compat import Callback

from cg_testing import SYNTH_BASE, RealDM, TinyMLP, dict_collate, id_dataset, make_mixed, make_trainer, source_of_id

HELDOUT_KEYS = [
    "loss", "acc", "entropy", "eff_classes", "eff_classes_ratio", "label_tv", "label_kl",
    "worst_class_recall", "calibration_error",
]
SOURCES = ["real", "reserve", "g1", "g2"]
DOCUMENTED_KEYS = (
    ["collapse/real_fraction", "collapse/real_fraction_cumulative", "collapse/real_fraction_target"]
    + [f"collapse/share/{s}" for s in SOURCES]
    + [f"collapse/heldout_real/{k}" for k in HELDOUT_KEYS]
    + ["collapse/heldout_synthetic/loss", "collapse/heldout_synthetic/acc", "collapse/gap/loss", "collapse/gap/acc"]
    + ["collapse/guard/state", "collapse/guard/events"]
)


def quiet_guard():
    return CollapseGuard(rules=[Rule("collapse/heldout_real/acc", mode="max", threshold=-1.0, action="stop")])


def two_source_dm(**kwargs):
    return make_mixed(synth_sizes={"g1": 40, "g2": 40}, **kwargs)


@torch.no_grad()
def direct_indicators(model, dataset, split=lambda b: (b[0], b[1])):
    model.eval()
    x, y = split(next(iter(DataLoader(dataset, batch_size=len(dataset), collate_fn=getattr(dataset, "collate", None)))))
    logits = model(x)
    return {"loss": float(F.cross_entropy(logits, y)), "acc": float((logits.argmax(-1) == y).double().mean())}


def test_full_fit_logs_every_documented_key():
    dm = two_source_dm(real_fraction=0.3, reserve=0.25)
    check, ratio, guard = HeldOutRealCheck(), RatioMonitor(), quiet_guard()
    modes = []

    class Spy(Callback):  # after the check: the model is back in training mode
        def on_train_epoch_end(self, trainer, pl_module):
            modes.append(pl_module.training)

    trainer = make_trainer(max_epochs=2, callbacks=[guard, check, ratio, Spy()])
    model = TinyMLP()
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    missing = [k for k in DOCUMENTED_KEYS if k not in metrics]
    assert not missing
    values = {k: float(metrics[k]) for k in DOCUMENTED_KEYS}
    assert all(math.isfinite(v) for v in values.values())
    for k in ("acc", "worst_class_recall", "calibration_error", "label_tv"):
        assert 0.0 <= values[f"collapse/heldout_real/{k}"] <= 1.0
    assert values["collapse/heldout_real/eff_classes_ratio"] > 0.0
    assert 1.0 <= values["collapse/heldout_real/eff_classes"] <= 3.0 + 1e-9
    assert 0.0 <= values["collapse/heldout_real/entropy"] <= math.log(3) + 1e-9
    assert sum(values[f"collapse/share/{s}"] for s in SOURCES) == pytest.approx(1.0)
    assert values["collapse/share/real"] + values["collapse/share/reserve"] == pytest.approx(
        values["collapse/real_fraction"]
    )
    for k in ("loss", "acc"):
        gap = values[f"collapse/heldout_synthetic/{k}"] - values[f"collapse/heldout_real/{k}"]
        assert values[f"collapse/gap/{k}"] == pytest.approx(gap, abs=1e-6)
    # the logged held-out values are the model's on the held-out sets after the last epoch
    real = direct_indicators(model, dm.heldout_real)
    synth = direct_indicators(model, dm.heldout_synthetic)
    assert values["collapse/heldout_real/loss"] == pytest.approx(real["loss"], rel=1e-5)
    assert values["collapse/heldout_real/acc"] == pytest.approx(real["acc"], abs=1e-6)
    assert values["collapse/heldout_synthetic/loss"] == pytest.approx(synth["loss"], rel=1e-5)
    assert values["collapse/heldout_synthetic/acc"] == pytest.approx(synth["acc"], abs=1e-6)
    assert modes == [True, True]


def test_measured_real_fraction_matches_the_schedule():
    schedule = lambda e: [0.8, 0.55, 0.3, 0.1][e]  # noqa: E731
    bs = 8
    dm = two_source_dm(real_fraction=schedule, batch_size=bs, samples_per_epoch=72)
    ratio = RatioMonitor()
    make_trainer(max_epochs=4, callbacks=[ratio]).fit(TinyMLP(), datamodule=dm)
    assert [h["epoch"] for h in ratio.history] == [0, 1, 2, 3]
    cumulative_real = cumulative = 0
    for h in ratio.history:
        target = schedule(h["epoch"])
        assert h["real_fraction_target"] == target
        assert abs(h["real_fraction"] - target) <= 1 / bs
        n = sum(h["samples"].values())
        assert n == 72
        cumulative_real += h["samples"]["real"] + h["samples"]["reserve"]
        cumulative += n
        assert h["real_fraction_cumulative"] == pytest.approx(cumulative_real / cumulative)
        assert h["real_fraction"] == pytest.approx((h["samples"]["real"] + h["samples"]["reserve"]) / n)


def test_ratio_monitor_warns_below_min_real_fraction():
    dm = make_mixed(real_fraction=0.25)
    with pytest.warns(UserWarning, match="below min_real_fraction=0.5"):
        make_trainer(max_epochs=1, callbacks=[RatioMonitor(min_real_fraction=0.5)]).fit(TinyMLP(), datamodule=dm)
    with pytest.raises(ValueError, match="min_real_fraction"):
        RatioMonitor(min_real_fraction=2.0)


@pytest.mark.parametrize("callback", [RatioMonitor, HeldOutRealCheck])
def test_measuring_callbacks_need_a_mixed_datamodule(callback):
    trainer = make_trainer(max_epochs=1, callbacks=[callback()])
    with pytest.raises(TypeError, match="MixedDataModule"):
        trainer.fit(TinyMLP(), train_dataloaders=DataLoader(id_dataset(16, 0), batch_size=8))


def dict_dm():
    real = RealDM(n_train=60, n_val=24, batch_size=8, collate_fn=dict_collate)
    synthetic = {"g1": id_dataset(40, SYNTH_BASE, label=0)}
    return MixedDataModule(real, synthetic, real_fraction=0.5, holdout="val", reserve=0.2, samples_per_epoch=64)


def test_heldout_check_with_dict_batches_and_a_custom_batch_fn():
    dm = dict_dm()
    check = HeldOutRealCheck(batch_fn=lambda b: (b["pixels"], b["label"]))
    trainer = make_trainer(max_epochs=2, callbacks=[check, RatioMonitor()], limit_val_batches=0)
    model = TinyMLP()
    trainer.fit(model, datamodule=dm)
    # the model itself received the user's dict batches
    assert model.seen[0] and model.seen[1]
    assert set(check.last) >= {f"collapse/heldout_real/{k}" for k in HELDOUT_KEYS}
    real = direct_indicators(model, dm.heldout_real)
    assert check.last["collapse/heldout_real/acc"] == pytest.approx(real["acc"], abs=1e-6)
    assert check.last["collapse/heldout_real/loss"] == pytest.approx(real["loss"], rel=1e-5)
    assert "collapse/gap/acc" in check.last


def test_default_batch_fn_rejects_unknown_dict_keys():
    dm = dict_dm()  # keys "pixels", "label", "id": "pixels" is not a known input key
    trainer = make_trainer(max_epochs=1, callbacks=[HeldOutRealCheck()])
    with pytest.raises(ValueError, match="batch_fn"):
        trainer.fit(TinyMLP(), datamodule=dm)


def test_every_n_epochs_and_max_batches():
    dm = two_source_dm()
    check = HeldOutRealCheck(every_n_epochs=2, max_batches=1, synthetic=False)
    seen = []

    class Spy(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append(dict(check.last))

    make_trainer(max_epochs=4, callbacks=[check, Spy()]).fit(TinyMLP(), datamodule=dm)
    assert seen[0] == {} and seen[1] and seen[2] == seen[1] and seen[3] != seen[1]
    assert not any(k.startswith("collapse/heldout_synthetic") for k in seen[1])
    with pytest.raises(ValueError, match="every_n_epochs"):
        HeldOutRealCheck(every_n_epochs=0)


def synthetic_ids_per_check(check_kwargs, max_epochs=2):
    """Fit with a HeldOutRealCheck that records the ids of the held-out synthetic samples it classifies at each
    check; returns ``(ids per check, datamodule, check, model)``."""
    dm = make_mixed(synth_sizes={"g1": 200, "g2": 200}, synthetic_holdout=0.25)
    seen: dict[int, list[int]] = {}

    def forward_fn(pl_module, inputs):
        ids = [int(round(float(v))) for v in inputs[:, 0]]
        if ids and min(ids) >= SYNTH_BASE:
            seen.setdefault(pl_module.current_epoch, []).extend(ids)
        return pl_module(inputs)

    check, model = HeldOutRealCheck(forward_fn=forward_fn, **check_kwargs), TinyMLP()
    make_trainer(max_epochs=max_epochs, callbacks=[check]).fit(model, datamodule=dm)
    return [seen[e] for e in sorted(seen)], dm, check, model


def test_synthetic_samples_caps_the_heldout_synthetic_pass_to_a_fixed_subset():
    seen, dm, check, model = synthetic_ids_per_check({"synthetic_samples": 30})
    everything = sorted(int(round(float(dm.heldout_synthetic[i][0][0]))) for i in range(len(dm.heldout_synthetic)))
    assert len(everything) == 100
    assert len(seen) == 2 and seen[0] == seen[1]  # the same samples at every check
    assert len(seen[0]) == len(set(seen[0])) == 30 and set(seen[0]) <= set(everything)
    assert seen[0] == sorted(seen[0])  # in held-out order
    # a loader built again gives the same subset, and the logged indicators are the model's on exactly that subset
    subset = dm.heldout_synthetic_dataloader(max_samples=30)
    assert [int(round(float(v))) for b in subset for v in b[0][:, 0]] == seen[0]
    synth = direct_indicators(model, subset.dataset)
    assert check.last["collapse/heldout_synthetic/acc"] == pytest.approx(synth["acc"], abs=1e-6)
    assert check.last["collapse/heldout_synthetic/loss"] == pytest.approx(synth["loss"], rel=1e-5)
    # None (and any cap at or above the set's size) measures every held-out synthetic sample
    for cap in (None, 100, 10_000):
        seen_all, _, _, _ = synthetic_ids_per_check({"synthetic_samples": cap}, max_epochs=1)
        assert seen_all[0] == everything


def test_heldout_loaders_are_built_once_per_fit_and_keep_their_workers():
    """The held-out loaders are built at the first check and reused (a loader with persistent workers keeps them,
    also after a check that stopped early at ``max_batches``); the values are those of a fit without workers."""
    histories, calls = [], []
    for workers in (0, 1):
        dm = two_source_dm(num_workers=workers)
        build = dm.heldout_real_dataloader

        def counted(*args, **kwargs):
            calls.append(workers)
            return build(*args, **kwargs)

        dm.heldout_real_dataloader = counted
        check = HeldOutRealCheck(max_batches=1)
        loaders = []

        class Spy(Callback):
            def on_train_epoch_end(self, trainer, pl_module):
                loaders.append(check._real[1])  # the held-out real loader

        torch.manual_seed(0)
        make_trainer(max_epochs=3, callbacks=[check, Spy()]).fit(TinyMLP(), datamodule=dm)
        assert len(loaders) == 3 and loaders[0] is loaders[1] is loaders[2]
        assert loaders[0].persistent_workers == (workers > 0)
        assert check._loaders is None  # let go at the end of the fit
        histories.append(check.history)
    assert calls == [0, 1]  # one loader per fit
    assert histories[0] == histories[1] and len(histories[0]) == 3


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "512"])
def test_synthetic_samples_must_be_a_positive_integer_or_none(bad):
    with pytest.raises(ValueError, match="synthetic_samples"):
        HeldOutRealCheck(synthetic_samples=bad)


def test_synthetic_samples_below_the_number_of_ranks_is_an_error_at_setup():
    from types import SimpleNamespace

    dm = make_mixed(synth_sizes={"g1": 200}, synthetic_holdout=0.25)
    dm.setup("fit")
    with pytest.raises(ValueError, match="synthetic_samples=2.* 3 ranks"):
        HeldOutRealCheck(synthetic_samples=2).setup(SimpleNamespace(world_size=3, datamodule=dm, callbacks=[]), None, "fit")
    HeldOutRealCheck(synthetic_samples=3).setup(SimpleNamespace(world_size=3, datamodule=dm, callbacks=[]), None, "fit")
    HeldOutRealCheck(synthetic_samples=2, synthetic=False).setup(SimpleNamespace(world_size=3, datamodule=dm, callbacks=[]), None,
                                                                 "fit")


def test_capped_heldout_synthetic_subset_is_sharded_across_ranks_once():
    from types import SimpleNamespace

    dm = make_mixed(synth_sizes={"g1": 200, "g2": 200}, synthetic_holdout=0.25)
    dm.setup("fit")
    ids = lambda loader: [int(round(float(v))) for b in loader for v in b[0][:, 0]]  # noqa: E731
    subset = ids(dm.heldout_synthetic_dataloader(max_samples=25))
    assert len(subset) == len(set(subset)) == 25 and subset == sorted(subset)
    assert ids(dm.heldout_synthetic_dataloader(max_samples=25)) == subset  # seeded: the same at every call
    assert set(subset) <= set(ids(dm.heldout_synthetic_dataloader()))
    shards = []
    for rank in range(3):
        dm.trainer = SimpleNamespace(world_size=3, global_rank=rank)
        shards.append(ids(dm.heldout_synthetic_dataloader(max_samples=25)))
        assert ids(dm.heldout_synthetic_dataloader(max_samples=25, shard=False)) == subset
    assert sorted(i for shard in shards for i in shard) == subset  # every sample of the subset on exactly one rank
    assert [len(shard) for shard in shards] == [9, 8, 8] and shards[1] == subset[1::3]


def test_training_synthetic_loader_reads_a_seeded_sharded_subset_of_the_training_pools_with_the_dm_workers():
    """The feature indicators' training synthetic samples: only training-pool samples (never held-out synthetic or
    real ones), the same seeded subset at every call, each on exactly one rank, through the datamodule's workers."""
    from types import SimpleNamespace

    dm = make_mixed(synth_sizes={"g1": 200, "g2": 200}, synthetic_holdout=0.25, num_workers=1)
    dm.setup("fit")
    ids = lambda loader: [int(round(float(v))) for b in loader for v in b[0][:, 0]]  # noqa: E731
    pools = ids(dm.synthetic_training_dataloader())
    assert len(pools) == len(set(pools)) == 300  # 400 synthetic samples, 25% held out
    assert {source_of_id(i) for i in pools} == {"g1", "g2"}
    assert not set(pools) & set(ids(dm.heldout_synthetic_dataloader()))
    loader = dm.synthetic_training_dataloader(max_samples=25)
    assert loader.num_workers == 1 and loader.persistent_workers
    subset = ids(loader)
    assert len(subset) == len(set(subset)) == 25 and set(subset) <= set(pools)
    assert ids(dm.synthetic_training_dataloader(max_samples=25)) == subset  # seeded: the same at every call
    shards = []
    for rank in range(3):
        dm.trainer = SimpleNamespace(world_size=3, global_rank=rank)
        shards.append(ids(dm.synthetic_training_dataloader(max_samples=25)))
    assert sorted(i for shard in shards for i in shard) == sorted(subset)
    assert shards[1] == subset[1::3]


def test_csv_logger_receives_the_keys(tmp_path):
    dm = two_source_dm()
    logger = CSVLogger(tmp_path, name="run", version=0)
    trainer = make_trainer(max_epochs=2, callbacks=[RatioMonitor(), HeldOutRealCheck(), quiet_guard()],
                           logger=logger, log_every_n_steps=1)
    trainer.fit(TinyMLP(), datamodule=dm)
    path = tmp_path / "run" / "version_0" / "metrics.csv"
    with open(path) as f:
        rows = list(csv.DictReader(f))
    header = set(rows[0])
    assert not [k for k in DOCUMENTED_KEYS if k not in header]
    epochs = {int(r["epoch"]) for r in rows if r["collapse/heldout_real/acc"]}
    assert epochs == {0, 1}
    for r in rows:
        if r["collapse/real_fraction"]:
            assert 0.0 <= float(r["collapse/real_fraction"]) <= 1.0


def test_heldout_checks_do_not_add_to_training_counts():
    dm = two_source_dm(batch_size=8, samples_per_epoch=64)
    ratio = RatioMonitor()
    model = TinyMLP()
    make_trainer(max_epochs=3, callbacks=[HeldOutRealCheck(), ratio, quiet_guard()]).fit(model, datamodule=dm)
    assert [sum(h["samples"].values()) for h in ratio.history] == [64, 64, 64]
    assert sum(dm.samples_by_source().values()) == 3 * 64
    assert sum(len(v) for v in model.seen.values()) == 3 * 64
    # and validation batches are not counted either
    dm = MixedDataModule(RealDM(), {"g1": id_dataset(40, SYNTH_BASE)}, holdout="val", samples_per_epoch=32)

    class WithVal(TinyMLP):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    ratio = RatioMonitor()
    make_trainer(max_epochs=2, callbacks=[ratio, HeldOutRealCheck()], limit_val_batches=None,
                 num_sanity_val_steps=2).fit(WithVal(), datamodule=dm)
    assert [sum(h["samples"].values()) for h in ratio.history] == [32, 32]
    assert sum(dm.samples_by_source().values()) == 64


def test_heldout_checks_do_not_count_when_an_epoch_is_cut_short():
    # with limit_train_batches the plan has batches left at the epoch end: held-out batches must not take them
    dm = two_source_dm(batch_size=8, samples_per_epoch=64)
    ratio, model = RatioMonitor(), TinyMLP()
    make_trainer(max_epochs=2, callbacks=[HeldOutRealCheck(), ratio], limit_train_batches=3).fit(model, datamodule=dm)
    assert [sum(h["samples"].values()) for h in ratio.history] == [24, 24]
    assert sum(dm.samples_by_source().values()) == 48 == sum(len(v) for v in model.seen.values())
