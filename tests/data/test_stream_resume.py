"""A fit with a streaming synthetic source, stopped at an epoch and resumed from Lightning's checkpoint, goes on
reading each stream where the interrupted fit's readers stopped: the same stream samples, epoch by epoch, as the
uninterrupted fit, with or without DataLoader workers, across the stream's passes.

The checkpoint holds, for every streaming source, the samples each rank's DataLoader worker read (counted off the
global plan: batch ``k`` goes to worker ``k % num_workers``); a resumed fit fast-forwards every reader by its
count (``MixedDataModule.load_state_dict``).
"""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

datasets = pytest.importorskip("datasets")

from collapse_guard import HeldOutRealCheck, MixedDataModule, RatioMonitor  # noqa: E402

from cg_testing import REAL_BASE, SYNTH_BASE, TinyMLP, hf_dataset, make_trainer, source_of_id  # noqa: E402

BATCH, EPOCHS = 8, 4
WEB = 2 * SYNTH_BASE  # ids of the stream's samples ("g2" to source_of_id)


def batch_fn(batch):
    return batch["pixels"], batch["label"]


def make_dm(num_workers: int, stream_len: int = 70) -> MixedDataModule:
    """Real digits-like rows and one stream of ``stream_len`` samples in 2 shards (one per worker), 48 stream
    samples an epoch: with 70 samples the stream starts its second pass in epoch 1 and its third in epoch 2."""
    web = hf_dataset(stream_len, WEB, label=0).to_iterable_dataset(num_shards=2)
    return MixedDataModule(hf_dataset(80, REAL_BASE), {"web": web}, real_fraction=0.25, holdout=0.25, batch_size=BATCH,
                           samples_per_epoch=64, synthetic_holdout=0.1, stream_heldout_samples=4,
                           num_workers=num_workers, seed=5)


