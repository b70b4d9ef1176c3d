"""The datasets and scenarios of the detection suite (``benchmarks/suite.py``; protocol: RESULTS.md, section 5).

Five real datasets, each a :class:`_common.Task` (the user's DataModule and model, the ground-truth margin of its
test set), all shipped inside installed packages:

* ``digits``: scikit-learn's 8x8 digits as in ``detection.py`` (900 train / 360 held-out real / 537 test; MLP
  64-128-10);
* ``digits4x4``: the same digits and splits, each image average-pooled 2x2 to 4x4 (16 features): several classes
  become confusable; MLP 16-64-10 (Adam 5e-3);
* ``text``: topics of ``pydoc_data.topics`` help snippets as in ``_text.py`` (627 / 250 / 377; MLP 512-128-6);
* ``chatterbot`` (round 2): the category of a human-written conversation line of PyPI's ``chatterbot-corpus``
  (English; the 6 categories with at least 100 distinct lines, a line two categories share dropped, 119 lines drawn
  per category and seed; split per class 50/20/30: 360 / 138 / 216), features as ``text``'s, MLP 512-128-6
  (Adam 2e-3); its generators are per-category character 3-gram models cut to the lengths of real lines;
* ``iris`` (round 2): scikit-learn's iris (149 distinct rows, 4 features, 3 classes; 74 / 30 / 45), as the tables
  below, MLP 4-64-3;
* ``wine`` (178 samples, 13 features, 3 classes) and ``breast_cancer`` (569, 30, 2): scikit-learn, split per seed
  and class into train 50% / held-out real 20% / test 30% (wine 90 / 35 / 53, breast_cancer 284 / 114 / 171),
  standardized with the training split's mean and standard deviation; MLP 13-64-3 and 30-64-2 (Adam 5e-3).

In every dataset the training split also gives the ``MixedDataModule``'s reserve (30% of it, as in ``detection.py``),
the held-out real split is the guard's validation set, and the test split is seen by no detector.

**Ground-truth margins** (points of real test accuracy that count as a collapse): digits 0.02 and text 0.05 as in
``detection.py``. For the new datasets, ``max(0.02, 2.5 * sqrt(a * (1 - a) / n_test))``, 2.5 binomial standard
errors of the test set at the real-only accuracy ``a``; ``a`` is the mean final test accuracy of ``pure_real`` fits
at seeds 100, 101, 102 (outside the suite's seeds 0-5, so no run of the suite set it; :data:`MARGIN_BASIS`):
digits4x4 ``a`` = 0.889 on 537 digits: 2.5 x 0.0136 = 0.034; wine ``a`` = 0.969 on 53: 2.5 x 0.0240 = 0.060 (one test
sample is 1.9 points: a collapse loses 4 samples or more); breast_cancer ``a`` = 0.963 on 171: 2.5 x 0.0144 = 0.036.
Round 2 (RESULTS.md, section 8) adds two datasets no benchmark of this project had used, measured the same way
before any fit of the suite: ``chatterbot`` ``a`` = 0.660 on 216 lines: 2.5 x 0.0322 = 0.081; ``iris`` ``a`` = 0.963 on
45: 2.5 x 0.0281 = 0.070.
Real-only fits of wine and breast_cancer reach their level in the first epoch and then stay flat (1920 samples an
epoch cycle their 63 / 199 training samples ~30 / ~10 times); digits4x4 is still rising at epoch 13.

**Scenarios** (the same names on every dataset; real-fraction schedule ``_common.schedule()``, ``schedule(0.1)`` for
``accumulate``, 1.0 for ``pure_real``):

* healthy: ``pure_real`` (real data only), ``good_generator`` (a well-fitted class-conditional generator,
  generation 1), ``accumulate`` (generations 1-10 of an ``accumulate`` chain, 200 samples each);
* meant to collapse: ``mode_loss`` (the good generator without ``max(1, round(0.3 k))`` of the ``k`` classes, drawn
  per seed: digits 3 of 10, text 2 of 6, wine 1 of 3, breast_cancer 1 of 2), ``label_noise`` (60% of the good
  generator's labels wrong, uniform over the other classes), ``offset`` (the good generator's samples shifted),
  ``replace`` (generations 10, 20, 30 of a generator refitted on its own samples, 200 per generation; text: as
  ``_text``, each topic's training count).

Generators: digits as ``_common`` (class-conditional GMMs, offset one pixel right); digits4x4: the digits' sources
(fitted on the 8x8 training digits) pooled to 4x4, the offset two pixels right before pooling, i.e. one cell of the
4x4 image; text as ``_text`` (per-topic character 3-gram models; the good generator is generation 1 of its replace
chain, ``accumulate`` refits them on the real and all earlier snippets). Text ``offset``: every letter
of the good generator's snippets shifted one place in the alphabet (ROT-1, ``z`` to ``a``), a fixed offset of the
character codes as the digits' is of the pixels (a first choice, every space written ``"\u2581"`` as a faulty
SentencePiece detokenizer would, did not move the real test accuracy at seeds 100-101). Tabular: a class-conditional GMM
(2 components per class, full covariance in the 10 leading principal components, no clipping), the ``replace``
chain with 1 component; ``offset``: every feature shifted by +1 training standard deviation.
"""
from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from torch import nn
from torch.utils.data import TensorDataset

