"""Stream wiring: streaming synthetic sources into a :class:`~collapse_guard.MixedDataModule`'s epochs.

A stream has no length: :func:`wrap_streams` gives each one ``samples_per_epoch`` slot indices (a
:class:`~collapse_guard.data.streams.StreamDataset`), :func:`stream_heldout_set` reads its held-out samples at set-up,
and :func:`continue_streams` / :func:`drop_foreign_stream_reads` have each DataLoader reader go on where its
predecessor stopped (after a resume, or a reloaded training DataLoader).
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch.utils.data import Dataset

from collapse_guard._compat import rank_zero_warn
from collapse_guard.data.mixing import MixingState
from collapse_guard.data.sources import DataSource
from collapse_guard.data.streams import ListDataset, StreamDataset, check_stream_workers


def wrap_streams(
    synthetic: Sequence[DataSource],
    samples_per_epoch: Optional[int],
    holdout_fraction: float,
    num_workers: int,
    world_size: int,
    rank: int,
) -> None:
    """Wrap every streaming source (in place) in a ``StreamDataset`` of ``samples_per_epoch`` slot indices.

    Args:
        synthetic: the resolved synthetic sources; the map-style ones are left as they are.
        samples_per_epoch: samples drawn per epoch over all ranks (required when a source streams).
        holdout_fraction: share of the digest space held out of every stream, in ``[0, 1)``.
        num_workers: DataLoader workers per rank (a Hugging Face stream needs at least as many shards).
        world_size: number of ranks (a Hugging Face stream is split between them).
        rank: this process's global rank.

    Raises:
        ValueError: a stream and no ``samples_per_epoch``; fewer Hugging Face shards than DataLoader workers.
    """
    streams = [s for s in synthetic if s.streaming]
    if not streams:
        return
    if samples_per_epoch is None:
        raise ValueError(
            f"synthetic source(s) {[s.name for s in streams]} stream and have no length, so an epoch has no "
            "natural size: pass `samples_per_epoch` (samples drawn per epoch over all ranks)."
        )
    for source in streams:
        check_stream_workers(source.dataset, source.name, num_workers)
        source.dataset = StreamDataset(
            source.dataset,
            source.name,
            length=samples_per_epoch,
            holdout_fraction=holdout_fraction,
            rank=rank,
            world_size=world_size,
        )


def stream_heldout_set(stream: StreamDataset, samples: int, holdout_fraction: float) -> Optional[Dataset]:
    """The first ``samples`` held-out samples of ``stream`` as a dataset (``None``: none asked, or none found).

    At most ``2 * samples / holdout_fraction + 1`` samples are read off the stream to find them.
    """
    if not samples or holdout_fraction <= 0:
        return None
    max_read = int(2 * samples / holdout_fraction) + 1
    found = stream.heldout_samples(samples, max_read=max_read)
    return ListDataset(found) if found else None


def drop_foreign_stream_reads(mixer: MixingState, world_size: int, num_workers: int) -> None:
    """Forget (with a warning) the stream reads a checkpoint counted with other ranks or DataLoader workers than
    this fit's: each reader holds its own part of a stream, so that stream starts again from its beginning."""
    for name, reads in list(mixer.stream_reads.items()):
        saved = (reads.shape[0], mixer.stream_reads_workers)
        if saved != (world_size, num_workers):
            del mixer.stream_reads[name]
            rank_zero_warn(
                f"streaming source {name!r} was read by {saved[0]} rank(s) x {saved[1]} DataLoader "
                f"worker(s) before the checkpoint, and this fit has {world_size} x {num_workers}: each reader "
                "holds its own part of the stream, so the stream starts again from its beginning. Resume with "
                "the same devices and `num_workers` to go on where it stopped."
            )


def continue_streams(mixer: MixingState, rank: int, num_workers: int) -> None:
    """Have every reader of a stream that the next DataLoader starts (its workers, or the main process) go on from
    the samples its predecessor read (:attr:`MixingState.stream_reads` of this ``rank``)."""
    for sid in mixer.stream_ids:
        source = mixer.sources[sid]
        reads = mixer.stream_reads.get(source.name)
        if isinstance(source.dataset, StreamDataset):
            source.dataset.skip = {} if reads is None else {
                (w if num_workers else None): int(n) for w, n in enumerate(reads[rank].tolist()) if n}
