"""Collapse indicators for classifiers, as pure functions on tensors.

A classifier trained on collapsed synthetic data loses the rare classes and the tails first: its predictions
concentrate on fewer classes (lower effective number of predicted classes, a predicted label marginal that
drifts from the real one), its confidence changes (predictive entropy, calibration error) and the worst
class's recall falls well before the overall accuracy does.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _check_probs(probs: Tensor, name: str = "probs") -> None:
    if probs.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, C), got {tuple(probs.shape)}.")


def predictive_entropy(probs: Tensor, eps: float = 1e-12) -> Tensor:
    """Shannon entropy of each predictive distribution, in nats.

    Args:
        probs: class probabilities, shape ``(N, C)``, rows summing to 1.
        eps: floor inside the logarithm.

    Returns:
        Tensor of shape ``(N,)`` with values in ``[0, log C]``.

    Raises:
        ValueError: if ``probs`` is not 2-D.

    Example::

        >>> predictive_entropy(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
        tensor([0.6931, 0.3251])
    """
    _check_probs(probs)
    return -(probs * torch.log(probs.clamp_min(eps))).sum(dim=-1)


def entropy_of_marginal(marginal: Tensor, eps: float = 1e-12) -> Tensor:
    """Entropy in nats of one distribution over classes, shape ``(C,)`` (normalised here; zeros allowed)."""
    p = marginal.double() / marginal.double().sum().clamp_min(eps)
    return -(p * torch.log(p.clamp_min(eps))).sum()


def effective_number_of_classes(marginal: Tensor) -> Tensor:
    """Effective number of classes ``exp(H(p))`` of a label marginal (Hill number of order 1).

    Equals ``C`` for a uniform marginal over ``C`` classes and 1 when all mass sits on one class; a classifier
    collapsing onto fewer classes makes it fall.

    Args:
        marginal: counts or probabilities per class, shape ``(C,)``, non-negative, not all zero.

    Returns:
        Scalar tensor in ``[1, C]``.

    Example::

        >>> effective_number_of_classes(torch.tensor([5.0, 5.0, 0.0]))
        tensor(2., dtype=torch.float64)
    """
    return torch.exp(entropy_of_marginal(marginal))


def marginal_total_variation(pred_marginal: Tensor, real_marginal: Tensor) -> Tensor:
    """Total variation distance ``0.5 * sum |p - q|`` between two label marginals (counts or probabilities).

    Args:
        pred_marginal: predicted label counts or probabilities, shape ``(C,)``.
        real_marginal: real label counts or probabilities, shape ``(C,)``.

    Returns:
        Scalar tensor in ``[0, 1]``; 0 when the predicted marginal matches the real one.

    Raises:
        ValueError: if the shapes differ.
    """
    if pred_marginal.shape != real_marginal.shape:
        raise ValueError(f"marginals differ in shape: {tuple(pred_marginal.shape)} vs {tuple(real_marginal.shape)}")
    p = pred_marginal.double() / pred_marginal.double().sum().clamp_min(1e-12)
    q = real_marginal.double() / real_marginal.double().sum().clamp_min(1e-12)
    return 0.5 * (p - q).abs().sum()


def marginal_kl_divergence(pred_marginal: Tensor, real_marginal: Tensor, eps: float = 1e-6) -> Tensor:
    """KL divergence ``KL(real || predicted)`` in nats between label marginals, smoothed by ``eps``.

    Args:
        pred_marginal: predicted label counts or probabilities, shape ``(C,)``.
        real_marginal: real label counts or probabilities, shape ``(C,)``.
        eps: additive smoothing so a class never predicted gives a large but finite value.

    Returns:
        Scalar tensor ``>= 0``; grows when the classifier stops predicting classes the real data has.

    Raises:
        ValueError: if the shapes differ.
    """
    if pred_marginal.shape != real_marginal.shape:
        raise ValueError(f"marginals differ in shape: {tuple(pred_marginal.shape)} vs {tuple(real_marginal.shape)}")
    p = pred_marginal.double() / pred_marginal.double().sum().clamp_min(1e-12) + eps
    q = real_marginal.double() / real_marginal.double().sum().clamp_min(1e-12) + eps
    p, q = p / p.sum(), q / q.sum()
    return (q * (q.log() - p.log())).sum()


def per_class_recall(confmat: Tensor) -> Tensor:
    """Recall of each class from a confusion matrix (rows: true class, columns: predicted class).

    Args:
        confmat: counts, shape ``(C, C)``.

    Returns:
        Tensor of shape ``(C,)`` in ``[0, 1]``; ``nan`` for classes absent from the targets.
    """
    support = confmat.sum(dim=1).double()
    recall = confmat.diagonal().double() / support
    return torch.where(support > 0, recall, torch.full_like(recall, float("nan")))


def worst_class_recall(confmat: Tensor) -> Tensor:
    """Lowest recall over the classes present in the targets: the tail a collapsing model loses first.

    Args:
        confmat: counts, shape ``(C, C)``, rows true class, columns predicted class.

    Returns:
        Scalar tensor in ``[0, 1]`` (``nan`` when no class has support).
    """
    recall = per_class_recall(confmat)
    present = recall[~torch.isnan(recall)]
    return present.min() if present.numel() else torch.tensor(float("nan"), dtype=torch.float64)


def binomial_standard_error(successes: Tensor, total: Tensor) -> Tensor:
    """Standard error of a proportion (accuracy, a recall), Agresti-Coull form.

    ``p~ = (successes + 2) / (total + 4)``, ``se = sqrt(p~ (1 - p~) / (total + 4))`` (Agresti & Coull, "Approximate
    is better than 'exact' for interval estimation of binomial proportions", The American Statistician 1998):
    close to ``sqrt(p (1 - p) / n)`` for moderate ``p``, never 0 at ``p = 0`` or ``1``, so a perfect held-out score
    still has a noise floor. This is the noise of the evaluation set, not of training: it is what a rule in units of
    ``sigmas`` (:class:`~collapse_guard.Rule`) compares a fall with.

    Args:
        successes: number of successes (e.g. correct predictions), any shape, ``>= 0``.
        total: number of trials, same shape (broadcastable), ``>= 0``.

    Returns:
        float64 tensor of the broadcast shape, in ``(0, 0.5]``.

    Example::

        >>> round(float(binomial_standard_error(torch.tensor(342), torch.tensor(360))), 4)
        0.0119
    """
    successes = torch.as_tensor(successes).double()
    total = torch.as_tensor(total).double()
    p = (successes + 2.0) / (total + 4.0)
    return torch.sqrt(p * (1.0 - p) / (total + 4.0))


def worst_class_recall_standard_error(confmat: Tensor) -> Tensor:
    """:func:`binomial_standard_error` of :func:`worst_class_recall`: that of the worst class, on its own support.

    With ties, the class with the smallest support (the noisiest) is taken.

    Args:
        confmat: counts, shape ``(C, C)``, rows true class, columns predicted class.

    Returns:
        Scalar float64 tensor (``nan`` when no class has support).
    """
    recall = per_class_recall(confmat)
    present = ~torch.isnan(recall)
    if not present.any():
        return torch.tensor(float("nan"), dtype=torch.float64)
    support = confmat.sum(dim=1).double()
    worst = present & (recall == recall[present].min())
    idx = torch.nonzero(worst).flatten()
    idx = idx[support[idx].argmin()]
    return binomial_standard_error(confmat.diagonal()[idx], support[idx])


def confusion_counts(preds: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Confusion matrix of integer predictions against integer targets, shape ``(C, C)``, dtype long."""
    idx = target.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