import _common
from _common import SYNTHETIC_SIZE, CrossEntropyClassifier, SplitsDataModule, Task, schedule
from collapse_guard.data import SyntheticSource
from collapse_guard.loop import ClassConditionalGMM, generation_chain, to_tensor_dataset

DATASETS = ("digits", "digits4x4", "text", "wine", "breast_cancer", "chatterbot", "iris")

#: name -> (expected, what the synthetic source is)
SCENARIOS = {
    "pure_real": ("healthy", "real data only"),
    "good_generator": ("healthy", "a well-fitted class-conditional generator, generation 1"),
    "accumulate": ("healthy", "generations 1-10 of an accumulate chain; real share falls to 10%"),
    "mode_loss": ("collapse", "the good generator without ~30% of the classes (at least 1)"),
    "label_noise": ("collapse", "the good generator, 60% of labels wrong"),
    "offset": ("collapse", "the good generator's samples shifted (pixels, cells, +1 sd, space marker)"),
    "replace": ("collapse", "generations 10, 20, 30 of a generator refitted on its own samples"),
}
LOST_SHARE, NOISE_RATE, GENERATIONS, ACCUMULATED, PER_GENERATION = 0.3, 0.6, (10, 20, 30), 10, 200

#: the new datasets of round 2 (RESULTS.md, section 8): measured like the others, before any fit of the suite
CHATTERBOT_BASIS, IRIS_BASIS = (0.660, 216), (0.963, 45)
#: the real-only accuracy the margins of the new datasets are 2.5 standard errors of: (mean final test accuracy of
#: ``pure_real`` at seeds 100-102, test set size)
MARGIN_BASIS = {"digits4x4": (0.889, 537), "wine": (0.969, 53), "breast_cancer": (0.963, 171),
                "chatterbot": CHATTERBOT_BASIS, "iris": IRIS_BASIS}


def margin(name: str) -> float:
    """``max(0.02, 2.5 binomial standard errors of the test set at the real-only accuracy)``, to 3 decimals."""
    acc, n = MARGIN_BASIS[name]
    return round(max(0.02, 2.5 * float(np.sqrt(acc * (1 - acc) / n))), 3)


class MLP(CrossEntropyClassifier):
    """``inputs``-``hidden``-``classes`` MLP trained with cross-entropy."""

    def __init__(self, inputs: int, hidden: int, classes: int, lr: float = 5e-3) -> None:
        super().__init__(nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes)), lr)


# -- digits4x4: the digits pooled ------------------------------------------------------------------------------
def pool(ds: TensorDataset) -> TensorDataset:
    """8x8 digits (64 features in ``[0, 1]``) average-pooled 2x2 to 4x4 (16 features)."""
    x, y = ds.tensors
    return TensorDataset(nn.functional.avg_pool2d(x.reshape(-1, 1, 8, 8), 2).reshape(-1, 16), y)


class PooledDigits:
    """One seed's digits: the 8x8 splits (the generators are fitted on them) and the pooled tensors."""

    def __init__(self, seed: int) -> None:
        self.splits = _common.digits_splits(seed)
        self.tensors = {k: pool(_common.digits_tensors(*v)) for k, v in self.splits.items()}


def pooled(build: Callable) -> Callable:
    """A digits scenario's builder whose sources come out pooled to 4x4."""
    def build4x4(data: PooledDigits, seed: int) -> dict:
        return {name: SyntheticSource(pool(s.data), generator=f"{s.generator}, pooled 4x4", generation=s.generation,
                                      params=s.params) for name, s in build(data.splits, seed).items()}
    return build4x4


# -- tabular ---------------------------------------------------------------------------------------------------
LOADERS = {"wine": "load_wine", "breast_cancer": "load_breast_cancer", "iris": "load_iris"}
PARTS = {"train": 0.5, "val": 0.2, "test": 0.3}


