"""MixedDataModule: splits, the user's batch format, inject() without reloading, counts, errors, state."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset


from collapse_guard import MixedDataModule
from collapse_guard._compat import Callback

from cg_testing import (
    RESERVE_BASE,
    SYNTH_BASE,
    RealDM,
    TinyMLP,
    dict_collate,
    id_dataset,
    ids_of,
    make_mixed,
    make_trainer,
    source_of_id,
)


def all_ids(dataset) -> list[int]:
    return [int(round(float(dataset[i][0][0]))) for i in range(len(dataset))]


def run_epoch(loader, epoch: int) -> list:
    loader.batch_sampler.sampler.set_epoch(epoch)
    return list(loader)


# -- held-out real and reserve -----------------------------------------------------------------------------------
def test_holdout_fraction_is_disjoint_from_training_pool_and_reserve():
    dm = make_mixed(n_real=80, holdout=0.25, reserve=0.25)
    dm.setup("fit")
    mixer = dm.mixer
    held = set(all_ids(dm.heldout_real))
    pool = set(mixer.base_real_pool.tolist())
    reserve = set(mixer.reserve_order.tolist())
    assert len(held) == 20 and len(reserve) == 15 and len(pool) == 45
    assert not held & pool and not held & reserve and not pool & reserve
    assert held | pool | reserve == set(range(80))  # real ids equal their dataset index here
    # the loaders agree: nothing held out is ever drawn, even after the whole reserve is injected
    loader = dm.train_dataloader()
    drawn = set()
    for epoch in range(3):
        for batch in run_epoch(loader, epoch):
            drawn.update(ids_of(batch))
        if epoch == 0:
            dm.inject(num_samples=15, min_real_fraction=1.0)  # 64 real draws an epoch from 60
    assert not drawn & held
    assert reserve <= drawn  # the reserve did come into play
    heldout_loader_ids = {i for b in dm.heldout_real_dataloader() for i in ids_of(b)}
    assert heldout_loader_ids == held


def test_holdout_dataset_keeps_all_real_for_training_and_reserve():
    held = id_dataset(12, 50_000)
    dm = make_mixed(n_real=40, holdout=held, reserve=0.5)
    dm.setup("fit")
    assert dm.heldout_real is held
    pool, reserve = set(dm.mixer.base_real_pool.tolist()), set(dm.mixer.reserve_order.tolist())
    assert len(pool) == 20 and len(reserve) == 20 and pool | reserve == set(range(40))


def test_reserve_dataset_is_injected_from_its_own_samples():
    reserve_ds = id_dataset(10, RESERVE_BASE)
    dm = make_mixed(n_real=40, holdout=0.25, reserve=reserve_ds, real_fraction=0.5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    before = {source_of_id(i) for b in run_epoch(loader, 0) for i in ids_of(b)}
    assert "reserve_ds" not in before
    dm.inject(num_samples=10)
    after = Counter(source_of_id(i) for b in run_epoch(loader, 1) for i in ids_of(b))
    assert after["reserve_ds"] > 0


def test_holdout_val_takes_the_real_datamodules_validation_set():
    real = RealDM(n_train=60, n_val=20)
    dm = MixedDataModule(real, {"g1": id_dataset(60, SYNTH_BASE)}, real_fraction=0.5, holdout="val", reserve=0.2)
    dm.setup("fit")
    assert dm.heldout_real is real.val_set
    held = set(all_ids(dm.heldout_real))
    loader = dm.train_dataloader()
    drawn = {i for b in run_epoch(loader, 0) for i in ids_of(b)}
    dm.inject(fraction_of_reserve=1.0, min_real_fraction=1.0)  # 96 real draws from 60
    drawn |= {i for b in run_epoch(loader, 1) for i in ids_of(b)}
    reserve_ids = set(dm.mixer.reserve_order.tolist())
    assert not held & drawn and not held & reserve_ids and reserve_ids <= drawn
    # the Trainer's validation loop sees the user's own validation loader
    assert dm.val_dataloader().dataset is real.val_set


# -- the user's batch format ----------------------------------------------------------------------------------
def test_batches_keep_the_users_collate_and_batch_size():
    real = RealDM(n_train=60, n_val=20, batch_size=6, collate_fn=dict_collate)
    dm = MixedDataModule(real, {"g1": id_dataset(60, SYNTH_BASE)}, real_fraction=0.5, holdout="val", seed=1)
    dm.setup("fit")
    batches = run_epoch(dm.train_dataloader(), 0)
    assert batches
    for batch in batches:
        assert isinstance(batch, dict)
        assert set(batch) == {"pixels", "label", "id", "collated_by"}
        assert batch["collated_by"] == "dict_collate"
        assert batch["pixels"].shape == (6, 4) and batch["label"].shape == (6,)
        kinds = Counter(source_of_id(i) for i in batch["id"].tolist())
        assert kinds["real"] == 3 and kinds["g1"] == 3
    # held-out loaders use the same collate
    held = next(iter(dm.heldout_real_dataloader()))
    assert isinstance(held, dict) and held["collated_by"] == "dict_collate"
    synth = next(iter(dm.heldout_synthetic_dataloader()))
    assert isinstance(synth, dict) and all(source_of_id(i) == "g1" for i in synth["id"].tolist())


def test_explicit_collate_and_batch_size_override_the_real_datamodule():
    real = RealDM(batch_size=6)
    dm = MixedDataModule(real, id_dataset(60, SYNTH_BASE), holdout="val", batch_size=10, collate_fn=dict_collate)
    dm.setup("fit")
    batch = run_epoch(dm.train_dataloader(), 0)[0]
    assert isinstance(batch, dict) and batch["pixels"].shape == (10, 4)


# -- inject() ---------------------------------------------------------------------------------------------------
def test_inject_takes_effect_next_epoch_on_the_same_loader():
    dm = make_mixed(real_fraction=0.25, n_real=80, holdout=0.25, reserve=0.25, batch_size=8, samples_per_epoch=96)
    dm.setup("fit")
    loader = dm.train_dataloader()
    reserve = set(dm.mixer.reserve_order.tolist())

    def shares(batches):
        ids = [i for b in batches for i in ids_of(b)]
        real = sum(source_of_id(i) == "real" for i in ids)
        return real / len(ids), {i for i in ids if i in reserve}

    share0, reserve0 = shares(run_epoch(loader, 0))
    assert share0 == pytest.approx(0.25, abs=1 / 8) and not reserve0
    record = dm.inject(num_samples=10, min_real_fraction=0.75, reason="test")
    assert record["samples"] == 10 and record["real_fraction_floor"] == 0.75 and record["reserve_remaining"] == 5
    assert record["reason"] == "test"
    share1, reserve1 = shares(run_epoch(loader, 1))  # the same DataLoader object, not reloaded
    assert share1 == pytest.approx(0.75, abs=1 / 8)
    assert reserve1 and reserve1 <= set(dm.mixer.reserve_order[:10].tolist())
    # the floor never lowers the fraction; a later schedule value above it wins
    dm.inject(min_real_fraction=0.5)
    assert dm.mixer.target_fraction(5) == 0.75


def test_inject_fraction_of_reserve_and_spent_reserve():
    dm = make_mixed(n_real=80, holdout=0.25, reserve=0.25)
    dm.setup("fit")
    assert dm.reserve_remaining == 15
    assert dm.inject(fraction_of_reserve=0.4)["samples"] == 6
    assert dm.inject(num_samples=100)["samples"] == 9  # only what is left
    assert dm.reserve_remaining == 0
    with pytest.raises(ValueError, match="reserve"):
        dm.inject(num_samples=1)
    # raising the fraction alone still works on a spent reserve
    assert dm.inject(min_real_fraction=1.0)["real_fraction_floor"] == 1.0


@pytest.mark.parametrize("reserve", [0.0, 0])
def test_inject_on_empty_reserve_raises(reserve):
    dm = make_mixed(reserve=reserve)
    dm.setup("fit")
    with pytest.raises(ValueError, match="reserve"):
        dm.inject(num_samples=5)
    with pytest.raises(ValueError, match="reserve"):
        dm.inject(fraction_of_reserve=0.5)


def test_inject_argument_errors():
    dm = make_mixed()
    with pytest.raises(RuntimeError, match="setup"):
        dm.inject(num_samples=1)
    dm.setup("fit")
    with pytest.raises(ValueError, match="num_samples"):
        dm.inject(num_samples=1, fraction_of_reserve=0.5)
    with pytest.raises(ValueError, match="fraction_of_reserve"):
        dm.inject(fraction_of_reserve=1.5)
    with pytest.raises(ValueError, match="real_fraction"):
        dm.inject(min_real_fraction=1.5)


# -- counts, in a real fit ---------------------------------------------------------------------------------------
class CountRecorder(Callback):
    """Records the mixer's per-source counts at each epoch end, and injects after epoch 0."""

    def __init__(self, inject_after: int | None = 0):
        self.epoch_counts, self.total_counts, self.inject_after = [], [], inject_after

    def on_train_epoch_end(self, trainer, pl_module):
        dm = trainer.datamodule
        self.epoch_counts.append(dm.mixer.epoch_counts.clone())
        self.total_counts.append(dm.mixer.total_counts.clone())
        if trainer.current_epoch == self.inject_after:
            dm.inject(num_samples=dm.reserve_remaining, min_real_fraction=0.75)


