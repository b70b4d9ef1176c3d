"""The functions the data module is carved into, each on explicit inputs: arguments, splits, checks, loaders,
stream wiring."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from collapse_guard.data import checks, loaders, splits, wiring
from collapse_guard.data.arguments import check_count, check_fraction, check_mixing_arguments, check_split
from collapse_guard.data.mixing import MixingState
from collapse_guard.data.sources import DataSource
from collapse_guard.data.streams import StreamDataset

from cg_testing import SYNTH_BASE, id_dataset, make_mixed


# -- arguments ----------------------------------------------------------------------------------------------------
def test_check_fraction_and_count_name_the_argument():
    assert check_fraction(1, "f") == 1.0 and isinstance(check_fraction(1, "f"), float)
    for bad in (True, -0.1, 1.5, "0.3", None):
        with pytest.raises(ValueError, match="`f` must be a real number in \\[0, 1\\]"):
            check_fraction(bad, "f")
    with pytest.raises(ValueError, match="`f` at epoch 3"):
        check_fraction(2.0, "f", epoch=3)
    assert check_count(None, "n") is None and check_count(0, "n", minimum=0) == 0
    for bad, minimum, message in ((0, 1, "a positive integer"), (True, 1, "a positive integer"), (2.0, 1, "a positive"),
                                  (-1, 0, "an integer >= 0")):
        with pytest.raises(ValueError, match=f"`n` must be {message}"):
            check_count(bad, "n", minimum=minimum)
    with pytest.raises(ValueError, match=">= 0, got None"):
        check_count(None, "n", minimum=0, optional=False)


def test_check_split_accepts_val_fractions_and_datasets_only():
    check_split("val", "holdout", allow_val=True)
    check_split(0.0, "reserve")
    check_split(id_dataset(3, 0), "reserve")
    with pytest.raises(TypeError, match='`reserve` must be a fraction'):
        check_split("val", "reserve")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        check_split(1.0, "holdout", allow_val=True)
    with pytest.raises(TypeError, match="map-style"):
        check_split(object(), "holdout")


def test_check_mixing_arguments_checks_verify_holdout_first():
    with pytest.raises(TypeError, match="verify_holdout"):
        check_mixing_arguments(None, 2.0, "bad", 0.0, 0.1, None, None, "no", 0)
    with pytest.raises(ValueError, match="`real` is required"):
        check_mixing_arguments(None, 2.0, "bad", 0.0, 0.1, None, None, True, 0)
    with pytest.raises(ValueError, match="holdout=\"val\"` takes"):
        check_mixing_arguments(id_dataset(4, 0), 0.5, "val", 0.0, 0.1, None, None, True, 0)
    check_mixing_arguments(id_dataset(4, 0), lambda e: 2.0, 0.2, 0.0, 0.1, 8, 64, True, 0)  # a schedule: at set-up


# -- splits -------------------------------------------------------------------------------------------------------
def test_split_off_takes_a_rounded_share_and_is_seeded():
    kept, taken = splits.split_off(torch.arange(10), 0.25, torch.Generator().manual_seed(0))
    assert len(taken) == 2 and len(kept) == 8  # round(2.5) == 2
    assert sorted(kept.tolist() + taken.tolist()) == list(range(10))
    assert kept.tolist() == sorted(kept.tolist())
    again = splits.split_off(torch.arange(10), 0.25, torch.Generator().manual_seed(0))
    assert again[1].tolist() == taken.tolist()


def test_split_real_with_a_reserve_dataset_appends_it_after_the_real_data():
    real, reserve = id_dataset(20, 0), id_dataset(6, 500)
    layout = splits.split_real(real, 0.25, reserve, torch.Generator().manual_seed(0))
    assert len(layout.heldout_real) == 5 and len(layout.real_pool) == 15
    assert sorted(layout.reserve_order.tolist()) == list(range(20, 26)) and layout.size == 26
    assert [s.name for s in layout.sources] == ["real", "reserve"] and all(s.is_real for s in layout.sources)
    with pytest.raises(ValueError, match="leaves no held-out real samples"):
        splits.split_real(real, 0.01, 0.0, torch.Generator().manual_seed(0))


def test_lay_out_dispatches_map_style_and_streaming_sources():
    gen = torch.Generator().manual_seed(0)
    layout = splits.split_real(id_dataset(20, 0), 0.25, 0.2, gen)
    stream = DataSource("web", StreamDataset(iter_source(), "web", length=8, holdout_fraction=0.0), is_real=False,
                        streaming=True)
    mapped = DataSource("gen", id_dataset(10, SYNTH_BASE), is_real=False)
    held = []
    splits.lay_out(layout, [mapped, stream], gen, 0.2, lambda s: held.append(s) or id_dataset(3, 900))
    assert held == [stream.dataset]  # only the stream's held-out samples are read
    assert layout.spans == [(20, 30), (30, 41)] and layout.size == 41
    assert len(layout.synthetic_pools[0]) == 8 and layout.synthetic_pools[1].tolist() == list(range(30, 38))
    assert layout.heldout_synthetic[-3:] == [38, 39, 40]  # the stream's held-out samples follow its slots
    source_of = layout.source_of()
    assert source_of[layout.reserve_order].unique().tolist() == [1]
    assert source_of[20:30].unique().tolist() == [2] and source_of[30:41].unique().tolist() == [3]
    assert len(layout.train_set()) == 41


def iter_source():
    from torch.utils.data import IterableDataset

    class Numbers(IterableDataset):
        def __iter__(self):
            return iter((torch.tensor([float(i)] * 4), torch.tensor(0)) for i in range(1000))

    return Numbers()


def test_lay_out_needs_real_training_samples():
    gen = torch.Generator().manual_seed(0)
    layout = splits.split_real(id_dataset(1, 0), 0.9, 0.0, gen)  # the one sample held out
    with pytest.raises(ValueError, match="no training samples left after `holdout` and `reserve` \\(1 real"):
        splits.lay_out(layout, [], gen, 0.1, lambda s: None)


def test_synthetic_weights_by_name():
    a = DataSource("a", id_dataset(3, 0), is_real=False)
    b = DataSource("b", id_dataset(3, 0), is_real=False, streaming=True)
    assert splits.synthetic_weights([a], None) is None
    assert splits.synthetic_weights([a, b], None).tolist() == [1.0, 1.0]
    assert splits.synthetic_weights([a, b], {"b": 3.0}).tolist() == [0.0, 3.0]
    with pytest.raises(ValueError, match="unknown sources \\['c'\\]"):
        splits.synthetic_weights([a], {"c": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        splits.synthetic_weights([a], {"a": 0.0})


# -- checks -------------------------------------------------------------------------------------------------------
def test_content_checks_name_what_is_wrong():
    real = id_dataset(4, 0)
    checks.check_samples(real[0], [("`reserve`", id_dataset(2, 10)[0])])
    with pytest.raises(ValueError, match="synthetic source 'g' yields samples unlike the real data's"):
        checks.check_samples(real[0], [("synthetic source 'g'", TensorDataset(torch.zeros(2, 4))[0])])
    checks.check_collate(None, [real[0], real[1]], ["real", "g"])
    with pytest.raises(ValueError, match=r"sources \['real', 'g'\] cannot be collated"):
        checks.check_collate(None, [real[0], (torch.zeros(5), torch.tensor(0))], ["real", "g"])
    checks.check_world_size(2, real, None)
    with pytest.raises(ValueError, match="held-out synthetic set has 1 samples, fewer than the 2 ranks"):
        checks.check_world_size(2, real, Subset(real, [0]))


def test_check_schedule_against_the_pools():
    mixer = MixingState([DataSource("real", id_dataset(4, 0), True)], torch.arange(4), torch.empty(0).long(), [],
                        torch.zeros(4, dtype=torch.int16), lambda e: 1.0 - 0.5 * e, 8, 0)
    checks.check_schedule(mixer, [0], has_real=True, has_synthetic=False)
    with pytest.raises(ValueError, match="is 0.5 at epoch 1 but no synthetic source"):
        checks.check_schedule(mixer, range(3), has_real=True, has_synthetic=False)
    with pytest.raises(ValueError, match="is 1.0 at epoch 0 but `holdout` and `reserve` leave no real"):
        checks.check_schedule(mixer, [0], has_real=False, has_synthetic=True)


def test_verify_holdout_reports_copies_and_rejects_leaks():
    real = id_dataset(10, 0)
    held = Subset(real, [0, 1])
    copies = DataSource("g", TensorDataset(*(t[[1, 5, 1]] for t in real.tensors)), is_real=False)
    report = checks.verify_holdout(held, real, torch.arange(2, 10), Subset(real, []), [copies],
                                   [torch.tensor([100, 101])], [(100, 103)])
    assert report == {"checked": True, "heldout_real": 2, "sources": {"g": {
        "size": 3, "duplicates": 2, "in_training": 1, "heldout_real_matched": 1, "examples": [[0, 1], [2, 1]]}}}
    with pytest.warns(UserWarning, match="identical to held-out real samples: {'g': 2}"):
        checks.warn_heldout_copies(report)
    with pytest.raises(ValueError, match=r"`holdout`: held-out real samples are also training data: 1 in the real "
                                         r"training data \(held-out #1 = real #1\)"):
        checks.verify_holdout(held, real, torch.arange(1, 10), Subset(real, []), [], [], [])


def test_heldout_classes_in_batches_without_moving_the_random_state():
    data = TensorDataset(torch.zeros(7, 2), torch.tensor([2, 0, 2, 5, 0, 0, 2]))
    state = torch.get_rng_state()
    assert checks.heldout_classes(data, None, 3, lambda b: (b[0], b[1])).tolist() == [0, 2, 5]
    assert torch.equal(torch.get_rng_state(), state)


# -- loaders ------------------------------------------------------------------------------------------------------
def test_shard_and_seeded_subset():
    data = id_dataset(10, 0)
    assert loaders.shard(data, 1, 0) is data and loaders.shard(data, 3, 1, enabled=False) is data
    assert loaders.shard(data, 3, 1).indices == [1, 4, 7]
    sub = loaders.seeded_subset(10, 4, seed=3)
    assert sub.tolist() == sorted(sub.tolist()) and len(set(sub.tolist())) == 4
    assert torch.equal(sub, loaders.seeded_subset(10, 4, seed=3))
    assert loaders.epoch_to_run(None) is None


def test_real_training_data_takes_given_options_first():
    data, options = loaders.real_training_data(id_dataset(6, 0), None, None, None, 32)
    assert len(data) == 6 and (options.batch_size, options.num_workers, options.pin_memory) == (32, 0, False)
    _, options = loaders.real_training_data(id_dataset(6, 0), list, 4, 0, 32)
    assert options.collate_fn is list and options.batch_size == 4
    batch = next(iter(options.loader(data, batch_size=options.batch_size)))
    assert isinstance(batch, list) and len(batch) == 4


def test_synthetic_training_set_is_a_seeded_subset_of_the_pools():
    dm = make_mixed(synth_sizes={"g1": 20, "g2": 10})
    assert loaders.synthetic_training_set(None, None, None, 0) is None
    dm.setup("fit")
    whole = loaders.synthetic_training_set(dm.train_set, dm.mixer, None, dm.seed)
    assert len(whole) == 18 + 9  # synthetic_holdout 0.1 of each source held out
    part = loaders.synthetic_training_set(dm.train_set, dm.mixer, 5, dm.seed)
    ids = [int(part[i][0][0]) for i in range(len(part))]
    assert len(ids) == 5 and set(ids) <= {int(whole[i][0][0]) for i in range(len(whole))}
    assert ids == [int(s[0][0]) for s in loaders.synthetic_training_set(dm.train_set, dm.mixer, 5, dm.seed)]


# -- stream wiring ------------------------------------------------------------------------------------------------
def test_wrap_streams_needs_samples_per_epoch_and_wraps_only_streams():
    mapped = DataSource("gen", id_dataset(4, 0), is_real=False)
    stream = DataSource("web", iter_source(), is_real=False, streaming=True)
    with pytest.raises(ValueError, match=r"\['web'\] stream and have no length"):
        wiring.wrap_streams([mapped, stream], None, 0.1, 0, 1, 0)
    wiring.wrap_streams([mapped, stream], 16, 0.5, 0, 1, 0)
    assert isinstance(stream.dataset, StreamDataset) and len(stream.dataset) == 16
    assert not isinstance(mapped.dataset, StreamDataset)
    assert wiring.stream_heldout_set(stream.dataset, 0, 0.1) is None
    held = wiring.stream_heldout_set(stream.dataset, 3, 0.5)
    assert held is not None and len(held) == 3