class TabularData:
    """One seed's stratified split (train / val / test) of a scikit-learn table, standardized by train."""

    def __init__(self, name: str, seed: int) -> None:
        import sklearn.datasets

        x, y = getattr(sklearn.datasets, LOADERS[name])(return_X_y=True)
        first = np.sort(np.unique(x, axis=0, return_index=True)[1])  # iris repeats rows: each row once (wine and
        x, y = x[first], y[first]  # breast_cancer have no repeat, so they are as before)
        rng = np.random.default_rng(seed)
        idx = {k: [] for k in PARTS}
        for c in np.unique(y):  # per class: the first 50% train, the next 20% held-out real, the rest test
            members = rng.permutation(np.flatnonzero(y == c))
            cuts = np.round(np.cumsum([PARTS["train"], PARTS["val"]]) * len(members)).astype(int)
            for k, part in zip(PARTS, np.split(members, cuts)):
                idx[k] += part.tolist()
        idx = {k: rng.permutation(v) for k, v in idx.items()}
        mean, sd = x[idx["train"]].mean(0), x[idx["train"]].std(0) + 1e-8
        self.num_classes = int(y.max()) + 1
        self.split = {k: (((x[v] - mean) / sd).astype(np.float32), y[v].astype(np.int64)) for k, v in idx.items()}
        self.tensors = {k: to_tensor_dataset(*v) for k, v in self.split.items()}


def _tabular_gmm(seed: int, components: int = 2) -> ClassConditionalGMM:
    return ClassConditionalGMM(n_components=components, n_pca=10, value_range=None, random_state=seed)