def test_counts_per_source_match_what_the_model_received():
    calls = []

    class Counted(MixedDataModule):
        def train_dataloader(self):
            calls.append(1)
            return super().train_dataloader()

    synthetic = {"g1": id_dataset(40, SYNTH_BASE, label=0), "g2": id_dataset(40, 2 * SYNTH_BASE, label=1)}
    dm = Counted(id_dataset(80, 0), synthetic, real_fraction=0.25, holdout=0.25, reserve=0.25,
                 batch_size=8, samples_per_epoch=64)
    rec, model = CountRecorder(), TinyMLP()
    make_trainer(max_epochs=3, callbacks=[rec]).fit(model, datamodule=dm)
    assert len(calls) == 1  # the injection needed no reload
    names = dm.mixer.names
    assert names == ["real", "reserve", "g1", "g2"]
    reserve = set(dm.mixer.reserve_order.tolist())
    running = torch.zeros(4, dtype=torch.long)
    for epoch in range(3):
        seen = Counter()
        for i in model.seen[epoch]:
            kind = source_of_id(i)
            seen["reserve" if kind == "real" and i in reserve else kind] += 1
        expect = torch.tensor([seen[n] for n in names])
        assert torch.equal(rec.epoch_counts[epoch], expect), epoch
        running += expect
        assert torch.equal(rec.total_counts[epoch], running)
        assert int(expect.sum()) == 64
    assert rec.epoch_counts[0][1] == 0 and rec.epoch_counts[1][1] > 0  # reserve only after the injection
    assert (rec.epoch_counts[0][:2].sum() / 64) == pytest.approx(0.25, abs=1 / 8)
    assert (rec.epoch_counts[1][:2].sum() / 64) == pytest.approx(0.75, abs=1 / 8)
    assert torch.equal(dm.mixer.total_counts, running)


