"""``LanguageModelIndicators``: a torchmetrics ``Metric`` over the held-out indicators of a language model."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from collapse_guard.metrics.functional.language_model import IGNORE_INDEX, perplexity, sequence_token_statistics
from collapse_guard.metrics.functional.per_sample import ratio_standard_error

#: per-sequence totals kept, with the sums of squares and cross products their standard errors need
_TOTALS = ("nll", "correct", "entropy", "tokens")


class LanguageModelIndicators(Metric):
    """Token-level loss, perplexity, accuracy and entropy of a causal or masked language model on one set.

    ``compute()`` returns a dict of scalar tensors:

    * ``loss``: mean negative log-likelihood per scored token, in nats, ``>= 0``;
    * ``loss_stderr``: its standard error *by sequence* (tokens of a sequence are not independent; the ratio
      estimator of :func:`~collapse_guard.metrics.functional.per_sample.ratio_standard_error`);
    * ``perplexity``: ``exp(loss)``, ``>= 1`` (Shumailov et al., Nature 2024, report it rising generation after
      generation of a model trained on its own text);
    * ``token_acc``: share of scored tokens predicted (top-1), ``[0, 1]``; ``token_acc_stderr`` by sequence;
    * ``entropy``: mean predictive entropy per scored token, nats, in ``[0, log V]``: a collapsing model grows
      over-confident.

    Positions labelled ``ignore_index`` are not scored. All states are sums (``dist_reduce_fx="sum"``), so the
    values are exact across DDP ranks.

    Args:
        shift: labels are the inputs (Hugging Face causal convention: logits at ``t`` predict the label at
            ``t + 1``): drop the last logit and the first label.
        ignore_index: label of positions not scored (padding, unmasked positions of masked language modelling).

    Raises:
        ValueError: in ``update``, for logits not ``(N, T, V)``, labels not ``(N, T)``, or labels outside
            ``[0, V)`` that are not ``ignore_index``.

    Example::

        m = LanguageModelIndicators()
        m.update(logits, labels)   # logits (N, T, V), labels (N, T) with -100 where not scored
        m.compute()["perplexity"]
    """

    full_state_update = False
    #: the keys of :meth:`compute`'s dict
    KEYS = ("loss", "loss_stderr", "perplexity", "token_acc", "token_acc_stderr", "entropy")

    def __init__(self, shift: bool = False, ignore_index: int = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shift, self.ignore_index = shift, ignore_index
        for name in (*_TOTALS, "nll_sq", "nll_tokens", "tokens_sq", "correct_sq", "correct_tokens", "sequences"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        s = sequence_token_statistics(logits, labels, shift=self.shift, ignore_index=self.ignore_index)
        counted = s["tokens"] > 0  # a sequence without a scored token is no sample of the ratio
        s = {k: v[counted] for k, v in s.items()}
        for name in _TOTALS:
            setattr(self, name, getattr(self, name) + s[name].sum())
        n = s["tokens"]
        self.nll_sq += (s["nll"] ** 2).sum()
        self.nll_tokens += (s["nll"] * n).sum()
        self.correct_sq += (s["correct"] ** 2).sum()
        self.correct_tokens += (s["correct"] * n).sum()
        self.tokens_sq += (n * n).sum()
        self.sequences += n.numel()

    def compute(self) -> dict[str, Tensor]:
        tokens = self.tokens.clamp_min(1)
        loss = self.nll / tokens
        return {
            "loss": loss,
            "loss_stderr": ratio_standard_error(self.nll, self.tokens, self.nll_sq, self.nll_tokens, self.tokens_sq,
                                                self.sequences),
            "perplexity": perplexity(loss),
            "token_acc": self.correct / tokens,
            "token_acc_stderr": ratio_standard_error(self.correct, self.tokens, self.correct_sq, self.correct_tokens,
                                                     self.tokens_sq, self.sequences),
            "entropy": self.entropy / tokens,
        }
