"""Hugging Face ``datasets`` as sources: map-style ``datasets.Dataset`` end to end (content-hash held-out check
included), streaming ``datasets.IterableDataset`` (and torch ``IterableDataset``) synthetic sources with exact
counts, and one dataset with a provenance column."""
from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

datasets = pytest.importorskip("datasets")

from collapse_guard import HeldOutRealCheck, MixedDataModule, RatioMonitor  # noqa: E402
from collapse_guard.data import StreamDataset, sample_digest, sample_digests  # noqa: E402
from collapse_guard.data.streams import is_heldout_sample  # noqa: E402

from cg_testing import (  # noqa: E402
    REAL_BASE, SYNTH_BASE, TinyMLP, hf_dataset, ids_of, make_trainer, source_of_id,
)

BATCH = 8


hf = hf_dataset  # an id-carrying HF dataset: ``pixels`` (``pixels[0]`` is the id), ``label``, ``id``; torch format


def batch_fn(batch):
    return batch["pixels"], batch["label"]


def fit(dm, epochs=2, **kwargs):
    model = TinyMLP()
    trainer = make_trainer(max_epochs=epochs, callbacks=[RatioMonitor(), HeldOutRealCheck(batch_fn=batch_fn,
                                                                                          features=False)], **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    return model, trainer


def batches_of(model, epoch):
    ids = model.seen[epoch]
    return [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]


# -- map-style datasets.Dataset ---------------------------------------------------------------------------------
def test_hf_real_and_synthetic_end_to_end():
    dm = MixedDataModule(hf(80, REAL_BASE), {"g1": hf(60, SYNTH_BASE, label=0)}, real_fraction=0.25, holdout=0.25,
                         reserve=0.25, batch_size=BATCH, samples_per_epoch=64, seed=2)
    model, trainer = fit(dm)
    for epoch in (0, 1):
        for batch in batches_of(model, epoch):
            assert sum(source_of_id(i) == "real" for i in batch) == 2  # 8 * 0.25, every batch
    held = {int(dm.heldout_real[i]["id"]) for i in range(len(dm.heldout_real))}
    trained = {i for ids in model.seen.values() for i in ids}
    assert len(held) == 20 and not held & trained
    assert dm.mixer.total_counts.tolist() == [32, 0, 96]
    assert "collapse/heldout_synthetic/acc" in trainer.callback_metrics
    assert dm.contamination["checked"] and dm.contamination["sources"]["g1"]["duplicates"] == 0


def test_hf_heldout_leak_is_an_error_and_synthetic_copies_are_reported():
    real = hf(80, REAL_BASE)
    with pytest.raises(ValueError, match="held-out real samples are also training data"):
        MixedDataModule(real, {"g1": hf(60, SYNTH_BASE, label=0)}, holdout=real.select(range(70, 80)),
                        batch_size=BATCH).setup("fit")
    heldout = hf(10, 50_000)
    copies = datasets.concatenate_datasets([hf(60, SYNTH_BASE, label=0).with_format(None),
                                            heldout.select([3, 7]).with_format(None)]).with_format("torch")
    dm = MixedDataModule(real, {"g1": copies}, holdout=heldout, batch_size=BATCH)
    with pytest.warns(UserWarning, match="identical to held-out real"):
        dm.setup("fit")
    record = dm.contamination["sources"]["g1"]
    assert record["duplicates"] == 2 and sorted(h for _, h in record["examples"]) == [3, 7]


@pytest.mark.parametrize("fmt", ["torch", "numpy", None])
def test_hf_digests_read_by_chunks_equal_per_sample_digests(fmt):
    ds = hf(300, REAL_BASE, text=[f"s{i % 7}" for i in range(300)], seq=[list(range(i % 4 + 1)) for i in range(300)])
    ds = ds.with_format(fmt)
    assert sample_digests(ds) == [sample_digest(ds[i]) for i in range(len(ds))]
    sub = torch.utils.data.Subset(torch.utils.data.Subset(ds, list(range(5, 300, 3))), list(range(0, 90, 4)))
    assert sample_digests(sub) == [sample_digest(sub[i]) for i in range(len(sub))]
    assert sample_digests(ds, [9, 2, 9]) == [sample_digest(ds[i]) for i in (9, 2, 9)]


# -- streams ------------------------------------------------------------------------------------------------------
def stream(n: int, base: int, shards: int = 1, label=0):
    return hf(n, base, label=label).to_iterable_dataset(num_shards=shards)


class TorchStream(IterableDataset):
    """A plain torch IterableDataset of id-carrying dict samples."""

    def __init__(self, n: int, base: int):
        self.rows = hf(n, base, label=0)

    def __iter__(self):
        for i in range(len(self.rows)):
            yield self.rows[i]


@pytest.mark.parametrize("kind", ["hf", "torch"])
def test_streaming_synthetic_source_counts_are_exact(kind):
    """Per batch the real count is the plan's; stream slots are filled with the stream's next samples, each sample
    once per pass; the synthetic slots are shared by weight exactly."""
    web = stream(500, 2 * SYNTH_BASE) if kind == "hf" else TorchStream(500, 2 * SYNTH_BASE)
    dm = MixedDataModule(hf(80, REAL_BASE), {"g1": hf(60, SYNTH_BASE, label=0), "web": web}, real_fraction=0.25,
                         holdout=0.25, batch_size=BATCH, samples_per_epoch=96, synthetic_weights={"g1": 1, "web": 2},
                         synthetic_holdout=0.0, seed=1)
    model, trainer = fit(dm, epochs=3)
    assert dm.mixer.names == ["real", "reserve", "g1", "web"]
    for epoch in range(3):
        batches = batches_of(model, epoch)
        assert len(batches) == 12
        for batch in batches:
            assert sum(source_of_id(i) == "real" for i in batch) == 2
        sources = Counter(source_of_id(i) for b in batches for i in b)
        assert sources == {"real": 24, "g1": 24, "g2": 48}  # 72 synthetic slots, 1 : 2
    web_ids = [i for e in range(3) for i in model.seen[e] if source_of_id(i) == "g2"]
    assert web_ids == list(range(2 * SYNTH_BASE, 2 * SYNTH_BASE + 144))  # front to back, each sample once
    assert dm.mixer.total_counts.tolist() == [72, 0, 72, 144]
    assert float(trainer.callback_metrics["collapse/share/web"]) == pytest.approx(0.5)
    assert dm.mixer.sources[3].provenance()["size"] is None and dm.mixer.sources[3].provenance()["streaming"]
    from collapse_guard.report.record import provenance_section

    pools = {s["name"]: s["training_pool"] for s in provenance_section(dm)["sources"]}
    assert pools["web"] is None and pools["g1"] == len(dm.mixer.synthetic_pools[0])  # a stream has no fixed pool


def test_stream_restarts_with_a_new_pass_when_it_runs_out():
    web = stream(40, 2 * SYNTH_BASE)
    dm = MixedDataModule(hf(80, REAL_BASE), {"web": web}, real_fraction=0.5, holdout=0.25, batch_size=BATCH,
                         samples_per_epoch=64, synthetic_holdout=0.0)
    model, _ = fit(dm, epochs=2)
    ids = [i for e in range(2) for i in model.seen[e] if source_of_id(i) == "g2"]
    assert len(ids) == 64
    assert ids[:40] == list(range(2 * SYNTH_BASE, 2 * SYNTH_BASE + 40)) and ids[40:] == ids[:24]
    assert dm.mixer.sources[2].dataset.passes == 1


def test_stream_heldout_samples_are_chosen_by_content_and_never_trained_on():
    web = stream(400, 2 * SYNTH_BASE)
    dm = MixedDataModule(hf(80, REAL_BASE), {"web": web}, real_fraction=0.25, holdout=0.25, batch_size=BATCH,
                         samples_per_epoch=200, synthetic_holdout=0.2, stream_heldout_samples=15)
    model, trainer = fit(dm, epochs=2)
    held = [dm.heldout_synthetic[i] for i in range(len(dm.heldout_synthetic))]
    assert len(held) == 15 and all(is_heldout_sample(s, 0.2) for s in held)
    trained = {i for ids in model.seen.values() for i in ids if source_of_id(i) == "g2"}
    all_held = {int(r["id"]) for r in web if is_heldout_sample(r, 0.2)}
    assert 40 < len(all_held) < 120  # about 20% of 400
    assert not trained & all_held and {int(s["id"]) for s in held} <= all_held
    assert "collapse/gap/acc" in trainer.callback_metrics
    assert dm.contamination["sources"]["web"]["streaming"] is True


def test_stream_split_between_ranks_is_disjoint():
    web = stream(60, 2 * SYNTH_BASE, shards=1)
    ranks = [StreamDataset(web, "web", length=30, rank=r, world_size=2) for r in (0, 1)]
    ids = [{int(ranks[r].next()["id"]) for _ in range(30)} for r in (0, 1)]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 60


def test_stream_with_dataloader_workers():
    """Two workers, two shards: Hugging Face gives each worker one shard; counts stay exact, no sample twice."""
    web = stream(400, 2 * SYNTH_BASE, shards=2)
    dm = MixedDataModule(hf(80, REAL_BASE), {"web": web}, real_fraction=0.25, holdout=0.25, batch_size=BATCH,
                         samples_per_epoch=64, synthetic_holdout=0.0, num_workers=2)
    model, _ = fit(dm, epochs=1)
    ids = model.seen[0]
    web_ids = [i for i in ids if source_of_id(i) == "g2"]
    assert len(web_ids) == 48 and len(set(web_ids)) == 48
    assert all(sum(source_of_id(i) == "real" for i in b) == 2 for b in batches_of(model, 0))


def test_stream_errors():
    real = hf(80, REAL_BASE)
    with pytest.raises(ValueError, match="samples_per_epoch"):
        MixedDataModule(real, {"web": stream(40, SYNTH_BASE)}, holdout=0.25).setup("fit")
    with pytest.raises(ValueError, match="shard"):
        MixedDataModule(real, {"web": stream(40, SYNTH_BASE)}, holdout=0.25, samples_per_epoch=64,
                        num_workers=2).setup("fit")
    with pytest.raises(TypeError, match="synthetic sources only"):
        MixedDataModule(stream(40, REAL_BASE), {"g1": hf(60, SYNTH_BASE, label=0)}, holdout=0.25).setup("fit")
    empty = TorchStream(0, SYNTH_BASE)
    with pytest.raises(ValueError, match="yields no training samples"):
        MixedDataModule(real, {"web": empty}, holdout=0.25, samples_per_epoch=64).setup("fit")


# -- one dataset with a provenance column ---------------------------------------------------------------------------
def mixed_hf(**extra):
    real, g1, g2 = hf(80, REAL_BASE), hf(60, SYNTH_BASE, label=0), hf(30, 2 * SYNTH_BASE, label=1)
    parts = [(real, "real"), (g1, "gen1"), (g2, "gen2")]
    ds = datasets.concatenate_datasets([d.with_format(None).add_column("source", [s] * len(d)) for d, s in parts])
    return ds.shuffle(seed=0).with_format("torch")


def test_from_provenance_column_end_to_end():
    dm = MixedDataModule.from_provenance_column(mixed_hf(), column="source", real_fraction=0.25, holdout=0.25,
                                                batch_size=BATCH, samples_per_epoch=64)
    assert list(dm.synthetic) == ["gen1", "gen2"]
    assert dm.synthetic["gen1"].params == {"provenance_column": "source", "value": "gen1"}
    model, trainer = fit(dm)
    assert dm.mixer.names == ["real", "reserve", "gen1", "gen2"]
    assert "source" not in dm.real.column_names and "source" not in dm.train_set[0]
    for batch in batches_of(model, 0):
        assert sum(source_of_id(i) == "real" for i in batch) == 2
    seen = Counter(source_of_id(i) for i in model.seen[0])
    assert seen["real"] == 16 and seen["g1"] + seen["g2"] == 48
    assert {source_of_id(int(dm.real[i]["id"])) for i in range(len(dm.real))} == {"real"}


def test_from_provenance_column_boolean_and_generic_datasets():
    ds = mixed_hf()
    flags = datasets.Dataset.from_dict({**ds.with_format(None).to_dict(),
                                        "is_synthetic": [s != "real" for s in ds.with_format(None)["source"]]})
    flags = flags.remove_columns("source").with_format("torch")
    dm = MixedDataModule.from_provenance_column(flags, column="is_synthetic", real_values=(False,), keep_column=True)
    assert list(dm.synthetic) == ["is_synthetic=True"] and len(dm.real) == 80
    assert "is_synthetic" in dm.real.column_names

    class Rows(torch.utils.data.Dataset):  # a torch Dataset of dicts with a "generation" entry
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            row = ds[i]
            gen = {"real": 0, "gen1": 1, "gen2": 2}[ds.with_format(None)[i]["source"]]
            return {"pixels": row["pixels"], "label": row["label"], "id": row["id"], "generation": torch.tensor(gen)}

    dm = MixedDataModule.from_provenance_column(Rows(), column="generation", real_values=(0,), batch_size=BATCH,
                                                samples_per_epoch=32)
    assert list(dm.synthetic) == ["generation=1", "generation=2"]
    assert "generation" not in dm.real[0] and len(dm.real) == 80
    model, _ = fit(dm, epochs=1)
    assert len(model.seen[0]) == 32


def test_from_provenance_column_errors():
    ds = mixed_hf()
    with pytest.raises(ValueError, match="no sample has a real value"):
        MixedDataModule.from_provenance_column(ds, column="source", real_values=("human",))
    with pytest.raises(TypeError, match="not a column"):
        MixedDataModule.from_provenance_column(ds, column="origin")
    with pytest.raises(TypeError, match="map-style"):
        MixedDataModule.from_provenance_column(ds.to_iterable_dataset(), column="source")
    with pytest.raises(ValueError, match="do not pass it"):
        MixedDataModule.from_provenance_column(ds, column="source", synthetic={"x": ds})
