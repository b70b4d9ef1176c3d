"""``ClassificationIndicators``: a torchmetrics ``Metric`` over the classifier collapse indicators."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from collapse_guard.metrics.functional.per_sample import mean_standard_error
from collapse_guard.metrics.functional.classification import (
    binomial_standard_error,
    confusion_counts,
    per_class_recall,
    effective_number_of_classes,
    marginal_kl_divergence,
    marginal_total_variation,
    predictive_entropy,
    worst_class_recall,
    worst_class_recall_standard_error,
)


class ClassificationIndicators(Metric):
    """Loss, accuracy, diversity and tail indicators of a classifier on one evaluation set.

    All states are sums (``dist_reduce_fx="sum"``), so the values are exact across DDP ranks.

    ``compute()`` returns a dict of scalar tensors:

    * ``loss``: mean cross-entropy in nats, ``>= 0``; ``loss_stderr``: its standard error by sample
      (:func:`~collapse_guard.metrics.functional.per_sample.mean_standard_error`);
    * ``acc``: accuracy in ``[0, 1]``;
    * ``acc_stderr``: its standard error from the size of the evaluation set (:func:`binomial_standard_error`):
      the noise a rule with ``sigmas`` measures a fall in;
    * ``entropy``: mean predictive entropy in nats, in ``[0, log C]``;
    * ``eff_classes``: effective number of predicted classes ``exp(H(predicted label marginal))``, ``[1, C]``;
    * ``eff_classes_ratio``: ``eff_classes`` over the effective number of classes of the true labels (1 = as
      diverse as the real labels; collapse onto fewer classes makes it fall);
    * ``label_tv``: total variation between predicted and true label marginals, ``[0, 1]``;
    * ``label_kl``: ``KL(true || predicted)`` label marginals in nats;
    * ``worst_class_recall``: lowest per-class recall, ``[0, 1]``;
    * ``worst_class_recall_stderr``: its standard error on that class's support
      (:func:`worst_class_recall_standard_error`);
    * ``calibration_error``: expected calibration error (L1, equal-width confidence bins), ``[0, 1]``
      (Guo et al. 2017; the same estimator as torchmetrics' ``MulticlassCalibrationError``);
    * ``class_recall/<c>`` and ``class_recall_stderr/<c>``: the recall of each class ``c`` present in the targets
      and its binomial standard error on that class's support (:data:`CLASS_KEYS`; absent classes have no key).

    Args:
        num_classes: number of classes ``C``.
        n_bins: confidence bins of the calibration error.

    Raises:
        ValueError: if ``logits`` is not ``(N, C)`` or ``target`` not ``(N,)`` in ``update``.

    Example::

        m = ClassificationIndicators(num_classes=10)
        m.update(logits, target)  # logits (N, 10), target (N,) integer classes
        m.compute()["worst_class_recall"]
    """

    full_state_update = False
    #: the keys of :meth:`compute`'s dict
    KEYS = (
        "loss", "loss_stderr", "acc", "acc_stderr", "entropy", "eff_classes", "eff_classes_ratio", "label_tv", "label_kl",
        "worst_class_recall", "worst_class_recall_stderr", "calibration_error",
    )
    #: the per-class families of :meth:`compute`'s dict (``"class_recall/3"``), one key per class present
    CLASS_KEYS = ("class_recall", "class_recall_stderr")

    def __init__(self, num_classes: int, n_bins: int = 15, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2, got {num_classes}.")
        self.num_classes = num_classes
        self.n_bins = n_bins
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("loss_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("loss_sq_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("entropy_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        # bins [b_k, b_k+1) as torchmetrics', plus one bin for a confidence of exactly 1 (a saturated softmax)
        self.add_state("bin_count", torch.zeros(n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bin_conf", torch.zeros(n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bin_correct", torch.zeros(n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"`logits` must have shape (N, {self.num_classes}), got {tuple(logits.shape)}.")
        target = target.reshape(-1).long()
        if target.shape[0] != logits.shape[0]:
            raise ValueError(f"`target` must have shape ({logits.shape[0]},), got {tuple(target.shape)}.")
        logits = logits.detach().float()
        probs = logits.softmax(dim=-1)
        conf, preds = probs.max(dim=-1)
        self.confmat += confusion_counts(preds, target, self.num_classes)
        losses = F.cross_entropy(logits, target, reduction="none").double()
        self.loss_sum += losses.sum()
        self.loss_sq_sum += (losses * losses).sum()
        self.entropy_sum += predictive_entropy(probs).double().sum()
        edges = torch.linspace(0, 1, self.n_bins + 1, device=conf.device)
        bins = (torch.bucketize(conf, edges, right=True) - 1).clamp(0, self.n_bins)
        self.bin_count += torch.bincount(bins, minlength=self.n_bins + 1).double()
        self.bin_conf += torch.zeros_like(self.bin_conf).index_add_(0, bins, conf.double())
        self.bin_correct += torch.zeros_like(self.bin_correct).index_add_(0, bins, (preds == target).double())

    def compute(self) -> dict[str, Tensor]:
        n = self.confmat.sum().double().clamp_min(1)
        pred_marginal = self.confmat.sum(dim=0)
        true_marginal = self.confmat.sum(dim=1)
        eff = effective_number_of_classes(pred_marginal)
        nonempty = self.bin_count > 0
        ece = (self.bin_conf[nonempty] - self.bin_correct[nonempty]).abs().sum() / n
        correct = self.confmat.diagonal().sum()
        support = true_marginal
        recall = per_class_recall(self.confmat)
        recall_stderr = binomial_standard_error(self.confmat.diagonal(), support)
        per_class = {}
        for c in torch.nonzero(support > 0).flatten().tolist():
            per_class[f"class_recall/{c}"] = recall[c]
            per_class[f"class_recall_stderr/{c}"] = recall_stderr[c]
        return {
            "loss": self.loss_sum / n,
            "loss_stderr": mean_standard_error(self.loss_sum, self.loss_sq_sum, self.confmat.sum()),
            "acc": correct.double() / n,
            "acc_stderr": binomial_standard_error(correct, self.confmat.sum()),
            "entropy": self.entropy_sum / n,
            "eff_classes": eff,
            "eff_classes_ratio": eff / effective_number_of_classes(true_marginal),
            "label_tv": marginal_total_variation(pred_marginal, true_marginal),
            "label_kl": marginal_kl_divergence(pred_marginal, true_marginal),
            "worst_class_recall": worst_class_recall(self.confmat),
            "worst_class_recall_stderr": worst_class_recall_standard_error(self.confmat),
            "calibration_error": ece,
            **per_class,
        }

