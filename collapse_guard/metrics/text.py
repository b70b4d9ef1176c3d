"""torchmetrics ``Metric`` classes over the lexical diversity indicators of synthetic text.

``update(tokens)`` accepts every token input of :mod:`collapse_guard.metrics.functional.text` (id tensors
``(B, L)``, lists of 1-D id tensors, lists of strings). Each update stores only its distinct n-grams (or
types) and their counts, in ``cat`` list states, so that the result over all batches and DDP ranks equals the
functional on the whole corpus.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from collapse_guard.metrics._deprecation import deprecated_alias
from collapse_guard.metrics.functional.text import TokenInput, entropy_from_counts, ngram_counts, to_sequences

__all__ = ["DistinctN", "TypeTokenRatio", "UnigramEntropy", "VocabularyCoverage"]


def _merge_counts(grams: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of ``grams`` and the summed ``counts`` of each."""
    if grams.ndim == 1:
        grams = grams[:, None]
    uniq, inverse = torch.unique(grams, dim=0, return_inverse=True)
    total = torch.zeros(uniq.shape[0], dtype=torch.long, device=counts.device).index_add_(0, inverse, counts)
    return uniq, total


def _is_empty(state) -> bool:
    return (isinstance(state, list) and len(state) == 0) or (isinstance(state, Tensor) and state.numel() == 0)


class _TokenMetric(Metric):
    """Base: reads text in every accepted form with ``ignore_index`` and ``tokenizer``; ``states`` are ``cat`` lists."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        ignore_index: Optional[int],
        tokenizer: Optional[Callable[[str], Sequence[str]]],
        states: Sequence[str],
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.tokenizer = tokenizer
        for name in states:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _ngram_counts(self, tokens: TokenInput, n: int) -> tuple[Tensor, Tensor]:
        """The distinct n-grams of a batch, ``(G, n)``, and their counts, ``(G,)``."""
        return ngram_counts(to_sequences(tokens, self.ignore_index, self.tokenizer), n)


class _NgramMetric(_TokenMetric):
    """Base: the distinct n-grams of every batch and their counts (``n`` defaults to DistinctN's 2)."""

    def __init__(
        self,
        n: int = 2,
        ignore_index: Optional[int] = None,
        tokenizer: Optional[Callable[[str], Sequence[str]]] = None,
        **kwargs,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"`n` must be a positive integer, got {n!r}.")
        super().__init__(ignore_index, tokenizer, ("grams", "counts"), **kwargs)
        self.n = n

    def update(self, tokens: TokenInput) -> None:
        """Add a batch of synthetic text (token id tensor ``(B, L)``, list of id tensors or of strings)."""
        uniq, counts = self._ngram_counts(tokens, self.n)
        self.grams.append(uniq.to(self.device))
        self.counts.append(counts.to(self.device))

    def _merged(self) -> tuple[Tensor, Tensor]:
        if _is_empty(self.counts):
            raise ValueError(f"{type(self).__name__} has seen no text before compute().")
        counts = dim_zero_cat(self.counts)
        if counts.numel() == 0 or int(counts.sum()) == 0:
            raise ValueError(f"{type(self).__name__}: the corpus has no {self.n}-gram.")
        return _merge_counts(dim_zero_cat(self.grams), counts)


class DistinctN(_NgramMetric):
    """Distinct-n (Li et al. 2016) of all synthetic text seen: distinct n-grams over n-grams.

    ``compute()`` returns a 0-dim float64 tensor in ``(0, 1]``, see
    :func:`~collapse_guard.metrics.functional.distinct_n`. Note that it depends on the corpus size.

    Args:
        n: n-gram order (default 2).
        ignore_index: token id dropped before forming n-grams (padding).
        tokenizer: string splitter for string input (default whitespace).
        kwargs: torchmetrics ``Metric`` keyword arguments.

    Example::

        m = DistinctN(n=2, ignore_index=tokenizer.pad_token_id)
        m.update(synthetic_ids)  # (B, L): a language model's samples, say
        m.compute()
    """

    def compute(self) -> Tensor:
        uniq, counts = self._merged()
        return torch.tensor(uniq.shape[0] / int(counts.sum()), dtype=torch.float64, device=self.device)


class _Unigrams:
    """Mixin: an n-gram metric fixed to ``n = 1``, built from ``(ignore_index, tokenizer, **kwargs)``."""

    def __init__(
        self,
        ignore_index: Optional[int] = None,
        tokenizer: Optional[Callable[[str], Sequence[str]]] = None,
        **kwargs,
    ) -> None:
        super().__init__(1, ignore_index, tokenizer, **kwargs)


class TypeTokenRatio(_Unigrams, DistinctN):
    """Type-token ratio (distinct-1) of all synthetic text seen; a 0-dim float64 tensor in ``(0, 1]``.

    Args:
        ignore_index: token id dropped (padding).
        tokenizer: string splitter for string input.
        kwargs: torchmetrics ``Metric`` keyword arguments.
    """


class UnigramEntropy(_Unigrams, _NgramMetric):
    """Shannon entropy in nats of the unigram distribution of all synthetic text seen.

    ``compute()`` returns a 0-dim float64 tensor in ``[0, log V]``, see
    :func:`~collapse_guard.metrics.functional.unigram_entropy`.

    Args:
        ignore_index: token id dropped (padding).
        tokenizer: string splitter for string input.
        kwargs: torchmetrics ``Metric`` keyword arguments.
    """

    def compute(self) -> Tensor:
        _, counts = self._merged()
        return entropy_from_counts(counts)


class VocabularyCoverage(_TokenMetric):
    """Share of the real reference's token types that occur in the synthetic text.

    ``update(tokens, real)`` with ``real=True`` for the held-out real corpus and ``False`` for synthetic text.
    ``compute()`` returns a 0-dim float64 tensor in ``[0, 1]``, see
    :func:`~collapse_guard.metrics.functional.vocabulary_coverage`.

    Args:
        ignore_index: token id dropped (padding).
        tokenizer: string splitter for string input.
        min_count: only real types seen at least this often count.
        kwargs: torchmetrics ``Metric`` keyword arguments.
    """

    def __init__(
        self,
        ignore_index: Optional[int] = None,
        tokenizer: Optional[Callable[[str], Sequence[str]]] = None,
        min_count: int = 1,
        **kwargs,
    ) -> None:
        if min_count < 1:
            raise ValueError(f"`min_count` must be >= 1, got {min_count}.")
        super().__init__(ignore_index, tokenizer, ("real_types", "real_counts", "synthetic_types"), **kwargs)
        self.min_count = min_count

    fake_types = deprecated_alias("synthetic_types", "fake_types")

    def update(self, tokens: TokenInput, real: bool) -> None:
        """Add a batch of real (``real=True``) or synthetic text."""
        uniq, counts = self._ngram_counts(tokens, 1)
        if real:
            self.real_types.append(uniq.flatten().to(self.device))
            self.real_counts.append(counts.to(self.device))
        else:
            self.synthetic_types.append(uniq.flatten().to(self.device))

    def compute(self) -> Tensor:
        if _is_empty(self.real_types):
            raise ValueError("VocabularyCoverage has seen no real text before compute().")
        types, counts = _merge_counts(dim_zero_cat(self.real_types), dim_zero_cat(self.real_counts))
        types = types.flatten()[counts >= self.min_count]
        if types.numel() == 0:
            raise ValueError("the real corpus has no token type with `min_count` occurrences.")
        if _is_empty(self.synthetic_types):
            return torch.zeros((), dtype=torch.float64, device=self.device)
        return torch.isin(types, dim_zero_cat(self.synthetic_types)).double().mean()
