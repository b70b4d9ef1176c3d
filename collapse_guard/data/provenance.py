"""The provenance manifest of a set-up :class:`~collapse_guard.MixedDataModule`: what every source is and gave.

``MixedDataModule.provenance()`` returns it; the JSON record of :class:`~collapse_guard.CollapseReport` holds it
under ``"provenance"``.
"""
from __future__ import annotations

from typing import Optional

from torch.utils.data import Dataset

from collapse_guard.data.mixing import MixingState
from collapse_guard.data.streams import StreamDataset

#: version of the layout of the run record (and of the provenance manifest in it)
SCHEMA_VERSION = 1
#: the ``"kind"`` of a provenance manifest
PROVENANCE_KIND = "collapse_guard.provenance"


def pool_sizes(mixer: MixingState) -> list[Optional[int]]:
    """Training pool size of each source: real pool, whole reserve, each synthetic source's training part
    (``None`` for a streaming source: its slots take the stream's next samples)."""
    sizes = [len(mixer.base_real_pool), len(mixer.reserve_order)] + [len(p) for p in mixer.synthetic_pools]
    sizes += [None] * (len(mixer.sources) - len(sizes))
    return [None if isinstance(s.dataset, StreamDataset) else n for s, n in zip(mixer.sources, sizes)]


def provenance_manifest(
    mixer: MixingState, contamination: dict, heldout_real: Optional[Dataset], heldout_synthetic: Optional[Dataset]
) -> dict:
    """The provenance manifest: every source and what it gave the fit.

    Args:
        mixer: the datamodule's mixing state (sources, pools, counts, injections, seed).
        contamination: the datamodule's contamination report (``{"checked": False}`` when not checked).
        heldout_real: the held-out real dataset.
        heldout_synthetic: the held-out synthetic dataset, or ``None``.

    Returns:
        ``{"schema_version", "kind", "seed", "samples_total", "real_share", "sources", "heldout", "injections",
        "contamination"}``; each source: its provenance (name, kind real or synthetic, generator, parameters,
        generation: 0 for real data, size), ``training_pool`` (``None`` for a stream), ``samples`` drawn over the
        fit (all ranks), ``share`` of all samples drawn (``None`` before any) and ``heldout_copies`` (synthetic
        copies of held-out real samples; ``None`` when not checked).
    """
    counts = [int(c) for c in mixer.total_counts.tolist()]
    total = sum(counts)
    contamination = contamination or {}
    copies = contamination.get("sources", {}) if contamination.get("checked") else {}
    sources = []
    for source, n, pool in zip(mixer.sources, counts, pool_sizes(mixer)):
        entry = dict(source.provenance())
        entry.setdefault("kind", "real" if source.is_real else "synthetic")
        if entry["kind"] == "real" and entry.get("generation") is None:
            entry["generation"] = 0
        entry["training_pool"] = pool
        entry["samples"] = n
        entry["share"] = n / total if total else None
        entry["heldout_copies"] = copies.get(source.name, {}).get("duplicates") if copies else None
        sources.append(entry)
    real = sum(n for s, n in zip(sources, counts) if s["kind"] == "real")
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": PROVENANCE_KIND,
        "seed": mixer.seed,
        "samples_total": total,
        "real_share": real / total if total else None,
        "sources": sources,
        "heldout": {
            "real": len(heldout_real) if heldout_real is not None else None,
            "synthetic": len(heldout_synthetic) if heldout_synthetic is not None else 0,
        },
        "injections": [dict(i) for i in mixer.injections],
        **({"quarantines": [dict(q) for q in mixer.quarantines]} if mixer.quarantines else {}),
        "contamination": dict(contamination),
    }
