"""The held-out check at scale (issue 16): bulk digests, the digest cache, and opaque sources checked at the first
epoch. Sizes are small; the thresholds that make a dataset "large" are lowered for each test."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from collapse_guard import MixedDataModule
from collapse_guard.data import checks, digest_cache, first_epoch
from collapse_guard.data.digests import RowDigests, sample_digest, sample_digests
from collapse_guard.data.row_index import index_by_digest, matches
from collapse_guard.data.sources import DataSource

from cg_testing import SYNTH_BASE, TinyMLP, id_dataset, make_trainer

try:
    from torch.utils.data import StackDataset
except ImportError:  # pragma: no cover
    StackDataset = None


class Rows(Dataset):
    """A plain Dataset over arrays: ``__getitem__`` reads one row (no bulk access); counts its reads."""

    def __init__(self, x, y):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads += 1
        return torch.from_numpy(np.array(self.x[i])), torch.tensor(int(self.y[i]))


class WithRows(Rows):
    def row_arrays(self):
        return self.x, self.y


class Doubling(WithRows):
    """Claims its arrays but transforms in ``__getitem__``: the bulk view disagrees and is not used."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x * 2, y


def arrays(n, seed=0, dim=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)).astype(np.float32), rng.integers(0, 4, n)


def one_by_one(ds):
    return [sample_digest(ds[i]) for i in range(len(ds))]


@pytest.fixture(autouse=True)
def fresh_cache():
    digest_cache.clear_cache()
    yield
    digest_cache.clear_cache()


# -- bulk paths: the same digests as sample by sample ------------------------------------------------------------
def test_array_sources_are_read_in_bulk_with_the_same_digests(tmp_path):
    x, y = arrays(300)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    sources = [x, mm, torch.from_numpy(x), WithRows(mm, y)]
    if StackDataset is not None:
        sources += [StackDataset(x, y), StackDataset(inputs=mm, label=torch.from_numpy(y))]
    for ds in sources:
        digests = sample_digests(ds)
        assert isinstance(digests, RowDigests), type(ds)
        assert digests == one_by_one(ds)
        sub = Subset(Subset(ds, list(range(10, 300, 3))), [5, 0, 80])
        assert sample_digests(sub) == one_by_one(sub)
        assert sample_digests(ds, [9, 2, 9]) == [sample_digest(ds[i]) for i in (9, 2, 9)]
    counted = WithRows(mm, y)
    sample_digests(counted)
    assert counted.reads <= 8  # a few rows checked against __getitem__, none hashed one by one


def test_a_bulk_view_that_disagrees_with_getitem_is_not_used():
    ds = Doubling(*arrays(50))
    digests = sample_digests(ds)
    assert not isinstance(digests, RowDigests) and digests == one_by_one(ds)


@pytest.mark.parametrize("fmt", [None, "numpy", "torch"])
def test_arrow_backed_hugging_face_columns_are_read_in_bulk(fmt):
    datasets = pytest.importorskip("datasets")
    x, y = arrays(200)
    ds = datasets.Dataset.from_dict({"x": x, "label": y, "m": np.zeros((200, 2, 2)), "w": y * 0.5}).with_format(fmt)
    digests = sample_digests(ds)
    assert isinstance(digests, RowDigests) and digests == one_by_one(ds)
    picked = ds.select(range(150, 20, -7))
    assert sample_digests(picked) == one_by_one(picked)
    sub = Subset(picked, [3, 1, 3])
    assert sample_digests(sub) == one_by_one(sub)


def test_bulk_sources_give_the_same_leak_findings_as_sample_by_sample():
    x, y = arrays(400, seed=1)
    held_idx = [3, 50, 77, 200]
    synth_x, synth_y = arrays(120, seed=2)
    synth_x[[5, 6, 90]], synth_y[[5, 6, 90]] = x[[50, 50, 200]], y[[50, 50, 200]]
    reports = []
    for wrap in (WithRows, Rows):  # bulk, then sample by sample (small: checked at set-up)
        real, synth = wrap(x, y), wrap(synth_x, synth_y)
        source = DataSource("g", synth, is_real=False)
        report = checks.verify_holdout(Subset(real, held_idx), real, torch.tensor([i for i in range(400)
                                       if i not in held_idx]), Subset(real, []), [source],
                                       [torch.arange(400, 500)], [(400, 520)])
        reports.append(report)
        with pytest.raises(ValueError, match=r"1 in the real training data \(held-out #1 = real #50\)"):
            checks.verify_holdout(Subset(real, held_idx), real, torch.tensor([1, 50, 60]), Subset(real, []), [], [],
                                  [])
    assert reports[0] == reports[1]
    assert reports[0]["sources"]["g"] == {"size": 120, "duplicates": 3, "in_training": 3, "heldout_real_matched": 2,
                                          "examples": [[5, 1], [6, 1], [90, 3]]}


