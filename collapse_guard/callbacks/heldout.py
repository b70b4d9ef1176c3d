"""``HeldOutRealCheck``: measure the model on held-out real (and held-out synthetic) data at every check."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from collapse_guard._compat import Callback, LightningModule, Trainer
from collapse_guard.callbacks._base import CollapseMetricsProducer, require_mixed_datamodule
from collapse_guard.metrics.classification import ClassificationIndicators

INPUT_KEYS = ("input", "inputs", "x", "pixel_values", "input_ids", "image", "images", "features")
TARGET_KEYS = ("label", "labels", "y", "target", "targets")

#: indicators logged for held-out synthetic data and used for the real–synthetic gap
GAP_KEYS = ("loss", "acc")


def default_batch_fn(batch: Any) -> tuple[Any, Tensor]:
    """Split a batch into ``(inputs, target)``: ``(x, y, ...)`` tuples or dicts with usual key names.

    Raises:
        ValueError: for a batch of another structure; pass ``batch_fn`` to :class:`HeldOutRealCheck` then.
    """
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, dict):
        x = next((batch[k] for k in INPUT_KEYS if k in batch), None)
        y = next((batch[k] for k in TARGET_KEYS if k in batch), None)
        if x is not None and y is not None:
            return x, y
    raise ValueError(
        f"HeldOutRealCheck cannot tell inputs from targets in a batch of type {type(batch).__name__}"
        + (f" with keys {sorted(batch)}" if isinstance(batch, dict) else "")
        + ". Pass `batch_fn=lambda batch: (inputs, target)`."
    )


def default_forward_fn(pl_module: LightningModule, inputs: Any) -> Tensor:
    """``pl_module(inputs)``, taking ``.logits`` or ``["logits"]`` from model outputs that carry them."""
    out = pl_module(inputs)
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    return getattr(out, "logits", out)


class HeldOutRealCheck(CollapseMetricsProducer, Callback):
    r"""Runs the model on held-out real and held-out synthetic data and logs collapse indicators.

    At every check (the end of every ``every_n_epochs``-th training epoch) the model, in eval mode and without
    gradients, classifies the :class:`~collapse_guard.MixedDataModule`'s held-out real data and its held-out
    synthetic data. Indicators are :class:`~collapse_guard.metrics.ClassificationIndicators` (torchmetrics,
    synced across ranks) and are logged through ``pl_module.log`` so every logger sees them:

    * ``collapse/heldout_real/{loss,acc,entropy,eff_classes,eff_classes_ratio,label_tv,label_kl,``
      ``worst_class_recall,calibration_error}``
    * ``collapse/heldout_synthetic/{loss,acc}``
    * ``collapse/gap/{loss,acc}``: the held-out synthetic value minus the held-out real one. A model that does
      well on synthetic data and worse on real data (a positive accuracy gap) has learned the generator.

    Args:
        every_n_epochs: check every this many training epochs (``>= 1``).
        batch_fn: ``batch -> (inputs, target)``; default :func:`default_batch_fn`.
        forward_fn: ``(pl_module, inputs) -> logits (N, C)``; default :func:`default_forward_fn`.
        synthetic: also measure held-out synthetic data and the gap.
        max_batches: at most this many batches of each held-out set per check (``None``: all).
        prog_bar: show held-out real accuracy in the progress bar.

    Raises:
        TypeError: at set-up, when the Trainer's datamodule is not a ``MixedDataModule``.
        ValueError: when ``every_n_epochs < 1``, or a batch cannot be split into inputs and targets.

    Example::

        trainer = pl.Trainer(callbacks=[HeldOutRealCheck(batch_fn=lambda b: (b["pixels"], b["label"]))])
    """

    produces = ("collapse/heldout_real/", "collapse/heldout_synthetic/", "collapse/gap/")

    def __init__(
        self,
        every_n_epochs: int = 1,
        batch_fn: Optional[Callable[[Any], tuple[Any, Tensor]]] = None,
        forward_fn: Optional[Callable[[LightningModule, Any], Tensor]] = None,
        synthetic: bool = True,
        max_batches: Optional[int] = None,
        prog_bar: bool = True,
    ) -> None:
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"`every_n_epochs` must be a positive integer, got {every_n_epochs!r}.")
        self.every_n_epochs = every_n_epochs
        self.batch_fn = batch_fn or default_batch_fn
        self.forward_fn = forward_fn or default_forward_fn
        self.synthetic = synthetic
        self.max_batches = max_batches
        self.prog_bar = prog_bar
        self.last: dict[str, float] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            require_mixed_datamodule(trainer, type(self).__name__)

    @torch.no_grad()
    def measure(self, pl_module: LightningModule, loader) -> Optional[dict[str, Tensor]]:
        """Classification indicators of ``pl_module`` over ``loader`` (``None`` when it yields nothing)."""
        trainer = pl_module.trainer
        metric: Optional[ClassificationIndicators] = None
        dm = trainer.datamodule
        paused = dm.counting_paused() if hasattr(dm, "counting_paused") else nullcontext()
        with paused:
            for i, batch in enumerate(loader):
                if self.max_batches is not None and i >= self.max_batches:
                    break
                batch = trainer.strategy.batch_to_device(batch)
                inputs, target = self.batch_fn(batch)
                logits = self.forward_fn(pl_module, inputs)
                if metric is None:
                    metric = ClassificationIndicators(num_classes=logits.shape[-1]).to(logits.device)
                metric.update(logits, target.to(logits.device))
        return metric.compute() if metric is not None else None

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule
        was_training = pl_module.training
        pl_module.eval()
        try:
            real = self.measure(pl_module, dm.heldout_real_dataloader())
            synthetic_loader = dm.heldout_synthetic_dataloader() if self.synthetic else None
            synth = self.measure(pl_module, synthetic_loader) if synthetic_loader is not None else None
        finally:
            pl_module.train(was_training)
        values: dict[str, float] = {}
        if real is not None:
            values.update({f"collapse/heldout_real/{k}": float(v) for k, v in real.items()})
        if synth is not None:
            values.update({f"collapse/heldout_synthetic/{k}": float(synth[k]) for k in GAP_KEYS})
            if real is not None:
                values.update({f"collapse/gap/{k}": float(synth[k] - real[k]) for k in GAP_KEYS})
        self.last = values
        for key, value in values.items():
            self.log_metric(trainer, pl_module, key, value, prog_bar=self.prog_bar and key == "collapse/heldout_real/acc")

    def state_dict(self) -> dict:
        return {"last": dict(self.last)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last = dict(state_dict.get("last", {}))
