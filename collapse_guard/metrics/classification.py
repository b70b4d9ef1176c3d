"""``ClassificationIndicators``: a torchmetrics ``Metric`` over the classifier collapse indicators;
``PairedCorrectness``: the change of accuracy and of each class's recall between two checks of the same held-out
samples."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from collapse_guard.metrics.functional.paired import paired_counts, paired_difference
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

    All states are sums (``dist_reduce_fx="sum"``), so the values are exact across DDP ranks. Besides them, each
    rank keeps its own samples' correctness and targets of the current pass, in the order they were given
    (:attr:`correct`, :attr:`targets`; never synced, cleared by ``reset()``): what :class:`PairedCorrectness` pairs
    with a reference check.

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
        #: this rank's per-sample correctness (bool ``(N_b,)``) and targets of every batch of the pass, in order
        self.correct: list[Tensor] = []
        self.targets: list[Tensor] = []

    def reset(self) -> None:
        super().reset()
        self.correct, self.targets = [], []

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
        self.correct.append(preds == target)
        self.targets.append(target)

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


class PairedCorrectness(Metric):
    """The change of held-out accuracy and of each class's recall from a reference check, on the same samples.

    ``update(correct, reference, target)`` pairs this check's per-sample correctness with the reference check's,
    sample by sample (:func:`~collapse_guard.metrics.functional.paired.paired_counts`); the states are sums
    (``dist_reduce_fx="sum"``), so each DDP rank pairs its own shard and the counts add up exactly.

    ``compute()`` returns a dict of scalar tensors (:func:`~collapse_guard.metrics.functional.paired.
    paired_difference`: McNemar 1947; Agresti, *Categorical Data Analysis*, 2002, section 10.1.1):

    * ``acc_change``: accuracy now minus the reference's, in ``[-1, 1]``; ``acc_change_stderr``: the standard
      error of that paired difference, ``sqrt(b + c - (b - c)**2 / n) / n`` (``b`` samples right at the reference
      and wrong now, ``c`` the reverse), in ``[0, 1]``: the held-out sampling error *and* how far the model moved
      between the two checks, at once;
    * ``class_recall_change/<c>`` and ``class_recall_change_stderr/<c>``: the same on the samples of class ``c``
      (each class present), a class judged against its own discordance;
    * ``unpaired``: samples given without a reference of their length (no reference yet, or another held-out
      set): the values above then cover the paired samples only.

    Args:
        num_classes: number of classes ``C``.

    Raises:
        ValueError: if ``correct``, ``reference`` and ``target`` are not 1-D of the same length in ``update``.

    Example::

        m = PairedCorrectness(num_classes=10)
        m.update(correct_now, correct_at_reference, target)   # bool (N,), bool (N,), integer classes (N,)
        m.compute()["acc_change"]
    """

    full_state_update = False
    #: the keys of :meth:`compute`'s dict, and its per-class families (``"class_recall_change/3"``)
    KEYS = ("acc_change", "acc_change_stderr")
    CLASS_KEYS = ("class_recall_change", "class_recall_change_stderr")

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("counts", torch.zeros(3, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("unpaired", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct: Tensor, reference: Optional[Tensor], target: Tensor) -> None:
        """Pair ``correct`` (bool ``(N,)``, this check) with ``reference`` (bool ``(N,)``, the same samples at the
        reference check, same order; ``None`` or another length: counted as ``unpaired``) by class ``target``
        (integers ``(N,)`` in ``[0, num_classes)``)."""
        if reference is None or reference.numel() != correct.numel():
            self.unpaired += correct.numel()
            return
        self.counts += paired_counts(correct, reference.to(correct.device), target.to(correct.device),
                                     self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        b, c, n = self.counts
        change, stderr = paired_difference(b.sum(), c.sum(), n.sum())
        out = {"acc_change": change, "acc_change_stderr": stderr, "unpaired": self.unpaired}
        class_change, class_stderr = paired_difference(b, c, n)
        for k in torch.nonzero(n > 0).flatten().tolist():
            out[f"class_recall_change/{k}"] = class_change[k]
            out[f"class_recall_change_stderr/{k}"] = class_stderr[k]
        return out
