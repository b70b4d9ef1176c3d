"""Lexical diversity of synthetic text: distinct-n, type-token ratio, unigram entropy, vocabulary coverage.

The synthetic text is a synthetic source's or a language model's samples; :func:`vocabulary_coverage` compares
it with held-out real text.

* distinct-n: Li, Galley, Brockett, Gao, Dolan, "A Diversity-Promoting Objective Function for Neural
  Conversation Models", NAACL 2016.
* type-token ratio and distinct-n under recursive training: Guo et al., "The Curious Decline of Linguistic
  Diversity: Training Language Models on Synthetic Text", 2023 (TTR -50% to -73%, distinct-2 -62% in 6 rounds).
* surviving types and unigram entropy of a refitted discrete distribution: Shumailov et al., Nature 631, 2024.

Inputs (``tokens``) may be

* an integer tensor of token ids, shape ``(B, L)`` (a batch of sequences) or ``(L,)`` (one sequence);
* a sequence of 1-D integer tensors (variable-length sequences);
* a sequence of strings, each split into tokens with ``tokenizer`` (default ``str.split``, whitespace);
* a sequence of token sequences (lists of ints or of strings).

String tokens are mapped to 63-bit ids with a stable hash (BLAKE2b; the same on every process and run, so the
values agree across DDP ranks); a collision has probability about ``V^2 / 2^64``. N-grams never cross a
sequence boundary. ``ignore_index`` (e.g. the padding id) drops those positions before n-grams are formed, so
padding is expected at the ends of sequences.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from collapse_guard.metrics._deprecation import renamed_kwargs

__all__ = [
    "TokenInput",
    "to_sequences",
    "ngrams",
    "ngram_counts",
    "distinct_n",
    "type_token_ratio",
    "unigram_entropy",
    "entropy_from_counts",
    "vocabulary_coverage",
]

TokenInput = Union[Tensor, Sequence[Tensor], Sequence[str], Sequence[Sequence[Union[int, str]]]]

_MASK63 = (1 << 63) - 1


def _str_id(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little") & _MASK63


def _seq_ids(seq, tokenizer: Optional[Callable[[str], Sequence[str]]]) -> Tensor:
    if isinstance(seq, Tensor):
        if seq.ndim != 1:
            raise ValueError(f"each sequence tensor must be 1-D, got shape {tuple(seq.shape)}.")
        if seq.is_floating_point() or seq.is_complex():
            raise ValueError(f"token ids must be integers, got dtype {seq.dtype}.")
        return seq.long().cpu()
    if isinstance(seq, str):
        toks = tokenizer(seq) if tokenizer is not None else seq.split()
        return torch.tensor([_str_id(t) for t in toks], dtype=torch.long)
    if isinstance(seq, (list, tuple)):
        ids = []
        for t in seq:
            if isinstance(t, str):
                ids.append(_str_id(t))
            elif isinstance(t, int) and not isinstance(t, bool):
                ids.append(t)
            else:
                raise ValueError(f"tokens must be str or int, got {type(t).__name__}.")
        return torch.tensor(ids, dtype=torch.long)
    raise ValueError(f"unsupported sequence type {type(seq).__name__}.")


def to_sequences(
    tokens: TokenInput,
    ignore_index: Optional[int] = None,
    tokenizer: Optional[Callable[[str], Sequence[str]]] = None,
) -> list[Tensor]:
    """Normalise any accepted token input to a list of 1-D int64 CPU tensors of token ids.

    Args:
        tokens: see the module docstring.
        ignore_index: token id to drop (padding); ignored for string input.
        tokenizer: splits a string into tokens (default: whitespace ``str.split``).

    Raises:
        ValueError: for float tensors, tensors with more than 2 dims, or unsupported element types.
    """
    if isinstance(tokens, Tensor):
        if tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(f"token ids must be integers, got dtype {tokens.dtype}.")
        if tokens.ndim == 1:
            seqs = [tokens.long().cpu()]
        elif tokens.ndim == 2:
            seqs = list(tokens.long().cpu().unbind(0))
        else:
            raise ValueError(f"token tensor must have shape (B, L) or (L,), got {tuple(tokens.shape)}.")
    elif isinstance(tokens, str):
        seqs = [_seq_ids(tokens, tokenizer)]
    elif isinstance(tokens, Sequence):
        seqs = [_seq_ids(s, tokenizer) for s in tokens]
    else:
        raise ValueError(f"unsupported token input of type {type(tokens).__name__}.")
    if ignore_index is not None:
        seqs = [s[s != ignore_index] for s in seqs]
    return seqs


def ngrams(sequences: Sequence[Tensor], n: int) -> Tensor:
    """All contiguous n-grams of a list of 1-D id tensors, as rows of an ``(M, n)`` int64 tensor."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive integer, got {n!r}.")
    parts = [s.unfold(0, n, 1) for s in sequences if s.numel() >= n]
    if not parts:
        return torch.empty(0, n, dtype=torch.long)
    return torch.cat(parts, dim=0)


def ngram_counts(sequences: Sequence[Tensor], n: int) -> tuple[Tensor, Tensor]:
    """Distinct n-grams (rows, ``(U, n)``) and how often each occurs (``(U,)`` int64)."""
    grams = ngrams(sequences, n)
    if grams.shape[0] == 0:
        return grams, torch.empty(0, dtype=torch.long)
    uniq, counts = torch.unique(grams, dim=0, return_counts=True)
    return uniq, counts