# -- text ------------------------------------------------------------------------------------------------------
class TopicNGrams:
    """Per-topic character n-gram models with ``fit(texts, labels)`` / ``sample(n, rng)``, for ``generation_chain``
    (``n`` split evenly over the topics)."""

    def fit(self, x, y) -> "TopicNGrams":
        import _text

        y = np.asarray(y)
        self.models = [_text.CharNGram().fit([t for t, label in zip(x, y) if label == c]) for c in np.unique(y)]
        return self

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.models)
        counts = [n // k + (c < n % k) for c in range(k)]
        texts = [t for c, m in enumerate(self.models) for t in m.sample(counts[c], rng)]
        return np.asarray(texts), np.repeat(np.arange(k), counts)


#: the text offset: every letter replaced by the next one in the alphabet (ROT-1, ``z`` to ``a``)
ROT1 = str.maketrans(string.ascii_lowercase + string.ascii_uppercase,
                     string.ascii_lowercase[1:] + "a" + string.ascii_uppercase[1:] + "A")


# -- chatterbot: the category of a human-written conversation line ------------------------------------------------
#: the categories of ``chatterbot-corpus`` (English) with at least 100 distinct conversation lines
CHATTERBOT_CATEGORIES = ("ai", "coding", "conversations", "emotion", "psychology", "trivia")
CHATTERBOT_PER_CLASS = 119  # the smallest of those categories (psychology): balanced classes


def chatterbot_lines() -> dict[str, list[str]]:
    """Category -> its distinct conversation lines (sorted; none that two categories share), from the installed ``chatterbot-corpus`` YAML files."""
    import os

    import chatterbot_corpus
    import yaml

    root = os.path.join(os.path.dirname(chatterbot_corpus.__file__), "data", "english")
    out = {}
    for name in CHATTERBOT_CATEGORIES:
        with open(os.path.join(root, f"{name}.yml"), encoding="utf-8") as f:
            conversations = yaml.safe_load(f)["conversations"]
        out[name] = {" ".join(str(line).split()) for c in conversations for line in c} - {""}
    shared = {line for name in out for other in out if other != name for line in out[name] & out[other]}
    return {name: sorted(lines - shared) for name, lines in out.items()}  # a line in two categories: in neither


class ChatterbotData:
    """One seed's lines: per category ``CHATTERBOT_PER_CLASS`` drawn, split per class 50/20/30 like the tables;
    features as the help-text topics' (hashed character 1-3-grams, ``_text.features``)."""

    def __init__(self, seed: int) -> None:
        import _text

        rng = np.random.default_rng(seed)
        parts = {k: ([], []) for k in PARTS}
        for c, lines in enumerate(chatterbot_lines().values()):
            chosen = [lines[i] for i in rng.permutation(len(lines))[:CHATTERBOT_PER_CLASS]]
            cuts = np.round(np.cumsum([PARTS["train"], PARTS["val"]]) * len(chosen)).astype(int)
            for k, part in zip(PARTS, np.split(np.arange(len(chosen)), cuts)):
                parts[k][0].extend(chosen[i] for i in part)
                parts[k][1].extend([c] * len(part))
        self.num_classes = len(CHATTERBOT_CATEGORIES)
        self.split = {}
        for k, (x, y) in parts.items():
            order = rng.permutation(len(x))
            self.split[k] = ([x[i] for i in order], np.asarray(y, dtype=np.int64)[order])
        self.tensors = {k: _text.tensors(*v) for k, v in self.split.items()}


class LineNGrams(TopicNGrams):
    """:class:`TopicNGrams` whose samples are cut to lengths drawn from the topic's training lines (conversation
    lines are shorter than the help-text snippets the n-gram sampler writes)."""

    def fit(self, x, y) -> "LineNGrams":
        super().fit(x, y)
        y = np.asarray(y)
        self.lengths = [[len(t) for t, label in zip(x, y) if label == c] for c in np.unique(y)]
        return self

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        texts, labels = super().sample(n, rng)
        cut = [t[:max(3, self.lengths[c][rng.integers(len(self.lengths[c]))])] for t, c in zip(texts, labels)]
        return np.asarray(cut), labels


def _chatterbot_good(data: ChatterbotData, seed: int, n: int) -> tuple:
    cache = data.__dict__.setdefault("_good", {})
    if n not in cache:
        cache[n] = LineNGrams().fit(*_text_train(data)).sample(n, np.random.default_rng(seed + 1))
    return cache[n]


def _text_train(data) -> tuple:
    return tuple(np.asarray(v) for v in data.split["train"])


# -- the generic scenarios, over a dataset's generators ----------------------------------------------------------
@dataclass
class Generators:
    """How a dataset's synthetic sources are made (text and tabular; digits use ``_common``'s builders)."""

    name: str  # the good generator, in words
    train: Callable[[Any], tuple]  # data -> the (x, y) arrays generators are fitted on
    good: Callable[[Any, int, int], tuple]  # (data, seed, n) -> n samples (x, y) of the good generator
    chain_model: Callable[[int, str], Any]  # (seed, regime) -> an unfitted model for generation_chain
    wrap: Callable[[Any, Any], Any]  # (x, y) -> the torch Dataset the model reads
    shift: Callable[[Any], Any]  # x -> the offset samples
    shift_what: str

    def source(self, x, y, generator: Optional[str] = None, generation: int = 1, **params) -> SyntheticSource:
        return SyntheticSource(self.wrap(x, y), generator=generator or self.name, generation=generation,
                               params=params)

    def chain(self, data, seed: int, regime: str, generations: int) -> list:
        return generation_chain(lambda: self.chain_model(seed, regime), *self.train(data), generations=generations,
                                samples_per_generation=PER_GENERATION, regime=regime, seed=seed)


def synth_good(gen: Generators, data, seed: int) -> dict:
    return {"gen1": gen.source(*gen.good(data, seed, SYNTHETIC_SIZE))}


def synth_accumulate(gen: Generators, data, seed: int) -> dict:
    chain = gen.chain(data, seed, "accumulate", ACCUMULATED)
    return {f"gen{g}": gen.source(x, y, generation=g, regime="accumulate") for g, (x, y) in enumerate(chain, 1)}


def synth_replace(gen: Generators, data, seed: int) -> dict:
    chain = gen.chain(data, seed, "replace", max(GENERATIONS))
    return {f"gen{g}": gen.source(*chain[g - 1], f"{gen.name} (replace chain, 1 component)", g, regime="replace")
            for g in GENERATIONS}


def synth_mode_loss(gen: Generators, data, seed: int) -> dict:
    classes = int(np.max(gen.train(data)[1])) + 1
    lost = max(1, round(LOST_SHARE * classes))
    gone = sorted(np.random.default_rng(seed).choice(classes, size=lost, replace=False).tolist())
    x, y = gen.good(data, seed, int(SYNTHETIC_SIZE * classes / (classes - lost)))
    kept = np.flatnonzero(~np.isin(y, gone))
    return {"modes_lost": gen.source(x[kept], y[kept], f"{gen.name} without classes {gone}", lost=gone)}


def synth_label_noise(gen: Generators, data, seed: int) -> dict:
    x, y = gen.good(data, seed, SYNTHETIC_SIZE)
    classes = int(np.max(gen.train(data)[1])) + 1
    rng = np.random.default_rng(seed + 2)
    wrong = rng.random(len(y)) < NOISE_RATE
    y = np.where(wrong, (y + rng.integers(1, classes, len(y))) % classes, y)  # always a wrong class
    return {"noisy_labels": gen.source(x, y, f"{gen.name}, {NOISE_RATE:.0%} of labels wrong", rate=NOISE_RATE)}


def synth_offset(gen: Generators, data, seed: int) -> dict:
    x, y = gen.good(data, seed, SYNTHETIC_SIZE)
    return {"offset": gen.source(gen.shift(x), y, f"{gen.name}, {gen.shift_what}")}


GENERIC = {"good_generator": synth_good, "accumulate": synth_accumulate, "mode_loss": synth_mode_loss,
           "label_noise": synth_label_noise, "offset": synth_offset, "replace": synth_replace}


def _tabular_good(data: TabularData, seed: int, n: int) -> tuple:
    cache = data.__dict__.setdefault("_good", {})
    if n not in cache:
        cache[n] = _tabular_gmm(seed).fit(*data.split["train"]).sample(n, rng=seed + 1)
    return cache[n]


def _text_good(data, seed: int, n: int) -> tuple:  # generation 1 of _text's chain, as its good generator
    x, y = data.chain(1)[0]
    return np.asarray(x), y


TABULAR = Generators("ClassConditionalGMM(2, 10)", lambda d: d.split["train"], _tabular_good,
                     lambda seed, regime: _tabular_gmm(seed, 1 if regime == "replace" else 2), to_tensor_dataset,
                     lambda x: x + 1.0, "every feature +1 training standard deviation")
TEXT = Generators("char 3-gram per topic", lambda d: tuple(np.asarray(v) for v in d.split["train"]), _text_good,
                  lambda seed, regime: TopicNGrams(), lambda x, y: _tensors_of_text(x, y),
                  lambda x: np.char.translate(x, ROT1), "every letter shifted one place in the alphabet (ROT-1)")


CHATTERBOT = Generators("char 3-gram per category", _text_train, _chatterbot_good,
                        lambda seed, regime: LineNGrams(), lambda x, y: _tensors_of_text(x, y),
                        lambda x: np.char.translate(x, ROT1), "every letter shifted one place in the alphabet (ROT-1)")


def _tensors_of_text(x, y):
    import _text

    return _text.tensors(list(x), np.asarray(y))


# -- the tasks and the scenario builders ---------------------------------------------------------------------------
def _text_builders() -> dict:
    import _text

    return {**{s: functools.partial(b, TEXT) for s, b in GENERIC.items()},
            "good_generator": _text.synth_text_good, "replace": _text.synth_text_replace}


def builders(dataset: str) -> dict:
    """Scenario name -> ``build(data, seed)`` returning the synthetic sources (``pure_real``: none)."""
    c = _common
    digits = {"good_generator": c.synth_good, "accumulate": c.synth_accumulate, "mode_loss": c.synth_mode_loss,
              "label_noise": c.synth_label_noise, "offset": c.synth_offset, "replace": c.synth_replace}
    if dataset == "digits":
        return digits
    if dataset == "digits4x4":
        return {**{s: pooled(b) for s, b in digits.items()},
                "offset": pooled(functools.partial(c.synth_offset, pixels=2))}
    if dataset == "text":
        return _text_builders()
    if dataset == "chatterbot":
        return {s: functools.partial(b, CHATTERBOT) for s, b in GENERIC.items()}
    return {s: functools.partial(b, TABULAR) for s, b in GENERIC.items()}


def build_scenario(dataset: str, scenario: str, data, seed: int) -> tuple:
    """``(synthetic sources or None, real fraction schedule)`` of ``scenario`` on the seed's ``data``."""
    if scenario == "pure_real":
        return None, 1.0
    return builders(dataset)[scenario](data, seed), schedule(0.1 if scenario == "accumulate" else 0.0)


def _tensor_task(name: str, make: Callable, model: Callable) -> Task:
    return Task(name, margin(name), make, lambda d, bs: SplitsDataModule(d.tensors, bs), model,
                lambda d: tuple(d.tensors["test"].tensors))


def task(name: str) -> Task:
    """The :class:`_common.Task` of dataset ``name``."""
    if name in ("digits", "text"):
        return _common.TASKS[name]()
    if name == "digits4x4":
        return _tensor_task(name, PooledDigits, lambda: MLP(16, 64, 10))
    if name == "chatterbot":
        import _text

        return _tensor_task(name, ChatterbotData, lambda: MLP(_text.BUCKETS, 128, len(CHATTERBOT_CATEGORIES), lr=2e-3))
    shape = {"wine": (13, 3), "breast_cancer": (30, 2), "iris": (4, 3)}[name]
    return _tensor_task(name, functools.partial(TabularData, name), lambda: MLP(shape[0], 64, shape[1]))