# -- errors -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_real_fraction_out_of_range(value):
    with pytest.raises(ValueError, match="real_fraction"):
        make_mixed(real_fraction=value)


def test_schedule_out_of_range_at_some_epoch():
    dm = make_mixed(real_fraction=lambda e: 0.5 if e < 3 else 1.5)
    with pytest.raises(ValueError, match=r"`real_fraction` at epoch 3"):
        dm.setup("fit")


def test_schedule_checked_over_the_trainers_epochs():
    dm = make_mixed(real_fraction=lambda e: 0.5 if e < 3 else 1.5)
    # a fit of three epochs never reaches the bad value
    make_trainer(max_epochs=3).fit(TinyMLP(), datamodule=dm)
    dm = make_mixed(real_fraction=lambda e: 0.5 if e < 3 else 1.5)
    with pytest.raises(ValueError, match="real_fraction"):
        make_trainer(max_epochs=5).fit(TinyMLP(), datamodule=dm)


def test_empty_real():
    empty = TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    dm = MixedDataModule(empty, id_dataset(20, SYNTH_BASE), holdout=0.2)
    with pytest.raises(ValueError, match="`real`"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="`real`"):
        MixedDataModule(None, id_dataset(20, SYNTH_BASE))


def test_empty_real_datamodule():
    class EmptyTrain(RealDM):
        def train_dataloader(self):
            return DataLoader(self.train_set, batch_size=self.bs)  # shuffle=False: torch refuses to shuffle nothing

    real = EmptyTrain(n_train=0, n_val=10)
    dm = MixedDataModule(real, id_dataset(20, SYNTH_BASE), holdout="val")
    with pytest.raises(ValueError, match="`real`"):
        dm.setup("fit")


