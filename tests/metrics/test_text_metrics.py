"""Text indicators: distinct-n, type-token ratio, unigram entropy, vocabulary coverage."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from collapse_guard.metrics.functional import distinct_n, type_token_ratio, unigram_entropy, vocabulary_coverage
from collapse_guard.metrics.functional.text import to_sequences


def py_distinct(seqs: list[list[int]], n: int) -> float:
    grams = [tuple(s[i : i + n]) for s in seqs for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams)


def test_hand_examples():
    assert float(distinct_n(["the cat sat", "the cat ran"], n=2)) == pytest.approx(3 / 4)
    assert float(distinct_n(["the cat sat", "the cat ran"], n=1)) == pytest.approx(4 / 6)
    assert float(type_token_ratio(["a a a a"])) == pytest.approx(0.25)
    assert float(unigram_entropy(["a b a b"])) == pytest.approx(math.log(2))
    assert float(unigram_entropy(["a a a"])) == 0.0
    assert float(vocabulary_coverage(["a b c d"], ["a a b zz"])) == pytest.approx(0.5)
    assert float(vocabulary_coverage(["a a b c"], ["a"], min_count=2)) == 1.0


def test_ngrams_do_not_cross_sequences():
    # one sequence "1 2 3 4" has bigrams 12 23 34; split as "1 2" + "3 4" only 12 and 34
    assert float(distinct_n(torch.tensor([[1, 2, 3, 4]]), n=2)) == 1.0
    assert float(distinct_n([torch.tensor([1, 2]), torch.tensor([1, 2])], n=2)) == 0.5
    with pytest.raises(ValueError, match="no 3-gram"):
        distinct_n([torch.tensor([1, 2])], n=3)


def test_input_forms_agree():
    words = ["the cat sat on the mat", "the dog sat", "a cat"]
    vocab = {w: i for i, w in enumerate(sorted({w for s in words for w in s.split()}))}
    ids = [torch.tensor([vocab[w] for w in s.split()]) for s in words]
    lists = [s.split() for s in words]
    for n in (1, 2, 3):
        a = distinct_n(words, n=n)
        assert torch.equal(a, distinct_n(ids, n=n))
        assert torch.equal(a, distinct_n(lists, n=n))
    assert torch.equal(unigram_entropy(words), unigram_entropy(ids))
    assert torch.equal(vocabulary_coverage(words, ["the cat"]), vocabulary_coverage(ids, [ids[0][:2]]))


def test_ignore_index_drops_padding():
    padded = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 0, 0, 0]])
    unpadded = [torch.tensor([5, 6, 7]), torch.tensor([5, 6])]
    for n in (1, 2):
        assert torch.equal(distinct_n(padded, n=n, ignore_index=0), distinct_n(unpadded, n=n))
    assert torch.equal(unigram_entropy(padded, ignore_index=0), unigram_entropy(unpadded))


def test_custom_tokenizer():
    assert float(type_token_ratio(["abca"], tokenizer=list)) == pytest.approx(3 / 4)


@settings(max_examples=30, deadline=None)
@given(
    seqs=st.lists(st.lists(st.integers(0, 6), min_size=0, max_size=12), min_size=1, max_size=6),
    n=st.integers(1, 3),
)
def test_matches_python_reference(seqs, n):
    total = sum(max(0, len(s) - n + 1) for s in seqs)
    tensors = [torch.tensor(s, dtype=torch.long) for s in seqs]
    if total == 0:
        with pytest.raises(ValueError):
            distinct_n(tensors, n=n)
        return
    assert float(distinct_n(tensors, n=n)) == pytest.approx(py_distinct(seqs, n), rel=1e-12)
    counts = Counter(t for s in seqs for t in s)
    p = np.array(list(counts.values()), dtype=float)
    p /= p.sum()
    if len(p):
        assert float(unigram_entropy(tensors)) == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-12)


def test_repetition_lowers_diversity():
    g = torch.Generator().manual_seed(0)
    diverse = torch.randint(0, 1000, (50, 40), generator=g)
    repetitive = torch.randint(0, 30, (50, 40), generator=g)
    assert float(distinct_n(repetitive, 2)) < float(distinct_n(diverse, 2))
    assert float(unigram_entropy(repetitive)) < float(unigram_entropy(diverse))
    assert float(vocabulary_coverage(diverse, repetitive)) < 0.05


def test_bad_input():
    with pytest.raises(ValueError, match="integers"):
        distinct_n(torch.randn(2, 3))
    with pytest.raises(ValueError, match="shape"):
        distinct_n(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="positive"):
        distinct_n(["a b"], n=0)
    with pytest.raises(ValueError, match="no token"):
        unigram_entropy([""])
    with pytest.raises(ValueError, match="min_count"):
        vocabulary_coverage(["a"], ["a"], min_count=2)
    with pytest.raises(ValueError):
        to_sequences([1.5])
