"""The reference check of ``HeldOutRealCheck``'s paired indicators (classifiers): which held-out samples were right
at the best check so far, kept from check to check and in checkpoints.

At every check a classifier's held-out real pass gives each sample's correctness, in the fixed order of the held-out
loader (each DDP rank its own shard). :class:`PairedReference` pairs it with the reference check's
(:class:`~collapse_guard.metrics.classification.PairedCorrectness`, counts summed over ranks) and logs
``collapse/heldout_real/acc_change`` and ``acc_change_stderr``, and per class ``class_recall_change/<c>`` and
``class_recall_change_stderr/<c>``.

**The reference is the check with the best held-out real accuracy so far** (the first check with it: a later tie
does not move it). Why: it is the model a user would want back (the weights ``CollapseGuard`` restores are those
of the best accuracy too), so a fall from it is the damage; it is decided from the synced accuracy, the same number
on every rank, so every rank moves its reference at the same check; and a best chosen among noisy checks (the
winner's curse) sits a little high, but only by samples that flipped, which the paired standard error counts. At
the first check, and whenever the reference does not fit the held-out set (another held-out set, another number
of ranks), the check is its own reference: change 0, standard error 0.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from collapse_guard.metrics.classification import ClassificationIndicators, PairedCorrectness

ACC = "collapse/heldout_real/acc"
PREFIX = "collapse/heldout_real/"


class PairedReference:
    """The reference check's per-sample correctness (every rank's shard, so a checkpoint written by rank 0 resumes
    every rank) and its accuracy.

    Example::

        reference = PairedReference()
        values.update(reference.values(trainer, metric, values))   # after the held-out metrics are computed
    """

    def __init__(self) -> None:
        #: rank -> that rank's held-out samples' correctness at the reference check (bool ``(N_rank,)``, CPU)
        self.shards: dict[int, Tensor] = {}
        #: the reference check's held-out real accuracy and epoch (``None``: no reference yet)
        self.best: Optional[float] = None
        self.epoch: Optional[int] = None

    def values(self, trainer: Any, metric: Any, values: dict[str, float]) -> dict[str, float]:
        """The paired indicators of this check (every rank calls it: it syncs), and the reference moved to this
        check when its accuracy is the best so far. Empty for a metric that is not a classifier's."""
        if not isinstance(metric, ClassificationIndicators) or ACC not in values:
            return {}
        correct = torch.cat(metric.correct) if metric.correct else torch.zeros(0, dtype=torch.bool)
        target = torch.cat(metric.targets) if metric.targets else torch.zeros(0, dtype=torch.long)
        paired = PairedCorrectness(metric.num_classes).to(correct.device)
        reference = self.shards.get(int(trainer.global_rank))
        paired.update(correct, None if reference is None else reference.to(correct.device), target)
        computed = paired.compute()
        fresh = int(computed.pop("unpaired")) > 0 or self.best is None
        if fresh:  # its own reference: nothing changed (the class keys of the classes present)
            computed = {k: torch.zeros(()) for k in PairedCorrectness.KEYS}
            computed.update({f"{family}/{key[len(PREFIX + 'class_recall/'):]}": torch.zeros(())
                             for key in values if key.startswith(PREFIX + "class_recall/")
                             for family in PairedCorrectness.CLASS_KEYS})
        if fresh or values[ACC] > self.best:
            self.shards = gather_shards(trainer, correct)
            self.best, self.epoch = float(values[ACC]), int(trainer.current_epoch)
        return {PREFIX + k: float(v) for k, v in computed.items()}

    def state_dict(self) -> dict:
        """JSON-ready: the accuracy and epoch, and each rank's correctness as a string of ``0`` and ``1``."""
        return {"best": self.best, "epoch": self.epoch,
                "shards": {str(r): "".join("1" if x else "0" for x in s.tolist()) for r, s in self.shards.items()}}

    def load_state_dict(self, state: Optional[dict]) -> None:
        """Restore :meth:`state_dict` (``None``, a state saved before the paired indicators: no reference)."""
        state = state or {}
        self.best, self.epoch = state.get("best"), state.get("epoch")
        self.shards = {int(r): torch.tensor([c == "1" for c in s], dtype=torch.bool)
                       for r, s in (state.get("shards") or {}).items()}


def gather_shards(trainer: Any, correct: Tensor) -> dict[int, Tensor]:
    """Every rank's ``correct`` (of different lengths), on every rank: ``{rank: bool tensor on the CPU}``."""
    world = int(getattr(trainer, "world_size", 1) or 1)
    if world <= 1:
        return {0: correct.detach().bool().cpu()}
    strategy = trainer.strategy
    sizes = strategy.all_gather(torch.tensor([correct.numel()], device=correct.device)).reshape(world).tolist()
    padded = torch.zeros(max(sizes), dtype=torch.uint8, device=correct.device)
    padded[:correct.numel()] = correct.to(torch.uint8)
    gathered = strategy.all_gather(padded).reshape(world, -1).cpu()
    return {r: gathered[r, :n].bool() for r, n in enumerate(sizes)}