def test_empty_synthetic_source():
    empty = TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    dm = make_mixed(synth_sizes={"g1": 20})
    dm.synthetic = {"g1": id_dataset(20, SYNTH_BASE), "gen_empty": empty}
    with pytest.raises(ValueError, match=r"synthetic\['gen_empty'\]"):
        dm.setup("fit")


def test_synthetic_source_emptied_by_holdout():
    dm = MixedDataModule(id_dataset(40, 0), {"tiny": id_dataset(1, SYNTH_BASE)}, holdout=0.2, synthetic_holdout=0.9)
    with pytest.raises(ValueError, match="tiny"):
        dm.setup("fit")


def test_holdout_val_with_plain_dataset():
    with pytest.raises(ValueError, match="holdout"):
        MixedDataModule(id_dataset(40, 0), id_dataset(20, SYNTH_BASE), holdout="val")


def test_fraction_below_one_without_synthetic():
    dm = MixedDataModule(id_dataset(40, 0), None, real_fraction=0.5, holdout=0.2)
    with pytest.raises(ValueError, match="synthetic"):
        dm.setup("fit")
    ok = MixedDataModule(id_dataset(40, 0), None, real_fraction=1.0, holdout=0.2, batch_size=4)
    ok.setup("fit")
    assert all(source_of_id(i) == "real" for b in run_epoch(ok.train_dataloader(), 0) for i in ids_of(b))


class ShapeDataset(Dataset):
    def __init__(self, n, dim):
        self.n, self.dim = n, dim

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(self.dim), torch.tensor(0)


def test_synthetic_that_does_not_collate_with_real():
    dm = MixedDataModule(id_dataset(40, 0), {"wide": ShapeDataset(20, 7)}, holdout=0.2)
    with pytest.raises(ValueError, match="wide.*collat|collat.*wide"):
        dm.setup("fit")