def test_large_opaque_datasets_are_read_once_and_hashed_in_bulk(monkeypatch):
    monkeypatch.setattr(digest_cache, "CACHE_MIN_ROWS", 100)
    ds = Rows(*arrays(500))
    digests = sample_digests(ds)
    assert isinstance(digests, RowDigests) and digests == one_by_one(ds)
    texts = [("a" * (i % 3), i) for i in range(200)]  # strings cannot be stacked: sample by sample
    assert sample_digests(texts) == one_by_one(texts)


# -- the cache --------------------------------------------------------------------------------------------------
def test_the_cache_avoids_recomputing_a_large_dataset(monkeypatch):
    monkeypatch.setattr(digest_cache, "CACHE_MIN_ROWS", 100)
    real = Rows(*arrays(400))
    held = Subset(real, list(range(0, 400, 10)))
    first = sample_digests(held)
    reads = real.reads
    assert reads >= 400  # every row read once (the held-out rows, then the table of all rows)
    pool = sample_digests(real, [i for i in range(400) if i % 10])
    assert real.reads - reads <= 64  # the content sample that identifies the dataset, nothing hashed again
    assert matches(index_by_digest(first), pool) == []
    # a second MixedDataModule over the same data (a resume, a second fit) reads no more than the content samples
    # (one for the held-out rows, one for the training rows) and the set-up checks' few samples
    synth = WithRows(*arrays(300, seed=3))
    runs = []
    for _ in range(2):
        before, computed = real.reads, dict(digest_cache.computed)
        MixedDataModule(real, {"g": synth}, holdout=0.1, batch_size=8).setup("fit")
        runs.append((real.reads - before, {k: digest_cache.computed.get(k, 0) - computed.get(k, 0)
                                           for k in digest_cache.computed}))
    assert runs[1][0] <= 2 * 64 + 8 and not any(runs[1][1].values()), runs
    assert runs[0][1].get("array") == 1
    # a changed dataset is another dataset
    real.x = real.x.copy()
    real.x[0] += 1.0
    before = real.reads
    sample_digests(real)
    assert real.reads - before >= 400


def test_bulk_fingerprints_are_computed_once_per_dataset(monkeypatch):
    monkeypatch.setattr(digest_cache, "CACHE_MIN_ROWS", 100)
    ds = id_dataset(500, 0)
    calls = []
    real = RowDigests.fingerprints

    def counting(self):
        if self._whole is None and self._fingerprints is None:
            calls.append(len(self))
        return real(self)

    monkeypatch.setattr(RowDigests, "fingerprints", counting)
    for _ in range(2):
        held = index_by_digest(sample_digests(Subset(ds, list(range(50)))))
        matches(held, sample_digests(ds, list(range(50, 500))))
    assert calls == [500]


