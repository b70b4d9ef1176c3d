"""Streaming synthetic sources: an iterable dataset drawn slot by slot.

A stream has no length and no index, so the sampler cannot draw its samples by index as it does for map-style
sources. It does not need to: the plan of an epoch fixes, for every batch, how many slots each source fills
(the real count within one of ``batch_size * real_fraction``, the synthetic slots shared between the synthetic
sources by their weights), and a stream source fills each of its slots with the stream's next sample. The counts
are counted per slot, so they stay exact.

To keep one sampler for both kinds, a stream source is given ``length`` *slot indices* in the concatenated
training dataset (:class:`StreamDataset`); every read of any of them returns the stream's next sample. The plan
draws slot indices like any others, so a batch's position of a stream sample is random and the per-source
counts come from the plan, as for map-style sources.

What "every pooled sample once per epoch before repeats" means for a stream: the stream is read front to back,
each sample is used once per pass, and when it runs out the next pass starts (``set_epoch(pass)`` is called
first on streams that have it, so a shuffled Hugging Face stream is reshuffled); a pass is not tied to an epoch.

How a stream is split, the way a ``DataLoader`` would: a Hugging Face ``datasets.IterableDataset`` is split
between ranks with ``datasets.distributed.split_dataset_by_node`` and between DataLoader workers by Hugging Face
itself (whole shards per worker: it needs at least as many shards as workers); a torch ``IterableDataset`` is
read as it is, so under several workers or ranks its ``__iter__`` must shard itself
(``torch.utils.data.get_worker_info()``), as PyTorch's documentation asks of any iterable dataset.

Held-out synthetic samples of a stream are chosen by content: a sample is held out when its content digest
(:func:`~collapse_guard.data.digests.sample_digest`) falls in the lowest ``holdout_fraction`` of the digest
space. The choice does not depend on position, rank, worker or pass, so no held-out sample is ever trained on;
training skips them, and the held-out set of the checks is the first ``holdout_samples`` of them in the stream.

Resuming: every reader of a stream (each rank's DataLoader workers, or its main process without workers) holds its
own position. The mixer counts, off the global plan, how many samples each reader has read (batch ``k`` of an epoch
goes to worker ``k % num_workers``, as PyTorch's DataLoader hands them out), as the batch sampler hands each batch
out: batches prefetched beyond an epoch cut short (``limit_train_batches``) are read too, and counted. Every rank
counts every rank's readers, so rank 0's checkpoint holds them all. A fit resumed from an end-of-epoch checkpoint,
and every DataLoader Lightning reloads (``reload_dataloaders_every_n_epochs``), starts its readers where the counts
say (each fast-forwards by reading, and filtering out held-out samples, as it goes: the cost is that of reading
them again); a resumed fit then reads exactly the samples of the uninterrupted one, across passes too. This needs
a stream that yields the same samples in the same order every time it is iterated (a file-backed Hugging Face
stream, shuffled or not, does) and the same number of ranks and workers: with others the stream starts again from
its beginning, with a warning.

What a stream does not give: exact resumption from a checkpoint taken inside an epoch; with DataLoader workers and
``reload_dataloaders_every_n_epochs``, Lightning creates each reloaded epoch's iterator twice, and the stream
samples the workers read for the first one's prefetched batches are not trained on (the counts include them, so
the workers go on from where they are); contamination of a stream by held-out real samples is not checked (it
cannot be scanned). ``HeldOutRealCheck``'s feature indicators take the first training samples of a stream, read
through a separate iterator (the same ones at every check), not the samples training is reading.

NaN and infinities: a stream's first training sample is checked at set-up, every other sample as training reads it,
at every epoch (later passes bring samples never read before): see :class:`~collapse_guard.data.finite.FiniteScan`,
which names a sample by its pass and position, read off :attr:`StreamDataset.log`.

Example::

    stream = datasets.load_dataset("json", data_files="gen/*.jsonl", streaming=True)["train"].with_format("torch")
    dm = MixedDataModule(real=real_ds, synthetic={"gen": stream}, real_fraction=0.3, holdout=0.2,
                         samples_per_epoch=10_000)
"""
from __future__ import annotations

import os
import sys
from itertools import islice
from typing import Any, Iterator, Optional

