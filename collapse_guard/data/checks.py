"""Content checks of a :class:`~collapse_guard.MixedDataModule`'s data at set-up, and the contamination report.

Each check takes what it checks as arguments and raises a ``ValueError`` that says what is wrong and how to fix it:
the real fraction schedule against the pools (:func:`check_schedule`), every source's sample structure and their
collate (:func:`check_samples`, :func:`check_collate`), the synthetic samples' values (:func:`check_finite`),
the held-out sets against the world size (:func:`check_world_size`), and held-out real data against everything
trained on (:func:`verify_holdout`, which also reports synthetic copies of held-out real samples: at set-up, or for
a large source without bulk access as the first epoch reads it, :func:`first_epoch_scan`).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from collapse_guard._compat import rank_zero_warn
from collapse_guard._rng import preserved_rng
from collapse_guard.data.digests import RowDigests, has_bulk_access, sample_digests, stacked_digests
from collapse_guard.data.finite import FiniteScan, bulk_non_finite, non_finite_error, read_non_finite
from collapse_guard.data.first_epoch import FirstEpochScan, deferred_record
from collapse_guard.data.mixing import MixingState
from collapse_guard.data.row_index import index_by_digest, matches
from collapse_guard.data.sources import DataSource
from collapse_guard.data.streams import first_sample
from collapse_guard.data.structure import non_finite_part, structure_mismatch

#: samples of a large synthetic source without bulk access checked for non-finite values at set-up (the rest as the
#: first training epoch reads them)
FINITE_CHECKED = 4
#: a synthetic source without bulk access of at least this many samples is checked at the first epoch
DEFER_MIN_ROWS = 20_000


def check_schedule(mixer: MixingState, epochs: Iterable[int], has_real: bool, has_synthetic: bool) -> None:
    """The target real fraction of every epoch in ``epochs`` can be drawn from the pools.

    Raises:
        ValueError: a fraction below 1 without synthetic data, or above 0 without real training data (or a schedule
            that fails, see :meth:`MixingState.scheduled_fraction`).
    """
    for epoch in epochs:
        f = mixer.scheduled_fraction(epoch)
        if f < 1.0 and not has_synthetic:
            raise ValueError(
                f"`real_fraction` is {f} at epoch {epoch} but no synthetic source was given: pass `synthetic` "
                "or set real_fraction=1.0."
            )
        if f > 0.0 and not has_real:
            raise ValueError(
                f"`real_fraction` is {f} at epoch {epoch} but `holdout` and `reserve` leave no real training "
                "samples: lower them (the reserve enters training only through inject())."
            )


def check_samples(real_sample: Any, others: Sequence[tuple[str, Any]]) -> None:
    """Every source mixed into training batches yields samples of the real data's structure and dtypes.

    Args:
        real_sample: one real training sample.
        others: ``(label for the message, first sample)`` of every other source.

    Raises:
        ValueError: a source whose samples differ from the real one in structure or dtypes.
    """
    for label, sample in others:
        mismatch = structure_mismatch(real_sample, sample)
        if mismatch is not None:
            raise ValueError(
                f"{label} yields samples unlike the real data's ({mismatch}). Its samples are mixed into the same "
                "training batches as the real ones, so they need the same structure and dtypes: convert them "
                "(e.g. `.float()`, `.long()`, or `datasets.Dataset.with_format('torch')`) when you build the source."
            )


def check_collate(collate: Optional[Callable], samples: list, names: list[str], what: Optional[str] = None) -> None:
    """Collate one sample of each source (named ``names``) into one batch, as a mixed batch will.

    Args:
        collate: the collate function (``None``: PyTorch's default).
        samples: one sample of each source.
        names: the sources' names, for the message.
        what: how the message starts (default: the sources named).

    Raises:
        ValueError: the collate function fails on them.
    """
    try:
        (collate or default_collate)(samples)
    except Exception as err:  # noqa: BLE001 - re-raised with what to fix
        raise ValueError(
            f"{what or f'samples of sources {names} cannot be collated into one batch'} "
            f"({type(err).__name__}: {err}). "
            "Every source must yield samples of the same structure, shapes and dtypes as the real data "
            "(e.g. the same (x, y) tuple or the same dict keys)."
        ) from err


def check_finite(sources: Sequence[tuple[DataSource, Any, tuple[int, int]]]) -> Optional[FiniteScan]:
    """Every synthetic source (and a ``reserve`` given as a Dataset) holds no NaN or infinity in a floating part.

    What is read at set-up (:mod:`~collapse_guard.data.finite`): every row of a source with bulk access, in bulk
    (vectorised, ``finite.CHUNK_ROWS`` rows at a time, floating columns only: 1M rows of 32 float32 in 0.016 s off a
    tensor, 0.09 s off an Arrow table, benchmarks/RESULTS.md section 7); every sample of a source without bulk
    access of fewer than ``DEFER_MIN_ROWS`` samples; the first ``FINITE_CHECKED`` samples of a larger one and a
    stream's first training sample. The rest of those two is checked as training reads it (the returned
    :class:`~collapse_guard.data.finite.FiniteScan`): a large source without bulk access during the first epoch, a
    stream (and a large reserve) at every epoch.

    Args:
        sources: ``(source, its first sample, (start, stop) of its indices in the training set)`` of each source to
            check; the first sample already read (:func:`~collapse_guard.data.streams.first_sample`).

    Returns:
        The scan of the samples left to training, or ``None`` when every sample was checked.

    Raises:
        ValueError: naming the source, its first non-finite sample and the part holding NaN or an infinity, and how
            many samples hold some where all were checked.

    Example::

        source = DataSource("gen", TensorDataset(x, y), is_real=False)  # x[5000, 3] is NaN
        check_finite([(source, source.dataset[0], (100, 100 + len(x)))])
        # ValueError: synthetic source 'gen' holds NaN or infinite values: its sample #5000 has them in sample[0] ...
    """
    later = []
    for source, first, (start, stop) in sources:
        if source.streaming:
            part = non_finite_part(first)
            if part is not None:
                raise non_finite_error(source, "first sample", part)
            later.append((source, start, stop, True))
            continue
        bad, counted = bulk_non_finite(source.dataset), True
        if bad is None and len(source) >= DEFER_MIN_ROWS:  # read one at a time: as training reads it
            bad, counted = read_non_finite(source.dataset, FINITE_CHECKED), False
            later.append((source, start, stop, source.is_real))
        if bad is None:
            bad = read_non_finite(source.dataset)
        if len(bad):
            found = f"{len(bad)} of its {len(source)} samples" if counted else ""
            raise non_finite_error(source, f"sample #{bad[0]}", non_finite_part(source.dataset[int(bad[0])]), found)
    return FiniteScan(later) if later else None


def check_layout(
    layout: Any, mixer: MixingState, train_set: Dataset, collate: Optional[Callable], epochs: Iterable[int],
    reserve_given: bool,
) -> Optional[FiniteScan]:
    """The checks of a fresh :class:`~collapse_guard.data.splits.Layout`: the schedule of ``epochs`` against the
    pools, then (without moving the random state) every source's sample structure and one collated batch.

    Args:
        layout: the layout.
        mixer: the mixing state built on it (its schedule).
        train_set: the concatenated training set.
        collate: the collate function (``None``: PyTorch's default).
        epochs: the epochs whose target real fraction to check.
        reserve_given: the reserve is a Dataset of its own (its samples are compared too).

    Raises:
        ValueError: see :func:`check_schedule`, :func:`check_samples`, :func:`check_collate` (a given reserve's
            first sample is collated with a real one too: reserve samples join real ones after an injection) and
            :func:`check_finite`.

    Returns:
        :func:`check_finite`'s scan of the samples left to training (``None``: every sample was checked).
    """
    pool, synthetic = layout.real_pool, layout.synthetic
    check_schedule(mixer, epochs, len(pool) > 0, bool(layout.synthetic_pools))
    with preserved_rng():  # reading samples must not move the user's random state (augmenting datasets)
        real_sample = train_set[int(pool[0] if len(pool) else layout.reserve_order[0])]
        firsts = [first_sample(s.dataset) for s in synthetic]  # each read once, for every check below
        reserve_first = first_sample(layout.reserve_data) if reserve_given else None
        others = [("`reserve`", reserve_first)] if reserve_given else []
        check_samples(real_sample, others + [(f"synthetic source {s.name!r}", f) for s, f in zip(synthetic, firsts)])
        if reserve_given:  # reserve samples join real ones in the batches after an injection
            check_collate(collate, [real_sample, reserve_first], ["real", "reserve"],
                          what="`reserve` yields samples that cannot be collated with the real ones")
        n_real = len(layout.datasets[0])
        reserve = [(layout.sources[1], reserve_first, (n_real, n_real + len(layout.reserve_data)))] * reserve_given
        scan = check_finite(reserve + list(zip(synthetic, firsts, layout.spans)))
        if synthetic:
            samples = [train_set[int(pool[0])]] if len(pool) else []
            samples += [f if s.streaming else train_set[int(p[0])]
                        for s, f, p in zip(synthetic, firsts, layout.synthetic_pools)]
            check_collate(collate, samples, ["real"] * min(1, len(pool)) + [s.name for s in synthetic])
    return scan


def check_world_size(world_size: int, heldout_real: Dataset, heldout_synthetic: Optional[Dataset]) -> None:
    """Held-out sets are split between ranks: each rank needs at least one sample.

    Raises:
        ValueError: a held-out set smaller than ``world_size``.
    """
    if world_size <= 1:
        return
    for name, dataset, fix in (
        ("held-out real", heldout_real, "pass a larger `holdout`"),
        ("held-out synthetic", heldout_synthetic, "raise `synthetic_holdout` or set it to 0"),
    ):
        if dataset is not None and len(dataset) < world_size:
            raise ValueError(
                f"the {name} set has {len(dataset)} samples, fewer than the {world_size} ranks that share it at "
                f"every check: {fix}."
            )


def _source_copies(heldout: Any, source: DataSource, pool: Tensor, start: int, key: Optional[Callable]) -> dict:
    """How many samples of one synthetic source are copies of held-out real ones (a stream cannot be scanned; a large
    source without bulk access is scanned as the first epoch reads it, see :func:`defers`)."""
    if source.streaming:
        return {"size": None, "streaming": True, "duplicates": None, "in_training": None,
                "heldout_real_matched": None, "examples": []}
    if defers(source, key):
        return deferred_record(len(source))
    hits = matches(heldout, sample_digests(source.dataset, key=key))
    training = torch.zeros(len(source), dtype=torch.bool)
    training[pool - start] = True
    positions = torch.tensor([i for i, _ in hits], dtype=torch.long)
    return {
        "size": len(source),
        "duplicates": len(hits),
        "in_training": int(training[positions].sum()) if hits else 0,
        "heldout_real_matched": len({h for _, h in hits}),
        "examples": [[int(i), int(h)] for i, h in hits[:5]],
    }


def defers(source: DataSource, key: Optional[Callable]) -> bool:
    """Whether ``source``'s copies of held-out real data are looked for at the first epoch, not at set-up: a
    map-style source of at least ``DEFER_MIN_ROWS`` samples without bulk access (or with a ``key``), which set-up
    would read one sample at a time (:func:`~collapse_guard.data.digests.has_bulk_access`).

    Args:
        source: a synthetic source.
        key: what of a sample the check hashes (``None``: all of it).

    Returns:
        ``True`` when the source is checked at the first epoch.

    Example::

        defers(DataSource("g", TensorDataset(torch.zeros(10**6, 4)), is_real=False), None)  # False: bulk access
    """
    if source.streaming or len(source) < DEFER_MIN_ROWS:
        return False
    return key is not None or not has_bulk_access(source.dataset)


def first_epoch_scan(heldout_real: Dataset, report: dict, synthetic: Sequence[DataSource],
                     spans: Sequence[tuple[int, int]], key: Optional[Callable] = None, rank: int = 0,
                     world_size: int = 1) -> Optional[FirstEpochScan]:
    """The :class:`~collapse_guard.data.first_epoch.FirstEpochScan` of the sources :func:`verify_holdout` deferred.

    Args:
        heldout_real: the held-out real data.
        report: :func:`verify_holdout`'s report (its deferred records are updated as the first epoch finds copies).
        synthetic: the synthetic sources.
        spans: ``(start, stop)`` of every synthetic source's indices.
        key: what of a sample to hash, as given to :func:`verify_holdout`.
        rank: this process's rank.
        world_size: the number of processes.

    Returns:
        The scan, or ``None`` when no source was deferred.

    Example::

        scan = first_epoch_scan(held, report, layout.synthetic, layout.spans)
        loader = DataLoader(scan.wrap(train_set, num_workers=0), batch_sampler=sampler) if scan else ...
    """
    records = report.get("sources", {})
    deferred = [(s.name, start, stop) for s, (start, stop) in zip(synthetic, spans)
                if records.get(s.name, {}).get("deferred")]
    if not deferred:
        return None
    with preserved_rng():
        digests = sample_digests(heldout_real, key=key)
        rows = digests if isinstance(digests, RowDigests) else stacked_digests(heldout_real, key=key)
        heldout = dict(index_by_digest(digests))
    return FirstEpochScan(heldout, deferred, records, key=key, rank=rank, world_size=world_size, heldout_rows=rows)


def _leak_error(what: str, real_idx: Tensor, in_train: list, in_reserve: list) -> ValueError:
    where = []
    if in_train:
        pairs = ", ".join(f"held-out #{h} = real #{int(real_idx[i])}" for i, h in in_train[:3])
        where.append(f"{len(in_train)} in the real training data ({pairs}{', ...' if len(in_train) > 3 else ''})")
    if in_reserve:
        pairs = ", ".join(f"held-out #{h} = reserve #{i}" for i, h in in_reserve[:3])
        where.append(f"{len(in_reserve)} in the reserve ({pairs}{', ...' if len(in_reserve) > 3 else ''})")
    return ValueError(
        f"{what}: held-out real samples are also training data: {'; '.join(where)} (identical content). "
        "Held-out data must never be trained on, or every check measures memorisation: remove the duplicates "
        "from the real data or the held-out set, or pass verify_holdout=False to skip this check."
    )


def verify_holdout(
    heldout_real: Dataset,
    real_dataset: Dataset,
    real_idx: Tensor,
    reserve_data: Dataset,
    synthetic: Sequence[DataSource],
    synthetic_pools: Sequence[Tensor],
    spans: Sequence[tuple[int, int]],
    key: Optional[Callable[[Any], Any]] = None,
    holdout_label: str = "`holdout`",
) -> dict:
    """Held-out real data must not be training or reserve data; synthetic copies of it are counted.

    Compares content digests (:func:`~collapse_guard.data.digests.sample_digests`) without moving the global random
    generators. Real training and reserve data are always compared here (an error must come before training); a
    synthetic source :func:`defers` to the first epoch gets a record with ``"deferred": True`` and ``None`` counts,
    which :func:`first_epoch_scan` fills in as the first epoch reads its samples.

    Args:
        heldout_real: the held-out real data.
        real_dataset: the real data, of which ``real_idx`` are the training samples.
        real_idx: long tensor of real training indices.
        reserve_data: the reserve.
        synthetic: the synthetic sources, with their training pools and ``(start, stop)`` index spans.
        synthetic_pools: one long tensor of training indices per synthetic source.
        spans: ``(start, stop)`` of every synthetic source's indices.
        key: what of a sample to hash (``None``: all of it).
        holdout_label: how the error names the held-out data.

    Returns:
        The contamination report: ``{"checked": True, "heldout_real": n, "sources": {name: {"size", "duplicates",
        "in_training", "heldout_real_matched", "examples"}}}`` (a deferred source's record also has ``"deferred"``
        and ``"scanned"``, the samples read so far).

    Raises:
        ValueError: a held-out real sample is also a real training or reserve sample.

    Example::

        report = verify_holdout(held, real, torch.arange(len(real)), Subset(real, []), [], [], [])
    """
    with preserved_rng():
        heldout = index_by_digest(sample_digests(heldout_real, key=key))
        in_train = matches(heldout, sample_digests(real_dataset, real_idx, key=key))
        in_reserve = matches(heldout, sample_digests(reserve_data, key=key)) if len(reserve_data) else []
        per_source = {source.name: _source_copies(heldout, source, pool, start, key)
                      for source, pool, (start, _) in zip(synthetic, synthetic_pools, spans)}
    if in_train or in_reserve:
        raise _leak_error(holdout_label, real_idx, in_train, in_reserve)
    return {"checked": True, "heldout_real": len(heldout_real), "sources": per_source}


def warn_heldout_copies(report: dict) -> None:
    """Warn (on rank 0) about the synthetic copies of held-out real samples that :func:`verify_holdout` found."""
    per_source = report.get("sources", {})
    dirty = {name: r["duplicates"] for name, r in per_source.items() if r["duplicates"]}
    if dirty:
        rank_zero_warn(
            f"synthetic samples identical to held-out real samples: {dirty} (samples per source; "
            f"{sum(r['heldout_real_matched'] or 0 for r in per_source.values())} of the {report['heldout_real']} "
            "held-out real samples have a synthetic copy). A generator that memorised held-out data makes every "
            "held-out check look better than it is: remove these samples from the synthetic sources or hold out "
            "other real data. Details in `MixedDataModule.contamination`."
        )


def heldout_classes(
    heldout: Dataset, collate: Optional[Callable], batch_size: int, batch_fn: Callable[[Any], tuple[Any, Tensor]]
) -> Tensor:
    """The sorted distinct targets of ``heldout``: one pass in batches of ``batch_size``, collated with ``collate``
    (``None``: PyTorch's default), split by ``batch_fn: batch -> (inputs, target)``, no random state moved."""
    with preserved_rng():
        found = [torch.as_tensor(target).reshape(-1).unique()
                 for _, target in split_batches(heldout, range(len(heldout)), collate, batch_size, batch_fn)]
    return torch.cat(found).unique() if found else torch.empty(0)


def split_batches(dataset: Dataset, indices: Sequence[int], collate: Optional[Callable], batch_size: int,
                  batch_fn: Callable[[Any], tuple[Any, Tensor]]) -> Iterator[tuple[Any, Any]]:
    """``(inputs, target)`` of ``dataset[i]`` for ``indices``, ``batch_size`` at a time, collated with ``collate``
    (``None``: PyTorch's default) and split by ``batch_fn``. Moves no random state of its own.

    Example::

        for x, y in split_batches(heldout, range(len(heldout)), None, 256, lambda b: (b[0], b[1])): ...
    """
    indices = list(indices)
    for start in range(0, len(indices), batch_size):
        yield batch_fn((collate or default_collate)([dataset[int(i)] for i in indices[start:start + batch_size]]))