# -- opaque synthetic sources: checked at the first epoch --------------------------------------------------------
def memorising_setup(monkeypatch, num_workers):
    """A real TensorDataset; a synthetic source without bulk access, large for the (lowered) threshold, holding
    copies of held-out real samples."""
    monkeypatch.setattr(checks, "DEFER_MIN_ROWS", 50)
    real = id_dataset(80, 0)
    probe = MixedDataModule(real, {"g": id_dataset(40, SYNTH_BASE)}, holdout=0.25, batch_size=8)
    probe.setup("fit")
    held = probe.heldout_real
    x, y = (t.numpy().copy() for t in id_dataset(120, SYNTH_BASE).tensors)
    for at, h in ((7, 0), (8, 0), (100, 5)):
        x[at], y[at] = held[h][0].numpy(), int(held[h][1])
    synth = Rows(x, y)
    dm = MixedDataModule(real, {"g": synth}, holdout=0.25, batch_size=8, synthetic_holdout=0.0, real_fraction=0.25,
                         samples_per_epoch=400, num_workers=num_workers)
    return dm, synth


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_opaque_source_is_checked_as_the_first_epoch_reads_it(monkeypatch, num_workers):
    dm, synth = memorising_setup(monkeypatch, num_workers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing read, nothing reported at set-up
        dm.setup("fit")
    record = dm.contamination["sources"]["g"]
    assert record["deferred"] and record["duplicates"] is None and synth.reads <= 8  # the set-up checks' samples
    hashed = []
    monkeypatch.setattr(first_epoch, "sample_digest", lambda s: hashed.append(1) or sample_digest(s))
    trainer = make_trainer(max_epochs=2, limit_val_batches=0)
    with pytest.warns(UserWarning, match=r"first training epoch: synthetic samples identical to held-out real "
                                         r"samples: \{'g': 3\}") as caught:
        trainer.fit(TinyMLP(), datamodule=dm)
    assert sum("first training epoch" in str(w.message) for w in caught) == 1
    record = dm.contamination["sources"]["g"]
    assert record["duplicates"] == 3 and record["in_training"] == 3 and record["heldout_real_matched"] == 2
    assert record["examples"] == [[7, 0], [8, 0], [100, 5]] and record["scanned"] >= 120
    assert not dm._scan.active
    if num_workers == 0:  # batches screened by row fingerprints: only the copies (read 2 or 3 times each) hashed
        assert record["scanned"] == 300 and len(hashed) <= 9


def test_real_training_data_against_heldout_stays_a_set_up_error(monkeypatch):
    monkeypatch.setattr(checks, "DEFER_MIN_ROWS", 50)
    monkeypatch.setattr(digest_cache, "CACHE_MIN_ROWS", 50)
    x, y = arrays(200)
    x[150], y[150] = x[3], y[3]
    real = Rows(x, y)
    held = TensorDataset(torch.from_numpy(x[[3, 4]]), torch.from_numpy(y[[3, 4]]))
    real_no_copy = Rows(np.delete(x, [3, 4, 150], axis=0), np.delete(y, [3, 4, 150]))
    MixedDataModule(real_no_copy, {"g": Rows(*arrays(100, seed=5))}, holdout=held, batch_size=8).setup("fit")
    with pytest.raises(ValueError, match=r"3 in the real training data \(held-out #0 = real #3"):
        MixedDataModule(real, {"g": Rows(*arrays(100, seed=5))}, holdout=held, batch_size=8).setup("fit")


def test_long_hashing_shows_progress(monkeypatch):
    lines = []
    monkeypatch.setattr(digest_cache, "PROGRESS_AFTER_S", 0.0)
    monkeypatch.setattr(digest_cache, "rank_zero_info", lines.append)
    monkeypatch.setattr(digest_cache, "CACHE_MIN_ROWS", 100)
    sample_digests(Rows(*arrays(5000)))
    assert lines and all("held-out check, digests of 5000 samples of Rows" in line for line in lines)


@pytest.mark.parametrize("screened", [True, False])
def test_the_first_epoch_check_with_a_key_and_without_screening(monkeypatch, screened):
    monkeypatch.setattr(checks, "DEFER_MIN_ROWS", 50)
    if not screened:  # every sample hashed: the same findings
        monkeypatch.setattr(first_epoch.FirstEpochScan, "_candidates", lambda self, parts: None)
    x, y = arrays(100, seed=7)
    held = TensorDataset(torch.from_numpy(x[:10]), torch.from_numpy(y[:10]))
    sx, sy = arrays(60, seed=8)
    sx[[4, 40]] = x[[2, 9]]  # the same inputs under other labels: copies for a key on the inputs
    sy[[4, 40]] = (y[[2, 9]] + 1) % 4
    source = DataSource("g", Rows(sx, sy), is_real=False)
    key = lambda s: s[0]  # noqa: E731
    report = checks.verify_holdout(held, Rows(x[10:], y[10:]), torch.arange(90), Subset(held, []), [source],
                                   [torch.arange(90, 150)], [(90, 150)], key=key)
    assert report["sources"]["g"]["deferred"] and report["sources"]["g"]["duplicates"] is None
    scan = checks.first_epoch_scan(held, report, [source], [(90, 150)], key=key)
    assert scan.signature == "f(3,)" and len(scan.fingerprints) == 10  # the held-out inputs, stacked
    train = scan.wrap(torch.utils.data.ConcatDataset([Rows(x[10:], y[10:]), source.dataset]), num_workers=0)
    train.__getitems__(list(range(0, 150, 2)))
    train.__getitems__(list(range(1, 150, 2)))
    train[94]  # read twice: counted once
    with pytest.warns(UserWarning, match=r"\{'g': 2\} \(samples per source, among \{'g': 61\} read"):
        scan.finish()
    assert report["sources"]["g"] == {"size": 60, "deferred": True, "scanned": 61, "duplicates": 2, "in_training": 2,
                                      "heldout_real_matched": 2, "examples": [[4, 2], [40, 9]]}
    train[94]
    assert report["sources"]["g"]["scanned"] == 61  # after the first epoch: no more scanning
