"""What ``HeldOutRealCheck`` measures for each kind of model: one task adapter per task, inferred from the held-out
real targets at set-up or named by ``HeldOutRealCheck(task=...)``.

A task adapter knows the metric of its task (:mod:`collapse_guard.metrics`), the keys it logs, the keys measured on
held-out synthetic data too (the gap), and how to check what the model returns before training starts. Every task
logs ``loss`` and ``loss_stderr`` (per sample; per sequence for language models): the task-agnostic core.
"""
from __future__ import annotations

from typing import Any, Optional

from torch import Tensor
from torchmetrics import Metric

from collapse_guard.callbacks._model_io import _describe, checked_logits
from collapse_guard.metrics.classification import ClassificationIndicators, PairedCorrectness
from collapse_guard.metrics.functional.language_model import IGNORE_INDEX, labels_are_inputs
from collapse_guard.metrics.functional.regression import as_regression_pair
from collapse_guard.metrics.language_model import LanguageModelIndicators
from collapse_guard.metrics.loss import LossIndicators
from collapse_guard.metrics.regression import RegressionIndicators

#: the tasks ``HeldOutRealCheck(task=...)`` takes
TASKS = ("classification", "language_model", "regression", "loss")


class Task:
    """Base of the task adapters: the metric, its keys, the gap keys and the check of the model's outputs."""

    name = ""
    #: the keys of the task's metric (under ``collapse/heldout_real/``)
    keys: tuple[str, ...] = LossIndicators.KEYS
    #: families of keys, one key per member (``class_recall/<c>``)
    family_keys: tuple[str, ...] = ()
    #: the keys also logged for held-out synthetic data, and as the synthetic minus real gap
    gap_keys: tuple[str, ...] = ("loss",)
    #: the key shown in the progress bar
    prog_bar_key = "loss"
    #: whether the task reads the model's outputs (``forward_fn``) and targets (``batch_fn``)
    reads_outputs = True
    #: held-out synthetic samples a check measures with ``HeldOutRealCheck(synthetic_samples="auto")``
    synthetic_samples = 512

    def checked(self, outputs: Any, target: Any) -> tuple[Tensor, Tensor]:
        """``(outputs, target)`` when the task can read them; else an error naming what to pass."""
        raise NotImplementedError

    def new_metric(self, outputs: Tensor) -> Metric:
        """A fresh metric for outputs like ``outputs``."""
        return LossIndicators()

    def fits(self, metric: Metric, outputs: Tensor) -> bool:
        """Whether ``metric`` (built at an earlier check) takes outputs like ``outputs``."""
        return True

    def update(self, metric: Metric, outputs: Tensor, target: Tensor) -> None:
        """Add one batch: ``outputs`` as :meth:`checked` passed them, ``target`` on their device."""
        metric.update(outputs, target)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ClassificationTask(Task):
    """Logits ``(N, C)``, ``C >= 2``, integer targets ``(N,)``: :class:`~collapse_guard.metrics.ClassificationIndicators`,
    and the change from the reference check on the same held-out samples
    (:class:`~collapse_guard.metrics.classification.PairedCorrectness`, ``acc_change`` and per class
    ``class_recall_change/<c>``, with their paired standard errors; :mod:`collapse_guard.callbacks.paired`)."""

    name = "classification"
    keys = ClassificationIndicators.KEYS + PairedCorrectness.KEYS
    family_keys = ClassificationIndicators.CLASS_KEYS + PairedCorrectness.CLASS_KEYS
    gap_keys = ("loss", "acc")
    prog_bar_key = "acc"

    def checked(self, outputs: Any, target: Any) -> tuple[Tensor, Tensor]:
        return checked_logits(outputs, target)

    def new_metric(self, outputs: Tensor) -> Metric:
        return ClassificationIndicators(num_classes=outputs.shape[-1])

    def fits(self, metric: Metric, outputs: Tensor) -> bool:
        return metric.num_classes == outputs.shape[-1]


class LanguageModelTask(Task):
    """Logits ``(N, T, V)`` (or outputs carrying ``.logits``), token labels ``(N, T)`` with ``-100`` where not scored:
    :class:`~collapse_guard.metrics.language_model.LanguageModelIndicators`, per token, standard errors by sequence.

    Args:
        shift: the labels are the inputs (Hugging Face's causal convention), shifted by one before scoring.
    """

    name = "language_model"
    keys = LanguageModelIndicators.KEYS
    gap_keys = ("loss", "token_acc")
    prog_bar_key = "perplexity"
    synthetic_samples = 128  # sequences, each scoring all its tokens: the gap is read by no default rule

    def __init__(self, shift: bool = False) -> None:
        self.shift = shift

    def checked(self, outputs: Any, target: Any) -> tuple[Tensor, Tensor]:
        _need_tensors(outputs, target, "logits of shape (N, T, V)", "token labels of shape (N, T)")
        if target.dtype.is_floating_point or outputs.ndim != 3 or tuple(outputs.shape[:2]) != tuple(target.shape):
            raise ValueError(
                f"HeldOutRealCheck(task='language_model'): the model gives {_describe(outputs)} for token labels "
                f"{_describe(target)}; it needs logits of shape (N, T, V) for integer labels of shape (N, T) "
                f"({IGNORE_INDEX} where not scored). Pass a `forward_fn` that returns the logits, a `batch_fn` that "
                "gives (inputs, labels), or the `task` the model has."
            )
        return outputs, target

    def new_metric(self, outputs: Tensor) -> Metric:
        return LanguageModelIndicators(shift=self.shift)

    def __repr__(self) -> str:
        return f"LanguageModelTask(shift={self.shift})"