def distinct_n(
    tokens: TokenInput,
    n: int = 2,
    ignore_index: Optional[int] = None,
    tokenizer: Optional[Callable[[str], Sequence[str]]] = None,
) -> Tensor:
    """Distinct-n (Li et al. 2016): number of distinct n-grams over the total number of n-grams in a corpus.

    Args:
        tokens: the synthetic corpus (see the module docstring for accepted forms).
        n: n-gram order, ``>= 1`` (``n = 1`` is the type-token ratio).
        ignore_index: token id dropped before forming n-grams (padding).
        tokenizer: string splitter for string input (default whitespace).

    Returns:
        0-dim float64 tensor in ``(0, 1]``; falls as synthetic text repeats itself.

    Raises:
        ValueError: if the corpus has no n-gram of order ``n`` or the input is malformed.

    Example::

        >>> distinct_n(["the cat sat", "the cat ran"], n=2)  # 3 distinct of 4 bigrams
        tensor(0.7500, dtype=torch.float64)
    """
    seqs = to_sequences(tokens, ignore_index, tokenizer)
    uniq, counts = ngram_counts(seqs, n)
    total = int(counts.sum())
    if total == 0:
        raise ValueError(f"the corpus has no {n}-gram.")
    return torch.tensor(uniq.shape[0] / total, dtype=torch.float64)


def type_token_ratio(
    tokens: TokenInput,
    ignore_index: Optional[int] = None,
    tokenizer: Optional[Callable[[str], Sequence[str]]] = None,
) -> Tensor:
    """Type-token ratio: distinct tokens over tokens in the corpus (distinct-1). Guo et al. (2023) report
    -50% to -73% over 6 rounds of recursive fine-tuning.

    Args:
        tokens: the corpus (see the module docstring).
        ignore_index: token id dropped (padding).
        tokenizer: string splitter for string input.

    Returns:
        0-dim float64 tensor in ``(0, 1]``. Note it depends on corpus size: compare corpora of equal size.

    Raises:
        ValueError: if the corpus is empty or malformed.

    Example::

        >>> type_token_ratio(torch.tensor([[1, 2, 2, 3]]))
        tensor(0.7500, dtype=torch.float64)
    """
    return distinct_n(tokens, 1, ignore_index, tokenizer)


def entropy_from_counts(counts: Tensor) -> Tensor:
    """Plug-in Shannon entropy in nats of the distribution given by ``counts`` (shape ``(V,)``, ``>= 0``).

    The counts are sorted first, so the value does not depend on their order.
    """
    c, _ = torch.sort(counts.double())
    p = c[c > 0] / c.sum()
    return -(p * p.log()).sum()


def unigram_entropy(
    tokens: TokenInput,
    ignore_index: Optional[int] = None,
    tokenizer: Optional[Callable[[str], Sequence[str]]] = None,
) -> Tensor:
    """Shannon entropy, in nats, of the empirical unigram distribution of the corpus (plug-in estimate).

    A recursively refitted Zipf(1.1) distribution over 1000 types drops from 4.72 to 3.94 nats by generation 50
    (Shumailov et al., "AI models collapse when trained on recursively generated data", Nature 631, 2024).

    Args:
        tokens: the corpus (see the module docstring).
        ignore_index: token id dropped (padding).
        tokenizer: string splitter for string input.

    Returns:
        0-dim float64 tensor in ``[0, log V]`` with ``V`` the number of distinct tokens.

    Raises:
        ValueError: if the corpus is empty or malformed.

    Example::

        >>> unigram_entropy(torch.tensor([0, 1, 2, 3]))  # log 4
        tensor(1.3863, dtype=torch.float64)
    """
    seqs = to_sequences(tokens, ignore_index, tokenizer)
    _, counts = ngram_counts(seqs, 1)
    if counts.numel() == 0:
        raise ValueError("the corpus has no token.")
    return entropy_from_counts(counts)


@renamed_kwargs(fake_tokens="synthetic_tokens")
def vocabulary_coverage(
    real_tokens: TokenInput,
    synthetic_tokens: TokenInput,
    ignore_index: Optional[int] = None,
    tokenizer: Optional[Callable[[str], Sequence[str]]] = None,
    min_count: int = 1,
) -> Tensor:
    """Share of the real reference's vocabulary (its distinct tokens) that occurs in the synthetic corpus.

    ``|types(real, count >= min_count) & types(synthetic)| / |types(real, count >= min_count)|``. Under
    recursive training rare types die out and never return (Shumailov et al. 2024: about 841 of 1000 Zipf types
    survive one generation, 147 fifty), so coverage falls monotonically; compare corpora of equal size.

    Args:
        real_tokens: the held-out real corpus (see the module docstring).
        synthetic_tokens: the synthetic corpus (``fake_tokens=`` still works, with a ``DeprecationWarning``).
        ignore_index: token id dropped from both (padding).
        tokenizer: string splitter for string input.
        min_count: only real types seen at least this often count (1: all).

    Returns:
        0-dim float64 tensor in ``[0, 1]``.

    Raises:
        ValueError: if the real corpus has no type with ``min_count`` occurrences, or on malformed input.

    Example::

        >>> vocabulary_coverage(["a b c d"], ["a a b"])
        tensor(0.5000, dtype=torch.float64)
    """
    if min_count < 1:
        raise ValueError(f"`min_count` must be >= 1, got {min_count}.")
    real_types, real_counts = ngram_counts(to_sequences(real_tokens, ignore_index, tokenizer), 1)
    real_types = real_types[real_counts >= min_count].flatten()
    if real_types.numel() == 0:
        raise ValueError("the real corpus has no token type with `min_count` occurrences.")
    synthetic_types, _ = ngram_counts(to_sequences(synthetic_tokens, ignore_index, tokenizer), 1)
    hit = torch.isin(real_types, synthetic_types.flatten())
    return hit.double().mean()