def test_synthetic_dict_samples_do_not_collate_with_tuples():
    class Dicts(Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return {"x": torch.zeros(4), "y": torch.tensor(0)}

    dm = MixedDataModule(id_dataset(40, 0), {"dicts": Dicts()}, holdout=0.2)
    with pytest.raises(ValueError, match="dicts"):
        dm.setup("fit")


@pytest.mark.parametrize(
    "kwargs, exc, name",
    [
        (dict(holdout=1.0), ValueError, "holdout"),
        (dict(holdout=-0.1), ValueError, "holdout"),
        (dict(holdout="train"), TypeError, "holdout"),
        (dict(holdout=True), TypeError, "holdout"),
        (dict(reserve=1.0), ValueError, "reserve"),
        (dict(reserve="val"), TypeError, "reserve"),
        (dict(synthetic_holdout=1.0), ValueError, "synthetic_holdout"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(samples_per_epoch=-5), ValueError, "samples_per_epoch"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, exc, name):
    with pytest.raises(exc, match=f"`{name}`"):
        make_mixed(**kwargs)


def test_bad_sources_and_weights():
    with pytest.raises(ValueError, match="reserved"):
        MixedDataModule(id_dataset(40, 0), {"real": id_dataset(10, SYNTH_BASE)}, holdout=0.2).setup("fit")
    with pytest.raises(TypeError, match="`real`"):
        MixedDataModule("path/to/real", id_dataset(10, SYNTH_BASE), holdout=0.2).setup("fit")
    with pytest.raises(TypeError, match=r"synthetic\['g'\]"):
        MixedDataModule(id_dataset(40, 0), {"g": "generated.jsonl"}, holdout=0.2).setup("fit")
    with pytest.raises(TypeError, match=r"synthetic\['g'\]"):
        MixedDataModule(id_dataset(40, 0), {"g": 12}, holdout=0.2).setup("fit")
    with pytest.raises(ValueError, match="synthetic_weights"):
        make_mixed(synthetic_weights={"nope": 1.0}).setup("fit")
    with pytest.raises(ValueError, match="synthetic_weights"):
        make_mixed(synthetic_weights={"g1": 0.0}).setup("fit")


def test_synthetic_weights_through_the_datamodule():
    dm = make_mixed(real_fraction=0.0, synth_sizes={"g1": 50, "g2": 50}, synthetic_holdout=0.0,
                    synthetic_weights={"g1": 3.0, "g2": 1.0}, batch_size=8, samples_per_epoch=80)
    dm.setup("fit")
    kinds = Counter(source_of_id(i) for b in run_epoch(dm.train_dataloader(), 0) for i in ids_of(b))
    assert kinds == {"g1": 60, "g2": 20}


# -- state_dict --------------------------------------------------------------------------------------------------
def test_state_dict_round_trip_restores_cursor_floor_counts():
    dm = make_mixed(real_fraction=0.25, reserve=0.25, seed=5)
    dm.setup("fit")
    loader = dm.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(0)
    for _ in loader.batch_sampler:
        dm.mixer.count_next_batch()
    dm.inject(num_samples=7, min_real_fraction=0.6, reason="why")
    state = dm.state_dict()
    assert state["reserve_cursor"] == 7 and state["real_fraction_floor"] == 0.6
    assert sum(state["total_counts"]) == 64

    for before_setup in (True, False):
        other = make_mixed(real_fraction=0.25, reserve=0.25, seed=5)
        if before_setup:
            other.load_state_dict(state)
            other.setup("fit")
        else:
            other.setup("fit")
            other.load_state_dict(state)
        m = other.mixer
        assert m.reserve_cursor == 7 and m.reserve_remaining == 8 and m.real_fraction_floor == 0.6
        assert torch.equal(m.total_counts, dm.mixer.total_counts)
        assert m.injections == dm.mixer.injections and m.injections[0]["reason"] == "why"
        assert torch.equal(m.real_pool, dm.mixer.real_pool)
        # the resumed module replays the same next epoch
        a = dm.train_dataloader()
        b = other.train_dataloader()
        a.batch_sampler.sampler.set_epoch(1)
        b.batch_sampler.sampler.set_epoch(1)
        assert list(a.batch_sampler) == list(b.batch_sampler)
    # a state_dict is plain data, and a fresh module reports its pending state
    fresh = make_mixed()
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state


def test_load_state_dict_with_other_sources_raises():
    dm = make_mixed(synth_sizes={"g1": 30})
    dm.setup("fit")
    other = make_mixed(synth_sizes={"other": 30})
    other.setup("fit")
    with pytest.raises(ValueError, match="sources"):
        other.load_state_dict(dm.state_dict())


def test_no_real_training_samples_left_is_an_error_even_with_a_reserve():
    from collapse_guard import MixedDataModule

    real = id_dataset(10, 0)
    synthetic = id_dataset(40, 1000)
    dm = MixedDataModule(real, {"g": synthetic}, real_fraction=0.5, holdout=0.5, reserve=0.99)
    with pytest.raises(ValueError, match="no real training"):
        dm.setup("fit")


@pytest.mark.parametrize("stage", ["test", "predict"])
def test_test_and_predict_pass_through_to_the_real_datamodule(stage):
    """``trainer.test`` / ``trainer.predict`` with the wrapper read the user's own loaders, untouched."""
    from collapse_guard import MixedDataModule
    from cg_testing import TinyMLP, id_dataset, make_trainer, RealDM

    class WithTestAndPredict(RealDM):
        def test_dataloader(self):
            return DataLoader(id_dataset(12, 7000), batch_size=4)

        def predict_dataloader(self):
            return DataLoader(id_dataset(10, 8000), batch_size=5)

    class Predicts(TinyMLP):
        def test_step(self, batch, batch_idx):
            self.log("test_seen", float(batch[0].shape[0]), reduce_fx="sum")

        def predict_step(self, batch, batch_idx):
            return self(batch[0])

    dm = MixedDataModule(WithTestAndPredict(), {"g": id_dataset(20, 9000, label=0)}, real_fraction=0.5)
    trainer = make_trainer(max_epochs=1)
    model = Predicts()
    if stage == "test":
        assert trainer.test(model, datamodule=dm, verbose=False)[0]["test_seen"] == 12
    else:
        out = trainer.predict(model, datamodule=dm)
        assert [o.shape[0] for o in out] == [5, 5]


def test_predict_without_a_real_datamodule_says_what_to_pass():
    from collapse_guard import MixedDataModule
    from cg_testing import id_dataset

    dm = MixedDataModule(id_dataset(40, 1000), {"g": id_dataset(20, 9000, label=0)}, real_fraction=0.5, holdout=0.25)
    with pytest.raises(NotImplementedError, match=r"trainer.predict\(model, dataloaders=...\)"):
        dm.predict_dataloader()