from torch.utils.data import Dataset, IterableDataset, get_worker_info

from collapse_guard._rng import preserved_rng
from collapse_guard.data.digests import sample_digest

_DIGEST_SPACE = 2**64
#: the most reads :attr:`StreamDataset.log` keeps
LOG_MAX = 1 << 16


def is_hf_stream(obj: Any) -> bool:
    """Whether ``obj`` is a Hugging Face ``datasets.IterableDataset``."""
    if "datasets" not in sys.modules:
        return False
    import datasets

    return isinstance(obj, datasets.IterableDataset)


def is_stream(obj: Any) -> bool:
    """Whether ``obj`` is a streaming (iterable-style) dataset: a torch ``IterableDataset`` or a Hugging Face
    ``datasets.IterableDataset``."""
    return isinstance(obj, IterableDataset) or is_hf_stream(obj)


def is_heldout_sample(sample: Any, fraction: float) -> bool:
    """Whether a stream sample belongs to the held-out part: its content digest lies in the lowest ``fraction``."""
    if fraction <= 0.0:
        return False
    return int.from_bytes(sample_digest(sample)[:8], "big") < fraction * _DIGEST_SPACE


class StreamDataset(Dataset):
    """The map-style face of a stream: ``length`` slot indices, every read returns the stream's next sample.

    Args:
        stream: a torch ``IterableDataset`` or a Hugging Face ``datasets.IterableDataset``.
        name: the source's name, for messages.
        length: number of slot indices (the most slots the source can fill in one epoch).
        holdout_fraction: share of the stream (by content digest) kept out of training.
        rank: this process's rank; a Hugging Face stream is split between ``world_size`` ranks.
        world_size: number of ranks.

    Raises:
        RuntimeError: (on a read) when a fresh pass of the stream yields no training sample.

    Example::

        slots = StreamDataset(hf_stream, "web", length=1000)
        slots[17], slots[3]  # the stream's first and second training samples: the index only names a slot
    """

    def __init__(
        self,
        stream: Any,
        name: str,
        length: int,
        holdout_fraction: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.full_stream = stream
        if world_size > 1 and is_hf_stream(stream):
            from datasets.distributed import split_dataset_by_node

            stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        self.stream = stream
        self.name = name
        self.length = int(length)
        self.holdout_fraction = float(holdout_fraction)
        self.passes = 0
        #: samples to fast-forward when a process first reads: DataLoader worker id (``None``: the main process)
        #: -> training samples that worker read before the checkpoint a fit resumes from
        self.skip: dict[Optional[int], int] = {}
        #: ``(pass, position in the pass)`` of every training sample read since a check last emptied it (``None``:
        #: none kept); positions count the stream's held-out samples too
        self.log: Optional[list[tuple[int, int]]] = None
        self._iterator: Optional[Iterator] = None
        self._owner: Optional[tuple] = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        if not -self.length <= int(index) < self.length:
            raise IndexError(f"slot {index} of stream source {self.name!r} is out of range [0, {self.length})")
        return self.next()

    def __getstate__(self) -> dict:  # a worker process opens its own iterator
        state = dict(self.__dict__)
        state["_iterator"] = None
        state["_owner"] = None
        return state

    def _where(self) -> tuple:
        info = get_worker_info()
        return os.getpid(), info.id if info is not None else None

    def _open(self) -> Iterator:
        if self.passes and hasattr(self.stream, "set_epoch"):
            self.stream.set_epoch(self.passes)
        return iter(self.stream)

    def _train_items(self, iterator: Iterator) -> Iterator[tuple[int, Any]]:
        """``(position in the pass, sample)`` of the training samples of ``iterator`` (held-out samples skipped)."""
        positions = enumerate(iterator)
        if self.holdout_fraction <= 0.0:
            return positions
        return ((p, s) for p, s in positions if not is_heldout_sample(s, self.holdout_fraction))

    def next(self) -> Any:
        """The stream's next training sample (a new pass starts when the stream runs out).

        Raises:
            RuntimeError: when a fresh pass yields no training sample (an empty stream, or a DataLoader worker
                that Hugging Face gave no shard).
        """
        where = self._where()
        if self._iterator is None or self._owner != where:
            self._iterator, self._owner = self._train_items(self._open()), where
            for _ in range(self.skip.get(where[1], 0)):  # a resumed fit: on from where this reader stopped
                self._read()
        return self._read()

    def _read(self) -> Any:
        """The next training sample of this process's iterator, starting a new pass when it runs out (its pass and
        position appended to :attr:`log` when a check keeps one)."""
        try:
            position, sample = next(self._iterator)
        except StopIteration:
            self.passes += 1
            self._iterator = self._train_items(self._open())
            try:
                position, sample = next(self._iterator)
            except StopIteration:
                raise self._no_samples() from None
        if self.log is not None:
            if len(self.log) >= LOG_MAX:  # read outside a checked loader: keep the newest
                del self.log[: LOG_MAX // 2]
            self.log.append((self.passes, position))
        return sample

    def _no_samples(self) -> RuntimeError:
        """The error of a fresh pass that yields no training sample."""
        worker = get_worker_info()
        where_txt = f" in DataLoader worker {worker.id} of {worker.num_workers}" if worker is not None else ""
        shards = getattr(self.stream, "num_shards", None)
        hint = (
            f" Hugging Face gives each worker whole shards and this stream has {shards}: use at most {shards} "
            "workers, or more shards (e.g. `Dataset.to_iterable_dataset(num_shards=...)`)."
            if shards is not None and worker is not None else ""
        )
        return RuntimeError(f"streaming source {self.name!r} yields no training samples{where_txt}.{hint}")

    def peek(self) -> Any:
        """The first training sample of the stream, read through a separate iterator (the training position and
        the global random generators do not move)."""
        samples = self.training_samples(1)
        if not samples:
            raise ValueError(f"streaming source {self.name!r} yields no training samples: give it at least one.")
        return samples[0]

    def training_samples(self, n: int) -> list:
        """The first ``n`` training (not held-out) samples of the whole stream (the same on every rank; fewer when
        it has fewer), read through a separate iterator: the training position and the global random generators
        do not move."""
        return self._first(n, heldout=False)

    def heldout_samples(self, n: int, max_read: Optional[int] = None) -> list:
        """The first ``n`` held-out samples of the whole stream (the same on every rank; read through a separate
        iterator, at most ``max_read`` samples)."""
        if self.holdout_fraction <= 0.0:
            return []
        return self._first(n, heldout=True, max_read=max_read)

    def _first(self, n: int, heldout: bool, max_read: Optional[int] = None) -> list:
        """The first ``n`` held-out (or training) samples among the first ``max_read`` of the whole stream."""
        if n <= 0:
            return []
        with preserved_rng():
            read = islice(iter(self.full_stream), max_read)
            if heldout:
                kept: Iterator = (s for s in read if is_heldout_sample(s, self.holdout_fraction))
            else:
                kept = (s for _, s in self._train_items(read))
            return list(islice(kept, n))


class ListDataset(Dataset):
    """A map-style dataset over a list of samples (the held-out samples read off a stream)."""

    def __init__(self, samples: list) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.samples[index]


def first_sample(dataset: Any) -> Any:
    """``dataset[0]``, or the first training sample of a :class:`StreamDataset` without consuming it."""
    if isinstance(dataset, StreamDataset):
        return dataset.peek()
    return dataset[0]


def check_stream_workers(stream: Any, name: str, num_workers: int) -> None:
    """A Hugging Face stream needs a shard per DataLoader worker (it gives each worker whole shards).

    Raises:
        ValueError: when ``num_workers`` exceeds the stream's shards.
    """
    shards = getattr(stream, "num_shards", None) if is_hf_stream(stream) else None
    if num_workers > 0 and shards is not None and shards < num_workers:
        raise ValueError(
            f"streaming source {name!r} has {shards} shard(s) but the DataLoader has {num_workers} workers; Hugging "
            "Face gives each worker whole shards, so some workers would have no samples. Use at most "
            f"{shards} workers (`num_workers=`), or more shards (e.g. `Dataset.to_iterable_dataset(num_shards="
            f"{num_workers})`)."
        )


__all__ = [
    "ListDataset",
    "StreamDataset",
    "check_stream_workers",
    "first_sample",
    "is_heldout_sample",
    "is_hf_stream",
    "is_stream",
]
