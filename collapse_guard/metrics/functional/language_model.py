"""Held-out indicators of a language model, as pure functions on logits and token labels.

A language model trained on its own (or another model's) generations loses the tails of the real token
distribution first: its held-out real perplexity rises generation after generation while its predictions grow
more confident (Shumailov et al., Nature 2024, Fig. 2: OPT-125m fine-tuned on wikitext generations; Alemohammad et
al., ICLR 2024).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["IGNORE_INDEX", "aligned_tokens", "labels_are_inputs", "sequence_token_statistics"]

#: label of a position that is not scored (Hugging Face and ``F.cross_entropy``'s convention)
IGNORE_INDEX = -100


def labels_are_inputs(inputs: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> bool:
    """Whether ``labels`` are the inputs themselves (every scored label equals the input token at its position):
    Hugging Face's causal-LM convention, where the model's logits at ``t`` predict the label at ``t + 1``.

    Example::

        >>> ids = torch.tensor([[5, 6, 7]])
        >>> labels_are_inputs(ids, ids), labels_are_inputs(ids, torch.tensor([[6, 7, 8]]))
        (True, False)
    """
    if not isinstance(inputs, Tensor) or inputs.shape != labels.shape or inputs.dtype.is_floating_point:
        return False
    scored = labels != ignore_index
    return bool(scored.any()) and bool(torch.equal(labels[scored], inputs[scored]))


def aligned_tokens(logits: Tensor, labels: Tensor, shift: bool = False) -> tuple[Tensor, Tensor]:
    """Logits ``(N, T', V)`` and labels ``(N, T')`` that score position against position.

    Args:
        logits: ``(N, T, V)``.
        labels: ``(N, T)`` token ids, :data:`IGNORE_INDEX` where not scored.
        shift: labels are the inputs (Hugging Face causal convention): drop the last logit and the first label.

    Raises:
        ValueError: when the shapes do not match ``(N, T, V)`` and ``(N, T)``.
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"language-model logits must be (N, T, V) and labels (N, T); got logits "
                         f"{tuple(logits.shape)} and labels {tuple(labels.shape)}.")
    if shift:
        return logits[:, :-1], labels[:, 1:]
    return logits, labels


def sequence_token_statistics(logits: Tensor, labels: Tensor, shift: bool = False,
                              ignore_index: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Per-sequence totals over the scored tokens: negative log-likelihood (nats), correct top-1 predictions,
    predictive entropy (nats) and the number of scored tokens; each of shape ``(N,)``, float64.

    The totals, summed over sequences, give the token-level means (loss, perplexity ``exp(loss)``, token
    accuracy, entropy), and with :func:`~collapse_guard.metrics.functional.per_sample.ratio_standard_error` their
    standard errors by sequence.

    Args:
        logits: ``(N, T, V)`` unnormalised scores.
        labels: ``(N, T)`` integer token ids, ``ignore_index`` for positions not scored (padding, unmasked
            positions of masked language modelling).
        shift: see :func:`aligned_tokens`.
        ignore_index: label of unscored positions.

    Raises:
        ValueError: for shapes other than ``(N, T, V)`` and ``(N, T)``, or labels outside ``[0, V)`` that are not
            ``ignore_index``.

    Example::

        >>> logits = torch.zeros(2, 3, 4)                       # uniform over 4 tokens
        >>> labels = torch.tensor([[1, 2, -100], [0, 0, 0]])
        >>> s = sequence_token_statistics(logits, labels)
        >>> s["tokens"], (s["nll"] / s["tokens"]).exp()         # perplexity 4 everywhere
        (tensor([2., 3.], dtype=torch.float64), tensor([4.0000, 4.0000], dtype=torch.float64))
    """
    logits, labels = aligned_tokens(logits, labels.long(), shift)
    scored = labels != ignore_index
    vocab = logits.shape[-1]
    if bool(((labels[scored] < 0) | (labels[scored] >= vocab)).any()):
        raise ValueError(f"language-model labels must be token ids in [0, {vocab}) or {ignore_index} (not scored); "
                         f"got values in [{int(labels[scored].min())}, {int(labels[scored].max())}].")
    logp = F.log_softmax(logits.detach().float(), dim=-1)
    safe = labels.clamp_min(0)
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    correct = logp.argmax(-1) == safe
    entropy = -(logp.exp() * logp).sum(-1)
    w = scored.double()
    return {
        "nll": (nll.double() * w).sum(1),
        "correct": (correct.double() * w).sum(1),
        "entropy": (entropy.double() * w).sum(1),
        "tokens": w.sum(1),
    }


def perplexity(mean_nll: Tensor) -> Tensor:
    """``exp(mean token negative log-likelihood in nats)``, ``>= 1``: the effective number of tokens the model
    hesitates between (Jelinek et al. 1977)."""
    return torch.exp(torch.as_tensor(mean_nll).double())


__all__.append("perplexity")