class RegressionTask(Task):
    """Predictions ``(N,)``, ``(N, 1)`` or ``(N, D)`` for float targets of the same size:
    :class:`~collapse_guard.metrics.regression.RegressionIndicators`."""

    name = "regression"
    keys = RegressionIndicators.KEYS
    gap_keys = ("loss", "r2")
    prog_bar_key = "mse"

    def checked(self, outputs: Any, target: Any) -> tuple[Tensor, Tensor]:
        _need_tensors(outputs, target, "predictions of shape (N,) or (N, D)", "targets of shape (N,) or (N, D)")
        try:
            as_regression_pair(outputs, target)
        except ValueError:
            raise ValueError(
                f"HeldOutRealCheck(task='regression'): the model gives {_describe(outputs)} for targets "
                f"{_describe(target)}; a regressor's predictions must hold one value per target: (N,), (N, 1) or "
                "(N, D) for targets of the same size. Pass a `forward_fn` that returns them, a `batch_fn` that gives "
                "(inputs, targets), or the `task` the model has (a classifier's logits: task='classification')."
            ) from None
        return outputs, target

    def new_metric(self, outputs: Tensor) -> Metric:
        return RegressionIndicators()


class LossTask(Task):
    """Only the user's per-sample loss (``HeldOutRealCheck(loss_fn=...)``): any model, any batch."""

    name = "loss"
    prog_bar_key = "loss"
    reads_outputs = False


def _need_tensors(outputs: Any, target: Any, outputs_are: str, target_is: str) -> None:
    if not isinstance(target, Tensor):
        raise TypeError(f"HeldOutRealCheck: `batch_fn` gave a target of type {type(target).__name__}; it must be "
                        f"{target_is}: pass `batch_fn=lambda batch: (inputs, target)`.")
    if not isinstance(outputs, Tensor):
        raise TypeError(f"HeldOutRealCheck: `forward_fn` returned {_describe(outputs)}; it must return {outputs_are}: "
                        "pass `forward_fn=lambda pl_module, inputs: outputs` (the default calls `pl_module(inputs)` "
                        "and takes `.logits` or `['logits']` when the output has them).")


def infer_task(inputs: Any, target: Any) -> str:
    """The task of a model from one held-out real batch's target: a floating target is ``"regression"``, an integer
    one of shape ``(N,)`` (or ``(N, 1)``) ``"classification"``, an integer one of shape ``(N, T)``
    ``"language_model"``.

    Raises:
        TypeError: for a target that is not a tensor (pass ``task=`` and ``loss_fn=``, or a ``batch_fn``).

    Example::

        >>> import torch
        >>> infer_task(None, torch.zeros(4)), infer_task(None, torch.zeros(4, dtype=torch.long))
        ('regression', 'classification')
    """
    if not isinstance(target, Tensor):
        raise TypeError(
            f"HeldOutRealCheck: `batch_fn` gave a target of type {type(target).__name__}, so the task cannot be "
            "inferred. Pass `batch_fn=lambda batch: (inputs, target)` with a tensor target, or `task=` (one of "
            f"{TASKS}); for a model without targets, `task='loss'` with `loss_fn=lambda pl_module, batch: losses`."
        )
    if target.dtype.is_floating_point:
        return "regression"
    if target.ndim <= 1 or (target.ndim == 2 and target.shape[1] == 1):
        return "classification"
    return "language_model"


def make_task(name: str, inputs: Any = None, target: Any = None) -> Task:
    """The adapter of the task ``name``; a language model's labels shift when they are the inputs themselves."""
    if name == "language_model":
        return LanguageModelTask(shift=isinstance(target, Tensor) and labels_are_inputs(inputs, target))
    return {"classification": ClassificationTask, "regression": RegressionTask, "loss": LossTask}[name]()


def task_from_batch(task: Optional[str], batch: Any, batch_fn: Any) -> Task:
    """The adapter of ``task``, else of the task inferred (:func:`infer_task`) from ``batch`` (one held-out real
    batch, split by ``batch_fn``); a classifier's when there is neither. A language model's labels shift when they
    are the batch's inputs themselves.

    Raises:
        Exception: ``batch_fn`` failing on ``batch`` (restated naming it); ``TypeError``: with no ``task``, a target
            that is not a tensor.
    """
    inputs = target = None
    if batch is not None and task in (None, "language_model"):
        from collapse_guard.callbacks._dry_run import split_batch

        inputs, target = split_batch(batch_fn, batch)
        task = task or infer_task(inputs, target)
    return make_task(task or "classification", inputs, target)


def check_task(task: Optional[str], loss_fn: Any) -> None:
    """``HeldOutRealCheck``'s ``task`` and ``loss_fn`` arguments.

    Raises:
        ValueError: an unknown ``task``, or ``task="loss"`` without ``loss_fn``.
        TypeError: a ``loss_fn`` that is not callable.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"HeldOutRealCheck: `task` must be one of {TASKS} or None (inferred), got {task!r}.")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"HeldOutRealCheck: `loss_fn` must be callable (pl_module, batch) -> per-sample losses (N,), "
                        f"got {type(loss_fn).__name__}.")
    if task == "loss" and loss_fn is None:
        raise ValueError("HeldOutRealCheck(task='loss') measures only the user's loss: pass "
                         "`loss_fn=lambda pl_module, batch: per_sample_losses` (shape (N,)).")