def fit(dm, max_epochs, ckpt_dir=None, ckpt_path=None, features=False):
    torch.manual_seed(0)
    model = TinyMLP()
    callbacks = [RatioMonitor(), HeldOutRealCheck(batch_fn=batch_fn, features=features, feature_samples=24, k=3)]
    trainer = make_trainer(max_epochs=max_epochs, callbacks=callbacks, ckpt_dir=ckpt_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model


def stream_ids(model, epoch: int) -> list[int]:
    return [i for i in model.seen[epoch] if source_of_id(i) == "g2"]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop", [0, 1])
def test_a_resumed_fit_reads_each_stream_on_from_where_it_stopped(tmp_path, num_workers, stop):
    ref = fit(make_dm(num_workers), EPOCHS)
    reads = [stream_ids(ref, e) for e in range(EPOCHS)]
    assert all(len(r) == 48 for r in reads)
    assert len(set(reads[0])) == 48 and reads[1] != reads[0]  # the stream goes on across epochs...
    assert len(set(reads[1] + reads[2])) < 96  # ... and over its passes (fewer training samples than 96)

    fit(make_dm(num_workers), stop + 1, ckpt_dir=tmp_path)
    dm = make_dm(num_workers)
    resumed = fit(dm, EPOCHS, ckpt_path=tmp_path / f"epoch={stop}.ckpt")
    for epoch in range(stop + 1, EPOCHS):
        assert stream_ids(resumed, epoch) == reads[epoch], epoch
        assert resumed.seen[epoch] == ref.seen[epoch], epoch  # the same batches: the plan of the same epoch
    # the reads are counted per worker (batch k to worker k % num_workers), and they add up to what was trained
    counted = dm.mixer.stream_reads["web"]
    assert counted.shape == (1, max(num_workers, 1)) and int(counted.sum()) == 48 * EPOCHS
    assert dm.mixer.state_dict()["stream_reads"]["web"] == counted.tolist()


def test_without_the_stream_reads_a_resumed_stream_starts_again(tmp_path):
    """What the counts fix: a checkpoint without them (as written before they existed) restarts the stream."""
    ref = fit(make_dm(0), 2)
    fit(make_dm(0), 1, ckpt_dir=tmp_path)
    ckpt = torch.load(tmp_path / "epoch=0.ckpt", weights_only=False)
    state = ckpt[MixedDataModule.__qualname__]
    assert state["stream_reads"] == {"web": [[48]]} and state["stream_reads_workers"] == 0
    del state["stream_reads"], state["stream_reads_workers"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    resumed = fit(make_dm(0), 2, ckpt_path=tmp_path / "old.ckpt")
    assert stream_ids(resumed, 1) != stream_ids(ref, 1)
    assert stream_ids(resumed, 1) == stream_ids(ref, 0)  # from the beginning


def test_resuming_with_other_workers_warns_and_starts_the_stream_again(tmp_path):
    fit(make_dm(0), 1, ckpt_dir=tmp_path)
    dm = make_dm(2)
    with pytest.warns(UserWarning, match=r"'web' was read by 1 rank\(s\) x 0 DataLoader worker\(s\).*1 x 2"):
        dm.trainer = SimpleNamespace(world_size=1, global_rank=0)
        dm.setup("fit")
        dm.load_state_dict(torch.load(tmp_path / "epoch=0.ckpt", weights_only=False)[MixedDataModule.__qualname__])
    dm.train_dataloader()
    assert dm.mixer.sources[2].dataset.skip == {} and "web" not in dm.mixer.stream_reads  # counted afresh


def worker_reads(model, epochs, workers: int = 2) -> list[list[int]]:
    """Each worker's stream samples, in the order it read them: batch ``k`` of an epoch is worker ``k % workers``'s."""
    out: list[list[int]] = [[] for _ in range(workers)]
    for epoch in epochs:
        ids = model.seen[epoch]
        for k in range(0, len(ids) // BATCH):
            out[k % workers] += [i for i in ids[k * BATCH:(k + 1) * BATCH] if source_of_id(i) == "g2"]
    return out


def test_reloading_the_training_dataloader_every_epoch_goes_on_where_the_workers_are():
    """``reload_dataloaders_every_n_epochs=1`` starts new DataLoader workers every epoch. They go on from where the
    previous ones stopped: each epoch a worker trains on a window of its stream further on, never from its start;
    the counts are where the last window ends. Lightning creates a reloaded epoch's iterator twice, and what the
    workers prefetched for the first one is read and not trained on, so windows may leave gaps; the counts,
    taken as batches are handed out, include those reads."""
    # a stream long enough for one pass (about 135 training samples a worker), so a restart cannot pass for a pass
    kept = fit(make_dm(2, stream_len=300), EPOCHS)  # persistent workers: each reads its part front to back
    stream = worker_reads(kept, range(EPOCHS))
    torch.manual_seed(0)
    model, dm = TinyMLP(), make_dm(2, stream_len=300)
    make_trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1).fit(model, datamodule=dm)
    counts = dm.mixer.stream_reads["web"][0].tolist()
    for w in range(2):
        start = 0
        for epoch in range(3):
            window = worker_reads(model, [epoch])[w]
            offsets = [o for o in range(start, len(stream[w]) - len(window) + 1)
                       if stream[w][o:o + len(window)] == window]
            assert offsets, (w, epoch)
            start = offsets[0] + len(window)
        assert counts[w] == start  # where the worker stands: what a resume or the next reload starts from


def test_reloading_without_workers_reads_as_a_single_dataloader_does():
    kept = fit(make_dm(0), 3)
    torch.manual_seed(0)
    model = TinyMLP()
    make_trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1).fit(model, datamodule=make_dm(0))
    assert model.seen == kept.seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_fit_resumed_after_epochs_cut_short_reads_on_where_the_readers_are(tmp_path, num_workers):
    """With ``limit_train_batches`` the loader hands out (and workers read) batches beyond those trained on; they are
    counted as handed out, so a resumed fit's readers stand where the uninterrupted fit's do."""
    def run(max_epochs, **kwargs):
        torch.manual_seed(0)
        model = TinyMLP()
        trainer = make_trainer(max_epochs=max_epochs, limit_train_batches=5, ckpt_dir=kwargs.pop("ckpt_dir", None))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, datamodule=make_dm(num_workers), **kwargs)
        return model.seen

    reference = run(3)
    run(1, ckpt_dir=tmp_path)
    resumed = run(3, ckpt_path=tmp_path / "epoch=0.ckpt")
    assert all(resumed[e] == reference[e] for e in (1, 2))


def test_every_rank_counts_every_ranks_reads():
    """Rank 0's checkpoint must hold rank 1's reads too: each rank counts every rank's batches off the global
    plan, and rank 0's count of rank 1 equals what rank 1 counts of itself."""
    counted = []
    for rank in (0, 1):
        dm = make_dm(2)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, training=True)
        dm.setup("fit")
        sampler = dm.train_dataloader().batch_sampler
        for batch in sampler:  # what the rank's loader yields; one count per batch the model receives
            dm.mixer.count_next_batch()
        counted.append(dm.mixer.stream_reads["web"].clone())
        local = int(dm.mixer.local_epoch_counts[dm.mixer.names.index("web")])
        assert int(counted[-1][rank].sum()) == local
    assert torch.equal(counted[0], counted[1]) and counted[0].shape == (2, 2)
    assert int(counted[0].sum()) == 48  # 64 samples an epoch over both ranks, 75% of them synthetic


def test_the_feature_pass_reads_fixed_stream_samples_and_leaves_training_where_it_is():
    plain = fit(make_dm(0), 2)
    dm = make_dm(0)
    featured = fit(dm, 2, features=True)
    assert [stream_ids(featured, e) for e in (0, 1)] == [stream_ids(plain, e) for e in (0, 1)]
    loader = dm.synthetic_training_dataloader(max_samples=24)
    first, again = ([int(x) for b in loader for x in b["pixels"][:, 0].round()] for _ in range(2))
    assert first == again and all(source_of_id(i) == "g2" for i in first)
    stream = dm.mixer.sources[2].dataset
    assert first == [int(s["pixels"][0].round()) for s in stream.training_samples(len(first))]
