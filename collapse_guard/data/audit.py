"""A source audit before training: each synthetic source against the real training data.

For every map-style synthetic source of a set-up :class:`~collapse_guard.MixedDataModule`, a seeded sample of at
most ``max_samples`` of its training samples is compared with a sample of the real training data:

* class marginal (a classifier's integer targets ``(N,)``): the classes the source lacks
  (:func:`~collapse_guard.metrics.functional.class_marginal.missing_classes`) and the total variation between the
  marginals (:func:`~collapse_guard.metrics.functional.classification.marginal_total_variation`);
* k-NN precision, recall, density and coverage in input space (floating inputs of at most ``MAX_DIM`` features,
  flattened; :func:`~collapse_guard.metrics.functional.prdc`: Kynkäänniemi et al. 2019, Naeem et al. 2020), against
  half of the real sample, with the other half against it as the real-vs-real baseline (``"real"``): precision and
  recall fall with the dimension even for real data, so read a source's against the baseline's;
* exact copies of held-out real samples, from the held-out check of set-up (``MixedDataModule.contamination``).

Non-finite values are not audited: a source holding them is refused at set-up. Streams are not audited (no pool
to sample before training). No global random state moves.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor

from collapse_guard._rng import preserved_rng
from collapse_guard.data.checks import split_batches
from collapse_guard.metrics.functional.class_marginal import missing_classes
from collapse_guard.metrics.functional.classification import marginal_total_variation
from collapse_guard.metrics.functional.knn import prdc

#: inputs with more features than this are not compared in input space (have ``batch_fn`` return features of
#: your own as the inputs then)
MAX_DIM = 4096
#: samples read and collated together (a batch of ``split_batches``)
CHUNK = 512


def _read(dataset: Any, indices: Tensor, collate: Optional[Callable], batch_fn: Callable) -> tuple[Any, Tensor]:
    """``(inputs, targets)`` of ``dataset[i]`` for ``indices``, collated in chunks and split by ``batch_fn``."""
    inputs, targets = [], []
    for x, y in split_batches(dataset, indices.tolist(), collate, CHUNK, batch_fn):
        inputs.append(x)
        targets.append(torch.as_tensor(y))
    if not targets:
        return None, torch.empty(0)
    tensors = all(isinstance(x, Tensor) for x in inputs) and len({x.shape[1:] for x in inputs}) == 1
    target = torch.cat(targets) if len({t.shape[1:] for t in targets}) == 1 else torch.empty(0)
    return (torch.cat(inputs) if tensors else None), target


def _features(inputs: Any) -> Optional[Tensor]:
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point() or len(inputs) < 12:
        return None
    flat = inputs.reshape(len(inputs), -1).double()
    return flat if flat.shape[1] <= MAX_DIM else None


def _is_class_target(target: Tensor) -> bool:
    return target.ndim == 1 and not target.is_floating_point() and not target.dtype == torch.bool and len(target) > 0


def _sample(pool: Tensor, n: int, gen: torch.Generator) -> Tensor:
    return pool[torch.randperm(len(pool), generator=gen)[:n]] if len(pool) > n else pool


def audit_sources(dm: Any, batch_fn: Callable[[Any], tuple[Any, Tensor]], max_samples: int = 1000, k: int = 5,
                  missing_share: float = 0.1, seed: int = 0) -> dict:
    """Audit every map-style synthetic source of a set-up ``MixedDataModule`` against its real training data.

    Args:
        dm: the datamodule, after ``setup("fit")``.
        batch_fn: ``batch -> (inputs, target)`` of a collated batch (as ``HeldOutRealCheck`` takes it).
        max_samples: samples read per source (and of the real data), at most.
        k: the neighbour rank of precision / recall / density / coverage.
        missing_share: a class at less than this fraction of its real share counts as missing.
        seed: the seed of the samples read.

    Returns:
        ``{"samples", "k", "real": {"samples", "classes", "precision", "recall", "density", "coverage"},
        "sources": {name: {"samples", "missing_classes", "class_tv", "precision", "recall", "density",
        "coverage", "coverage_vs_best", "heldout_copies"}}}``; a value that does not apply (no class target, inputs not comparable,
        copies not yet known) is ``None``; ``missing_classes`` is a list of class ids.

    Example::

        report = audit_sources(dm, lambda batch: (batch[0], batch[1]))
        report["sources"]["gen20"]["missing_classes"]   # e.g. [3, 8]
    """
    mixer = dm.mixer
    gen = torch.Generator().manual_seed(seed)
    collate = dm._options.collate_fn
    with preserved_rng():
        real_x, real_y = _read(dm.train_set, _sample(mixer.base_real_pool, max_samples, gen), collate, batch_fn)
        real_f = _features(real_x)
        half = len(real_f) // 2 if real_f is not None else 0
        report: dict = {"samples": max_samples, "k": k, "real": {"samples": len(real_y), "classes": None}, "sources": {}}
        if real_f is not None and half > k:
            report["real"].update({m: float(v) for m, v in prdc(real_f[:half], real_f[half:2 * half], k=k).items()})
        classes = _is_class_target(real_y)
        contamination = (getattr(dm, "contamination", None) or {}).get("sources", {})
        for source, pool in zip(mixer.sources[2:], mixer.synthetic_pools):
            if source.streaming or not len(pool):
                continue
            x, y = _read(dm.train_set, _sample(pool, max_samples, gen), collate, batch_fn)
            entry: dict = {"samples": len(y), "missing_classes": None, "class_tv": None,
                           "heldout_copies": (contamination.get(source.name) or {}).get("duplicates")}
            if classes and _is_class_target(y):
                num_classes = int(max(real_y.max(), y.max())) + 1
                report["real"]["classes"] = num_classes
                entry["missing_classes"] = missing_classes(real_y, y, num_classes, missing_share).tolist()
                entry["class_tv"] = float(marginal_total_variation(
                    torch.bincount(y.long(), minlength=num_classes), torch.bincount(real_y.long(), minlength=num_classes)))
            f = _features(x)
            if real_f is not None and f is not None and half > k and len(f) > k and f.shape[1] == real_f.shape[1]:
                entry.update({m: float(v) for m, v in prdc(real_f[:half], f[:half], k=k).items()})
            report["sources"][source.name] = entry
        _coverage_vs_best(report["sources"])
    return report


def _coverage_vs_best(entries: dict) -> None:
    """Each source's coverage over the best source's (``coverage_vs_best``, in ``[0, 1]``; ``None`` without one):
    how much of the real data's neighbourhoods it covers beside the other synthetic sources. A good generator may
    cover less than real data does (the help-text 3-gram generator of benchmarks/RESULTS.md section 9, seeds 0-1:
    coverage 0.80-0.81 against 0.98-0.99 real-vs-real, the ``audit`` of the ``good+good2`` runs in
    ``runs/bench/multisource_dev.json``), so a source is judged against
    its peers: a collapsed generation or an offset source covers far less than a good one beside it. The best is
    taken among the sources that lack no class (all of them when every one lacks some): a source missing classes is
    named by them, not a reference that makes a complete source look poor (with noisy coverage, e.g. text, it can
    cover more of the real data than a complete one)."""
    measured = [e for e in entries.values() if e.get("coverage") is not None]
    complete = [e for e in measured if not e.get("missing_classes")]  # a source lacking classes is no reference
    best = max((e["coverage"] for e in complete or measured), default=None)
    for entry in entries.values():
        coverage = entry.get("coverage")
        entry["coverage_vs_best"] = coverage / best if coverage is not None and best else None


def audit_metrics(report: dict) -> dict[str, float]:
    """The audit as metric keys ``collapse/audit/<name>/<source>`` (and ``collapse/audit/<name>/real``, the
    real-vs-real baseline): numbers only; ``missing_classes`` as their count.

    Args:
        report: what :func:`audit_sources` returned.

    Returns:
        ``{key: value}``, a float per number of the report (``samples`` and ``classes`` left out; a value of
        ``None`` or a bool left out too): shares and k-NN values in ``[0, 1]`` (density may exceed 1), copies and
        missing classes as counts.

    Example::

        audit_metrics(report)["collapse/audit/missing_classes/gen20"]   # 2.0
    """
    out: dict[str, float] = {}
    for name, entry in [("real", report["real"]), *report["sources"].items()]:
        for key, value in entry.items():
            if key in ("samples", "classes"):
                continue
            if isinstance(value, list):
                value = len(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"collapse/audit/{key}/{name}"] = float(value)
    return out


__all__ = ["MAX_DIM", "audit_metrics", "audit_sources"]
