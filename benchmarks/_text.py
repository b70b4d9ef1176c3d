"""Real text for the detection benchmark: topic classification of snippets of Python's own help texts.

Real data: ``pydoc_data.topics.topics`` (the text of ``help()`` topics, shipped with CPython), the 6 longest topics,
whitespace collapsed, cut into 96-character snippets (the same number per topic, 209), split per seed into
training (50%), held-out real (20%, the guard's validation set) and test (30%, seen by no detector). A snippet's
features: log counts of its character 1-, 2- and 3-grams hashed into 512 buckets (CRC32), L2-normalised; the
classifier is an MLP 512-128-6. A generator: one character 3-gram Markov model per topic, fitted on the topic's
training snippets; ``replace`` refits each on its own samples generation after generation, so rare n-grams (the
topic's own words) die out, the way Shumailov et al.'s discrete case loses its tail.
"""
from __future__ import annotations

import zlib
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from _common import CrossEntropyClassifier
from collapse_guard.data import SyntheticSource

TOPICS = 6
WIDTH = 96
BUCKETS = 512
ORDER = 3


def topic_names() -> list[str]:
    from pydoc_data.topics import topics

    return sorted(topics, key=lambda k: (-len(topics[k]), k))[:TOPICS]


def snippets(seed: int) -> dict:
    """Snippets and labels split into train / val / test (lists of str, int64 arrays)."""
    from pydoc_data.topics import topics

    names = topic_names()
    texts = [" ".join(topics[n].split()) for n in names]
    per_topic = min(len(t) // WIDTH for t in texts)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, t in enumerate(texts):
        cut = [t[i:i + WIDTH] for i in range(0, len(t) - WIDTH + 1, WIDTH)]
        xs += [cut[i] for i in rng.permutation(len(cut))[:per_topic]]
        ys += [c] * per_topic
    perm = rng.permutation(len(xs))
    xs, ys = [xs[i] for i in perm], np.asarray(ys, dtype=np.int64)[perm]
    n_train, n_val = len(xs) // 2, len(xs) // 5
    parts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val), "test": slice(n_train + n_val, None)}
    return {k: (xs[s], ys[s]) for k, s in parts.items()}


def features(texts: list[str]) -> torch.Tensor:
    out = np.zeros((len(texts), BUCKETS), np.float32)
    for i, t in enumerate(texts):
        for n in (1, 2, 3):
            for j in range(len(t) - n + 1):
                out[i, zlib.crc32(t[j:j + n].encode()) % BUCKETS] += 1
    out = np.log1p(out)
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-8
    return torch.from_numpy(out)


def tensors(texts: list[str], labels: np.ndarray) -> TensorDataset:
    return TensorDataset(features(texts), torch.as_tensor(labels, dtype=torch.long))


class CharNGram:
    """A character ``ORDER``-gram Markov model: fitted by counting, sampled character by character."""

    def fit(self, texts: list[str]) -> "CharNGram":
        self.table: dict[str, list[str]] = {}
        for t in texts:
            for j in range(len(t) - ORDER):
                self.table.setdefault(t[j:j + ORDER], []).append(t[j + ORDER])
        self.starts = [t[:ORDER] for t in texts if len(t) >= ORDER]
        self.keys = list(self.table)
        return self

    def sample(self, n: int, rng: np.random.Generator) -> list[str]:
        out = []
        for _ in range(n):
            s = self.starts[rng.integers(len(self.starts))]
            while len(s) < WIDTH:
                nxt = self.table.get(s[-ORDER:])
                if nxt:
                    s += nxt[rng.integers(len(nxt))]
                else:  # a context never followed by anything (the end of a text): jump to a known one
                    s += " " + self.keys[rng.integers(len(self.keys))]
            out.append(s[:WIDTH])
        return out


def replace_chain(split: dict, seed: int, generations: int) -> list[tuple[list[str], np.ndarray]]:
    """Generations ``1..generations`` of per-topic n-gram models, each refitted on the previous one's samples."""
    rng = np.random.default_rng(seed + 1)
    x, y = split["train"]
    current = {c: [t for t, l in zip(x, y) if l == c] for c in range(TOPICS)}
    chain = []
    for _ in range(generations):
        current = {c: CharNGram().fit(current[c]).sample(len(current[c]), rng) for c in range(TOPICS)}
        texts = [t for c in range(TOPICS) for t in current[c]]
        labels = np.concatenate([np.full(len(current[c]), c, dtype=np.int64) for c in range(TOPICS)])
        chain.append((texts, labels))
    return chain


class TextClassifier(CrossEntropyClassifier):
    """MLP 512-128-6 over hashed character n-gram features."""

    def __init__(self, lr: float = 2e-3) -> None:
        super().__init__(nn.Sequential(nn.Linear(BUCKETS, 128), nn.ReLU(), nn.Linear(128, TOPICS)), lr)


class TextData:
    """One seed's real text: the splits as snippets and as feature tensors, and the cached replace chain."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.split = snippets(seed)
        self.tensors = {k: tensors(*v) for k, v in self.split.items()}
        self._chain: Optional[list] = None

    def chain(self, generations: int) -> list:
        if self._chain is None or len(self._chain) < generations:
            self._chain = replace_chain(self.split, self.seed, generations)
        return self._chain[:generations]


def synth_text_good(data: TextData, seed: int) -> dict:
    x, y = data.chain(1)[0]
    return {"gen1": SyntheticSource(tensors(x, y), generator=f"char {ORDER}-gram per topic", generation=1)}


def synth_text_replace(data: TextData, seed: int, generations=(10, 20, 30)) -> dict:
    chain = data.chain(max(generations))
    return {f"gen{g}": SyntheticSource(tensors(*chain[g - 1]), generator=f"char {ORDER}-gram per topic",
                                       generation=g, params={"regime": "replace"}) for g in generations}
