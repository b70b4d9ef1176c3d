"""Held out means held out: content digests of held-out real data against training, reserve and synthetic data."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from collapse_guard import MixedDataModule
from collapse_guard.data import digests
from collapse_guard.data.integrity import (
    TensorRowDigests,
    TensorRowIndex,
    index_by_digest,
    matches,
    sample_digest,
    sample_digests,
    structure_mismatch,
)

from cg_testing import SYNTH_BASE, VAL_BASE, RealDM, id_dataset, make_mixed


def rows(ds: TensorDataset, idx) -> TensorDataset:
    idx = torch.as_tensor(idx)
    return TensorDataset(*(t[idx] for t in ds.tensors))


def cat(*parts: TensorDataset) -> TensorDataset:
    return TensorDataset(*(torch.cat(ts) for ts in zip(*(p.tensors for p in parts))))


# -- digests ----------------------------------------------------------------------------------------------------
def test_digest_depends_on_values_not_storage():
    x = [1.5, -2.0, 0.25]
    same = [
        (torch.tensor(x), 2),
        [np.array(x, dtype=np.float64), torch.tensor(2)],
        (torch.tensor(x, dtype=torch.float64), np.int32(2)),
        (x, torch.tensor(2, dtype=torch.int16)),
    ]
    assert len({sample_digest(s) for s in same}) == 1
    different = [
        (torch.tensor([1.5, -2.0, 0.26]), 2),  # a value
        (torch.tensor(x), 1),  # the label
        (torch.tensor(x).reshape(3, 1), 2),  # the shape
        (torch.tensor(x),),  # the structure
        {"x": torch.tensor(x), "y": 2},
        {"x": torch.tensor(x), "label": 2},  # the keys
    ]
    digests = {sample_digest(s) for s in different} | {sample_digest(same[0])}
    assert len(digests) == len(different) + 1
    assert sample_digest({"b": "text", "a": b"raw"}) == sample_digest({"a": b"raw", "b": "text"})
    assert sample_digest("text") != sample_digest("texts") and sample_digest(None) != sample_digest(0)


def test_tensor_datasets_are_read_row_wise_with_the_same_digests():
    ds = TensorDataset(torch.randn(300, 5), torch.randint(0, 3, (300,)), torch.rand(300, 2, 2).double())
    one_by_one = [sample_digest(ds[i]) for i in range(len(ds))]
    assert sample_digests(ds) == one_by_one
    assert sample_digests(ds, [7, 3, 299]) == [one_by_one[i] for i in (7, 3, 299)]
    nested = Subset(Subset(ds, list(range(100, 200))), [5, 0, 99])
    assert sample_digests(nested) == [one_by_one[i] for i in (105, 100, 199)]
    # other datasets go sample by sample, with the same digests
    assert sample_digests(ConcatDataset([ds]), [7, 3]) == [one_by_one[7], one_by_one[3]]
    # a key hashes part of a sample
    assert sample_digests(ds, [4], key=lambda s: s[0]) == [sample_digest(ds[4][0])]


def test_row_wise_digests_never_read_a_sample_at_a_time():
    # what makes the TensorDataset path fast (benchmarks time it; a test does not): rows come off the tensors in
    # blocks, and no sample goes through __getitem__ and the per-sample hash
    class Counting(TensorDataset):
        reads = 0

        def __getitem__(self, i):
            Counting.reads += 1
            return super().__getitem__(i)

    n = 20_000
    ds = Counting(torch.randn(n, 64), torch.randint(0, 10, (n,)))
    digests = sample_digests(ds)
    assert isinstance(digests, TensorRowDigests)
    assert len(set(digests)) == n
    assert Counting.reads == 0
    assert list(digests[:3]) == [sample_digest(TensorDataset(*ds.tensors)[i]) for i in range(3)]


def digest_matches(held, other):
    """``matches`` computed digest by digest (plain lists): the reference the fingerprint path must equal."""
    return matches(index_by_digest(list(sample_digests(held))), list(sample_digests(other)))


def overlapping_sets(seed=0):
    """A held-out set with duplicates inside it, and a larger set holding copies of some of its rows (among them a
    float64 copy of float32 rows, a NaN row and a -0.0 row that is not a copy of the 0.0 one)."""
    g = torch.Generator().manual_seed(seed)
    held_x = torch.randn(50, 6, generator=g)
    held_x[7] = held_x[3]  # a duplicate inside the held-out set: the first index is the one reported
    held_x[10] = float("nan")
    held_x[11] = 0.0
    held_y = torch.randint(0, 4, (50,), generator=g)
    held_y[7] = held_y[3]
    other_x = torch.randn(400, 6, generator=g)
    other_y = torch.randint(0, 4, (400,), generator=g)
    for at, row in ((5, 3), (6, 7), (100, 20), (101, 20), (399, 49), (200, 10), (300, 11)):
        other_x[at], other_y[at] = held_x[row], held_y[row]
    other_x[301], other_y[301] = -held_x[11], held_y[11]  # -0.0: other bytes, another digest, no match
    other_x[302], other_y[302] = held_x[20], (held_y[20] + 1) % 4  # the same inputs, another label
    return TensorDataset(held_x, held_y), TensorDataset(other_x.double(), other_y.int())


def test_tensor_datasets_are_compared_by_fingerprints_exactly():
    held, other = overlapping_sets()
    digests = sample_digests(other)
    assert isinstance(digests, TensorRowDigests) and isinstance(index_by_digest(sample_digests(held)), TensorRowIndex)
    got = matches(index_by_digest(sample_digests(held)), digests)
    assert got == digest_matches(held, other)
    assert got == [(5, 3), (6, 3), (100, 20), (101, 20), (200, 10), (300, 11), (399, 49)]
    assert digests._digests is None  # no digest was computed to find them
    # through Subsets, against a sub-range: positions are the subset's
    sub = Subset(other, list(range(90, 310)))
    assert matches(index_by_digest(sample_digests(held)), sample_digests(sub)) == [(10, 20), (11, 20), (110, 10),
                                                                                    (210, 11)]
    # rows of another structure never match, even with equal values
    reshaped = TensorDataset(held.tensors[0].reshape(50, 2, 3), held.tensors[1])
    assert matches(index_by_digest(sample_digests(held)), sample_digests(reshaped)) == []
    assert digest_matches(held, reshaped) == []


def test_fingerprint_collisions_are_resolved_by_comparing_rows(monkeypatch):
    held, other = overlapping_sets(seed=1)
    expected = digest_matches(held, other)
    assert expected
    # every fingerprint equal: every pair of rows is a candidate, and only the byte comparison tells them apart
    monkeypatch.setattr(digests, "_coefficients", lambda n: np.zeros(n, dtype=np.uint64))
    rows = sample_digests(other)
    assert len(set(rows.fingerprints().tolist())) == 1
    assert matches(index_by_digest(sample_digests(held)), rows) == expected
    # in a MixedDataModule: duplicates are still found and counted the same way
    held_real = heldout_of_make_mixed()
    copies = TensorDataset(*(torch.stack(t) for t in zip(*[held_real[i] for i in (0, 1, 1)])))
    dm = make_mixed(n_real=80, holdout=0.25, synthetic_holdout=0.0, synth_sizes={})
    dm.synthetic = {"memorised": cat(id_dataset(30, SYNTH_BASE), copies)}
    with pytest.warns(UserWarning, match=r"\{'memorised': 3\}"):
        dm.setup("fit")
    assert dm.contamination["sources"]["memorised"]["examples"] == [[30, 0], [31, 1], [32, 1]]


def test_lazy_row_digests_behave_as_the_list_of_digests():
    held, other = overlapping_sets()
    one_by_one = [sample_digest(other[i]) for i in range(len(other))]
    rows = sample_digests(other)
    assert len(rows) == 400 and rows[3] == one_by_one[3] and rows[-1] == one_by_one[-1]
    assert rows[10:13] == one_by_one[10:13] and rows._digests is None  # read one by one, nothing else computed
    with pytest.raises(IndexError):
        rows[400]
    assert list(rows) == one_by_one and rows == one_by_one and rows == sample_digests(other)
    index = index_by_digest(sample_digests(held))
    plain = index_by_digest([sample_digest(held[i]) for i in range(len(held))])
    assert dict(index) == plain and len(index) == len(plain) == 49  # rows 3 and 7 are one sample
    # a lazy side against a plain one: compared digest by digest, with the same result
    assert matches(index, one_by_one) == matches(plain, rows) == digest_matches(held, other)
    assert matches(index, ConcatDataset_digests(other)) == digest_matches(held, other)


def ConcatDataset_digests(ds):  # noqa: N802 - read sample by sample: a plain list
    digests = sample_digests(ConcatDataset([ds]))
    assert isinstance(digests, list)
    return digests


# -- held-out real in training: an error ------------------------------------------------------------------------
def test_heldout_dataset_overlapping_real_training_raises():
    real = id_dataset(60, 0)
    held = cat(id_dataset(10, VAL_BASE), rows(real, [3, 17, 42]))  # three training samples in the held-out set
    dm = MixedDataModule(real, {"g1": id_dataset(40, SYNTH_BASE)}, real_fraction=0.5, holdout=held, reserve=0.0)
    with pytest.raises(ValueError, match=r"`holdout`: held-out real samples are also training data: 3 in the real "
                                         r"training data \(held-out #10 = real #3") as err:
        dm.setup("fit")
    assert "verify_holdout=False" in str(err.value)
    # the same data with the check off sets up (the user's call)
    off = MixedDataModule(real, {"g1": id_dataset(40, SYNTH_BASE)}, real_fraction=0.5, holdout=held,
                          verify_holdout=False)
    off.setup("fit")
    assert off.contamination == {"checked": False}


def test_heldout_overlapping_the_reserve_raises():
    real = id_dataset(60, 0)
    reserve = id_dataset(20, 20_000)
    held = cat(id_dataset(10, VAL_BASE), rows(reserve, [0, 5]))
    dm = MixedDataModule(real, {"g1": id_dataset(40, SYNTH_BASE)}, holdout=held, reserve=reserve)
    with pytest.raises(ValueError, match=r"2 in the reserve \(held-out #10 = reserve #0"):
        dm.setup("fit")


def test_validation_set_that_repeats_training_samples_raises():
    class Leaky(RealDM):
        def setup(self, stage):
            super().setup(stage)
            self.val_set = cat(self.val_set, rows(self.train_set, [0, 1]))

    dm = MixedDataModule(Leaky(), {"g1": id_dataset(40, SYNTH_BASE)}, holdout="val", reserve=0.2)
    with pytest.raises(ValueError, match=r'`holdout="val"` \(Leaky\'s validation set\).*2 in the real training'):
        dm.setup("fit")


def test_duplicates_inside_the_real_data_are_found_across_a_fraction_split():
    base = id_dataset(40, 0)
    real = cat(base, base)  # every sample twice: a held-out fraction has copies in training
    dm = MixedDataModule(real, {"g1": id_dataset(40, SYNTH_BASE)}, holdout=0.25, seed=1)
    with pytest.raises(ValueError, match="held-out real samples are also training data"):
        dm.setup("fit")
    clean = MixedDataModule(base, {"g1": id_dataset(40, SYNTH_BASE)}, holdout=0.25, reserve=0.25, seed=1)
    clean.setup("fit")
    assert clean.contamination["checked"] and clean.contamination["heldout_real"] == 10


# -- synthetic copies of held-out real: reported ----------------------------------------------------------------
def heldout_of_make_mixed():
    """The held-out real samples ``make_mixed(n_real=80, holdout=0.25)`` splits off (split before any synthetic)."""
    dm = make_mixed(n_real=80, holdout=0.25)
    dm.setup("fit")
    return dm.heldout_real


def test_synthetic_copies_of_heldout_real_are_warned_and_recorded():
    held = heldout_of_make_mixed()
    copies = TensorDataset(*(torch.stack(t) for t in zip(*[held[i] for i in (0, 1, 2, 2)])))
    memorised = cat(id_dataset(30, SYNTH_BASE), copies)
    clean = id_dataset(30, 2 * SYNTH_BASE)
    dm = make_mixed(n_real=80, holdout=0.25, synthetic_holdout=0.0, synth_sizes={})
    dm.synthetic = {"memorised": memorised, "clean": clean}
    with pytest.warns(UserWarning, match=r"identical to held-out real samples: \{'memorised': 4\}.*3 of the 20"):
        dm.setup("fit")
    report = dm.contamination
    assert report["checked"] and report["heldout_real"] == 20
    assert report["sources"]["clean"] == {"size": 30, "duplicates": 0, "in_training": 0, "heldout_real_matched": 0,
                                          "examples": []}
    got = report["sources"]["memorised"]
    assert got["size"] == 34 and got["duplicates"] == 4 and got["in_training"] == 4
    assert got["heldout_real_matched"] == 3
    assert got["examples"] == [[30, 0], [31, 1], [32, 2], [33, 2]]


def test_copies_in_the_synthetic_holdout_part_count_apart_from_training():
    held = heldout_of_make_mixed()
    copies = TensorDataset(*(torch.stack(t) for t in zip(*[held[i] for i in range(20)])))
    dm = make_mixed(n_real=80, holdout=0.25, synthetic_holdout=0.5, synth_sizes={})
    dm.synthetic = {"all_copies": copies}
    with pytest.warns(UserWarning, match="all_copies"):
        dm.setup("fit")
    got = dm.contamination["sources"]["all_copies"]
    assert got["duplicates"] == 20 and got["in_training"] == 10 and got["heldout_real_matched"] == 20


def test_a_key_compares_inputs_only():
    x, _ = heldout_of_make_mixed()[0]
    relabelled = cat(id_dataset(20, SYNTH_BASE), TensorDataset(x[None], torch.tensor([2])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default compares whole samples: another label is another sample
        whole = make_mixed(n_real=80, holdout=0.25, synth_sizes={})
        whole.synthetic = {"g": relabelled}
        whole.setup("fit")
    assert whole.contamination["sources"]["g"]["duplicates"] == 0
    inputs = make_mixed(n_real=80, holdout=0.25, synth_sizes={}, verify_holdout=lambda s: s[0])
    inputs.synthetic = {"g": relabelled}
    with pytest.warns(UserWarning, match=r"\{'g': 1\}"):
        inputs.setup("fit")
    assert inputs.contamination["sources"]["g"]["duplicates"] == 1


def test_hugging_face_sources_are_checked_too():
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    real = datasets.Dataset.from_dict({"x": rng.normal(size=(60, 3)).tolist(), "label": rng.integers(0, 3, 60)})
    held = real.select(range(10))
    train = real.select(range(10, 60))
    synth = datasets.concatenate_datasets([
        datasets.Dataset.from_dict({"x": rng.normal(size=(30, 3)).tolist(), "label": rng.integers(0, 3, 30)}),
        held.select([4, 7]),
    ])
    dm = MixedDataModule(train, {"gen": synth}, holdout=held, collate_fn=lambda batch: batch)
    with pytest.warns(UserWarning, match=r"\{'gen': 2\}"):
        dm.setup("fit")
    assert dm.contamination["sources"]["gen"]["examples"] == [[30, 4], [31, 7]]
    leaky = MixedDataModule(real, {"gen": synth.select(range(30))}, holdout=held, collate_fn=lambda batch: batch)
    with pytest.raises(ValueError, match="10 in the real training data"):
        leaky.setup("fit")


def test_verification_never_moves_the_global_random_generators():
    class Augmenting(Dataset):
        """Random noise in __getitem__, as torchvision transforms do."""

        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return x + 0.0 * torch.rand(x.shape), y

    def draws_after(setup: bool):
        torch.manual_seed(5)
        np.random.seed(5)
        if setup:
            MixedDataModule(Augmenting(id_dataset(60, 0)), {"g": id_dataset(30, SYNTH_BASE)}, holdout=0.25).setup("fit")
        return torch.rand(3).tolist(), np.random.rand(3).tolist()

    assert draws_after(True) == draws_after(False)


# -- sample structure ------------------------------------------------------------------------------------------
def test_structure_mismatch_names_the_part():
    real = (torch.zeros(4), torch.tensor(1))
    assert structure_mismatch(real, (torch.ones(7), torch.tensor(0))) is None  # sizes may differ (padding collates)
    assert "float64" in structure_mismatch(real, (torch.zeros(4).double(), torch.tensor(1)))
    assert "sample[1]" in structure_mismatch(real, (torch.zeros(4), torch.tensor(1, dtype=torch.int32)))
    assert "dict" in structure_mismatch(real, {"x": torch.zeros(4), "y": 1})
    assert "sequence of 3" in structure_mismatch(real, (torch.zeros(4), torch.tensor(1), "extra"))
    assert "int where" in structure_mismatch(real, (torch.zeros(4), 1))
