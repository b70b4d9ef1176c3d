"""``SourceCheck``: every synthetic source's own indicators at every check, and how its batches pull the model."""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from collapse_guard._compat import Callback, LightningModule, Trainer
from collapse_guard._numbers import check_count
from collapse_guard._rng import preserved_rng
from collapse_guard.callbacks._base import CollapseMetricsProducer, require_mixed_datamodule, run_collectively
from collapse_guard.callbacks._model_io import default_batch_fn, default_forward_fn
from collapse_guard.callbacks.quarantine import active_sources
from collapse_guard.callbacks.rules import Rule
from collapse_guard.data.checks import split_batches
from collapse_guard.metrics.functional.classification import binomial_standard_error
from collapse_guard.metrics.functional.gradient_alignment import flat_gradient, gradient_cosines

PARAMS = ("last", "all")
#: the keys logged for a classifier only
CLASSIFIER_KEYS = ("acc", "acc_gap", "acc_vs_best", "acc_vs_best_stderr")
#: a source at least this far below the best source's accuracy, and ``ACC_SIGMAS`` standard errors of the
#: difference, two checks running, is named by the default attribution (benchmarks/RESULTS.md, sections 9 and 9c)
ACC_VS_BEST = 0.15
ACC_SIGMAS = 3.0


def _last_parameters(module: torch.nn.Module) -> list[Tensor]:
    """The trainable parameters of the last submodule that holds any directly (a classifier's output layer)."""
    owners = [m for m in module.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    return [p for p in owners[-1].parameters(recurse=False) if p.requires_grad] if owners else []


def versus_best(rights: dict[str, Tensor]) -> dict[str, float]:
    """Each source's accuracy minus the best source's (``collapse/source/acc_vs_best/<s>``, in ``[-1, 0]``) and the
    standard error of that difference (``.../acc_vs_best_stderr/<s>``: the two proportions' Agresti-Coull standard
    errors in quadrature, independent samples).

    Args:
        rights: source name -> per-sample correctness ``(N,)`` (0/1) on its held-out samples.

    Example::

        versus_best({"a": torch.ones(50), "b": torch.zeros(50)})["collapse/source/acc_vs_best/b"]   # -1.0
    """
    if not rights:
        return {}
    accs = {name: float(right.double().mean()) for name, right in rights.items()}
    ses = {name: float(binomial_standard_error(right.double().sum(), torch.tensor(float(len(right)))))
           for name, right in rights.items()}
    best = max(accs, key=accs.get)
    out = {}
    for name in rights:
        out[f"collapse/source/acc_vs_best/{name}"] = accs[name] - accs[best]
        out[f"collapse/source/acc_vs_best_stderr/{name}"] = (ses[name] ** 2 + ses[best] ** 2) ** 0.5
    return out


class SourceCheck(Callback, CollapseMetricsProducer):
    """Per synthetic source, every ``every_n_epochs`` epochs: its held-out samples through the model, and the cosine
    between the gradient of a batch of that source and the gradient of held-out real data.

    Logged for each synthetic source ``<s>`` of the fit's ``MixedDataModule`` with held-out samples
    (``MixedDataModule(synthetic_holdout=...)``, on by default):

    * ``collapse/source/loss/<s>``: mean loss of its held-out samples (cross-entropy of ``forward``'s logits, or
      ``loss_fn``); ``collapse/source/acc/<s>`` and ``collapse/source/acc_gap/<s>`` (its accuracy minus held-out
      real accuracy: a model that does well on the synthetic data and worse on real data has a large gap) for a
      classifier;
    * ``collapse/source/acc_vs_best/<s>`` in ``[-1, 0]`` for a classifier: its accuracy minus the best source's, and
      ``collapse/source/acc_vs_best_stderr/<s>``, the standard error of that difference (two independent
      proportions, each in Agresti-Coull form: :func:`~collapse_guard.metrics.functional.binomial_standard_error`).
      A source whose labels disagree with the inputs (label noise, a mislabelling generator) is far below the
      others, whatever the task's difficulty, which moves every source alike. With two or more synthetic sources it
      is the attribution :meth:`attribution_rules` give a ``CollapseGuard()`` without ``rules``: a source at least
      15 points and 3 standard errors below the best, two checks running, is named and quarantined. The standard
      error matters where a source holds few held-out samples (a 60-sample set: about 9 points for a difference);
      the same samples are read at every check, so ``patience`` does not average their noise away;
    * ``collapse/source/grad_cosine/<s>`` in ``[-1, 1]`` and ``collapse/source/grad_cosine_stderr/<s>``: the mean
      cosine between the
      loss gradient of each of ``batches`` batches of the source and the mean loss gradient of held-out real data,
      and its standard error over the batches (:mod:`~collapse_guard.metrics.functional.gradient_alignment`:
      GRAD-MATCH, Killamsetty et al. 2021; TracIn, Pruthi et al. 2020). A source whose steps raise the real loss
      has a negative cosine; read it against its standard error, e.g.
      ``Rule("collapse/source/grad_cosine/*", threshold=0.0, action="warn")``, a family rule judging each source
      and naming it in the event.

    A source the next epoch does not draw from (quarantined: ``MixedDataModule.quarantine``) is no longer checked:
    nothing is logged for it, and the best source is the best of those still drawn.

    The gradients are taken in eval mode on ``params`` (``"last"``: the last layer, as TracIn's and GRAD-MATCH's
    practical versions do, cheap at any model size; ``"all"``: every trainable parameter), without touching
    ``.grad`` or the optimizer, on the same fixed samples at every check and on every rank (no communication).

    Args:
        every_n_epochs: check every this many epochs (an integer ``>= 1``).
        samples: held-out samples read per source and of real data, at most (an integer ``>= 2``).
        batches: batches those samples are split into for the cosines (an integer ``>= 2``: the standard error).
        batch_fn: ``batch -> (inputs, target)``; default: ``(x, y)`` tuples and dicts with usual key names.
        forward_fn: ``(pl_module, inputs) -> logits``; default ``pl_module(inputs)`` (``.logits`` taken).
        loss_fn: ``(pl_module, batch) -> per-sample losses (N,)`` for a model that is not a classifier.
        params: ``"last"`` or ``"all"``.

    Raises:
        ValueError: for numbers out of range or of the wrong kind, or an unknown ``params``.
        TypeError: at set-up, without a ``MixedDataModule``.

    Example::

        trainer = pl.Trainer(callbacks=[HeldOutRealCheck(), SourceCheck(), CollapseGuard()])
        trainer.fit(model, datamodule=MixedDataModule(real_dm, {"gen10": ds10, "gen20": ds20}))
        trainer.callback_metrics["collapse/source/grad_cosine/gen20"]   # e.g. tensor(-0.21)
    """

    produces = ("collapse/source/",)

    def __init__(self, every_n_epochs: int = 1, samples: int = 256, batches: int = 4,
                 batch_fn: Optional[Callable[[Any], tuple[Any, Tensor]]] = None,
                 forward_fn: Optional[Callable[[LightningModule, Any], Tensor]] = None,
                 loss_fn: Optional[Callable[[LightningModule, Any], Tensor]] = None, params: str = "last") -> None:
        self.every_n_epochs = check_count(every_n_epochs, "every_n_epochs", minimum=1, optional=False)
        self.samples = check_count(samples, "samples", minimum=2, optional=False)
        self.batches = check_count(batches, "batches", minimum=2, optional=False)
        if params not in PARAMS:
            raise ValueError(f"`params` must be one of {PARAMS}, got {params!r}.")
        self.batch_fn, self.forward_fn = batch_fn or default_batch_fn, forward_fn or default_forward_fn
        self.loss_fn, self.params = loss_fn, params
        #: source name -> training-set indices of its held-out samples read (fixed at set-up)
        self._sources: dict[str, list[int]] = {}
        self._real: list[int] = []
        #: the values of the last check, by key
        self.last: dict[str, float] = {}
        #: every check: ``{"epoch", "global_step", key: value, ...}`` (checkpointed; the run report's
        #: ``source_indicators``)
        self.history: list[dict] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        dm = require_mixed_datamodule(trainer, "SourceCheck")
        held = dm.heldout_synthetic
        indices = torch.as_tensor([int(i) for i in held.indices] if held is not None else [], dtype=torch.long)
        ids = dm.mixer.source_of[indices]  # each held-out sample's source, looked up once (not once per source)
        self._sources = {}
        for sid, source in enumerate(dm.mixer.sources[2:], start=2):
            mine = indices[ids == sid][: self.samples].tolist()  # in held-out order
            if len(mine) >= self.batches:
                self._sources[source.name] = mine
        self._real = list(range(min(self.samples, len(dm.heldout_real))))

    def metric_keys(self, trainer: Trainer) -> Optional[set[str]]:
        names = ("loss", "grad_cosine", "grad_cosine_stderr") + (() if self.loss_fn else CLASSIFIER_KEYS)
        # every source's key, and each family (``collapse/source/grad_cosine/*``) for a rule judging every source
        return {f"collapse/source/{n}/{s}" for s in [*self._sources, "*"] for n in names}

    def attribution_rules(self, trainer: Trainer) -> Optional[list[Rule]]:
        """With two or more synthetic sources measured and a classifier: ``Rule("collapse/source/acc_vs_best/*",
        sigmas=3, baseline="zero", min_change=0.15, patience=2)`` (at least 15 points and 3 standard errors below the
        best source, two checks running), which ``CollapseGuard()`` adds to its default rules (action
        ``"quarantine"`` when the guard's action is ``"inject"``)."""
        if len(self._sources) < 2 or self.loss_fn is not None:
            return None
        return [Rule("collapse/source/acc_vs_best/*", mode="max", sigmas=ACC_SIGMAS, baseline="zero",
                     min_change=ACC_VS_BEST, patience=2,
                     name="accuracy vs the best source")]

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self._sources or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule
        was_training = pl_module.training
        pl_module.eval()
        try:
            with dm.counting_paused(), preserved_rng(), torch.enable_grad():
                values = run_collectively(trainer, "SourceCheck", lambda: self._measure(trainer, pl_module, dm))
        finally:
            pl_module.train(was_training)
        self.last = values
        self.history.append({"epoch": trainer.current_epoch, "global_step": trainer.global_step, **values})
        for key, value in values.items():
            self.log_metric(trainer, pl_module, key, value, sync_dist=False)

    def state_dict(self) -> dict:
        return {"last": dict(self.last), "history": [dict(row) for row in self.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last = dict(state_dict.get("last", {}))
        self.history = [dict(row) for row in state_dict.get("history", [])]

    # -- one check ------------------------------------------------------------------------------------------
    def _split(self, trainer: Trainer, dataset: Any, indices: list[int], collate: Any) -> list:
        """``dataset[indices]`` in ``self.batches`` collated batches (the last one shorter), on the model's device."""
        size = -(-len(indices) // self.batches)
        return [trainer.strategy.batch_to_device(batch)
                for batch in split_batches(dataset, indices, collate, size, batch_fn=lambda batch: batch)]

    def _losses(self, pl_module: LightningModule, batch: Any) -> tuple[Tensor, Optional[Tensor]]:
        """Per-sample losses ``(N,)`` and, for a classifier, per-sample correctness ``(N,)``."""
        if self.loss_fn is not None:
            return self.loss_fn(pl_module, batch).reshape(-1), None
        inputs, target = self.batch_fn(batch)
        logits = self.forward_fn(pl_module, inputs)
        return F.cross_entropy(logits, target, reduction="none"), (logits.argmax(-1) == target).double()

    def _pass(self, pl_module: LightningModule, batches: list, params: list) -> tuple[list, float, Optional[Tensor]]:
        """Gradients per batch, the mean loss, and (classifier) the per-sample correctness ``(N,)``."""
        grads, losses, correct = [], [], []
        for batch in batches:
            loss, right = self._losses(pl_module, batch)
            grads.append(flat_gradient(loss.mean(), params))
            losses.append(loss.detach().double())
            if right is not None:
                correct.append(right)
        acc = torch.cat(correct) if correct else None
        return grads, float(torch.cat(losses).mean()), acc

    def _measure(self, trainer: Trainer, pl_module: LightningModule, dm: Any) -> dict[str, float]:
        params = _last_parameters(pl_module) if self.params == "last" else \
            [p for p in pl_module.parameters() if p.requires_grad]
        collate = dm._options.collate_fn
        real_grads, _, real_right = self._pass(pl_module, self._split(trainer, dm.heldout_real, self._real, collate),
                                               params)
        reference = torch.stack(real_grads).mean(0)
        real_acc = None if real_right is None else float(real_right.mean())
        out: dict[str, float] = {}
        rights: dict[str, Tensor] = {}
        drawn = set(active_sources(dm))  # a quarantined source is not judged again (nor the best among the others)
        for name, indices in self._sources.items():
            if name not in drawn:
                continue
            grads, loss, right = self._pass(pl_module, self._split(trainer, dm.train_set, indices, collate), params)
            mean, se = gradient_cosines(grads, reference)
            out.update({f"collapse/source/loss/{name}": loss, f"collapse/source/grad_cosine/{name}": mean,
                        f"collapse/source/grad_cosine_stderr/{name}": se})
            if right is not None and real_acc is not None:
                rights[name] = right
                acc = float(right.mean())
                out.update({f"collapse/source/acc/{name}": acc, f"collapse/source/acc_gap/{name}": acc - real_acc})
        out.update(versus_best(rights))
        return out


__all__ = ["SourceCheck"]
