"""The language-model and regression tasks of the issue-15 detection suite (protocol: RESULTS.md, section 6).

Real data, all shipped inside installed packages:

* language model, character level: ``pydoc`` (every ``pydoc_data.topics.topics`` entry) and ``stdlib_docs`` (the
  ``inspect.getdoc`` docstrings of :data:`STDLIB_MODULES` and of their public functions, classes and methods, each
  docstring once). Printable ASCII (any other character written ``?``), whitespace runs written as one space; per
  seed the text is cut into 1024-character blocks, permuted and split 50 / 20 / 30% into training, held-out real
  and test blocks; a sample is a window of 64 characters and the 64 next characters as labels (a held-out or test
  window that is also a training window, or repeats an earlier one, is dropped: boilerplate such as a row of
  ``*`` recurs across blocks, and ``MixedDataModule`` refuses held-out samples that are training data);
* regression: ``diabetes`` (``load_diabetes``) and ``breast_cancer_texture`` (``load_breast_cancer``: the target
  is ``mean texture``, the inputs the other 29 features); per seed a random 50 / 20 / 30% split, inputs and target
  standardized by the training split.

Models: :class:`CharGRU` (embedding 32, GRU 64, logits ``(N, 64, V)``) and :class:`MLPRegressor` (inputs-16-1,
predictions ``(N,)``). Generators: :class:`CharNGram` (a character n-gram model counted on the text, sampled at a
temperature, vectorised over windows), :class:`JointGaussian` (inputs and target, full covariance, at a
temperature) and :func:`label_chain` (the ridge chain of Dohmatob, Feng and Kempe 2024). Scenarios:
:data:`SCENARIOS`; each is built by :func:`build_scenario`.
"""
from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import nn
from torch.utils.data import TensorDataset

from _common import SplitsDataModule, schedule
from collapse_guard.data import SyntheticSource
from collapse_guard.loop import generation_chain

# -- text ------------------------------------------------------------------------------------------------------
ALPHABET = "".join(chr(c) for c in range(32, 127))  # printable ASCII; '?' stands for anything else
VOCAB = len(ALPHABET)
WINDOW, BLOCK = 64, 1024
HELDOUT_WINDOWS, TEST_WINDOWS = 256, 384
SPLIT = (0.5, 0.2, 0.3)

STDLIB_MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "codecs", "collections",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message",
    "enum", "fractions", "functools", "gzip", "hashlib", "heapq", "html", "http.client", "inspect", "io",
    "ipaddress", "itertools", "json", "logging", "math", "operator", "os", "pathlib", "pickle", "pprint", "queue",
    "random", "re", "sched", "secrets", "shlex", "shutil", "socket", "sqlite3", "statistics", "string", "struct",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "traceback", "types",
    "typing", "unittest", "urllib.parse", "uuid", "warnings", "weakref", "xml.etree.ElementTree", "zipfile",
)


def clean(text: str) -> str:
    """Whitespace runs written as one space; characters outside printable ASCII written ``?``."""
    text = " ".join(text.split())
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64) - 32


def decode(ids) -> str:
    return "".join(ALPHABET[i] for i in ids)


def pydoc_text() -> str:
    from pydoc_data.topics import topics

    return clean(" ".join(topics[k] for k in sorted(topics)))


def stdlib_docs_text() -> str:
    """Each distinct docstring of the modules, their public functions and classes and the classes' methods."""
    seen: dict[str, None] = {}

    def add(obj) -> None:
        doc = inspect.getdoc(obj)
        if doc:
            seen.setdefault(doc, None)

    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        add(module)
        for attr in sorted(a for a in dir(module) if not a.startswith("_")):
            obj = getattr(module, attr, None)
            if not (inspect.isclass(obj) or inspect.isroutine(obj)) or getattr(obj, "__module__", None) != name:
                continue
            add(obj)
            if inspect.isclass(obj):
                for member in sorted(m for m in vars(obj) if not m.startswith("_")):
                    add(getattr(obj, member, None))
    return clean(" ".join(seen))


CORPORA = {"pydoc": pydoc_text, "stdlib_docs": stdlib_docs_text}


@functools.lru_cache(maxsize=4)
def corpus(name: str) -> np.ndarray:
    return encode(CORPORA[name]())


def windows(blocks: list[np.ndarray]) -> np.ndarray:
    """Non-overlapping windows of ``WINDOW + 1`` characters (inputs and next characters) of each block."""
    out = [b[i:i + WINDOW + 1] for b in blocks for i in range(0, len(b) - WINDOW, WINDOW)]
    return np.stack(out)


def window_dataset(w: np.ndarray) -> TensorDataset:
    w = torch.as_tensor(np.asarray(w), dtype=torch.long)
    return TensorDataset(w[:, :-1].contiguous(), w[:, 1:].contiguous())


class TextData:
    """One seed's split of a corpus: training windows (and blocks, for the generators), held-out real, test."""

    def __init__(self, name: str, seed: int) -> None:
        ids = corpus(name)
        blocks = [ids[i:i + BLOCK] for i in range(0, len(ids) - BLOCK + 1, BLOCK)]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(blocks))
        cuts = np.round(np.cumsum(SPLIT[:2]) * len(blocks)).astype(int)
        parts = dict(zip(("train", "val", "test"), np.split(order, cuts)))
        self.windows = {k: windows([blocks[i] for i in v]) for k, v in parts.items()}
        seen = {w.tobytes() for w in self.windows["train"]}
        for k, n in (("val", HELDOUT_WINDOWS), ("test", TEST_WINDOWS)):  # no window seen before (boilerplate)
            fresh = [w for w in self.windows[k] if w.tobytes() not in seen]
            seen |= {w.tobytes() for w in fresh}
            self.windows[k] = np.stack(fresh)[rng.permutation(len(fresh))[:n]]
        self.tensors = {k: window_dataset(v) for k, v in self.windows.items()}
        self.train = (self.windows["train"], np.zeros(len(self.windows["train"]), np.int64))


class CharNGram:
    """A character ``order``-gram model: next-character counts per context of ``order - 1`` characters, counted on
    the rows of ``x`` (windows); :meth:`sample` draws ``n`` windows of ``WINDOW + 1`` characters at once, each
    started at a context drawn as often as the text has it, at ``temperature`` (probability proportional to
    ``count ** (1 / temperature)``). A context never followed by anything restarts at a random context."""

    def __init__(self, order: int = 5, temperature: float = 1.0) -> None:
        self.order, self.temperature = order, temperature

    def fit(self, x: np.ndarray, y=None) -> "CharNGram":
        k = self.order - 1
        x = np.asarray(x, np.int64)
        ctx = sum(x[:, i:x.shape[1] - k + i] * VOCAB ** (k - 1 - i) for i in range(k))
        pairs, counts = np.unique((ctx * VOCAB + x[:, k:]).reshape(-1), return_counts=True)
        self.ctx, self.next, self.counts = pairs // VOCAB, pairs % VOCAB, counts.astype(np.float64)
        self.contexts, self.start = np.unique(self.ctx, return_index=True)
        self.stop = np.append(self.start[1:], len(self.ctx))
        w = self.counts ** (1.0 / self.temperature)
        self.cum = np.cumsum(w)
        self.row_before = self.cum[self.start] - w[self.start]
        self.row_total = self.cum[self.stop - 1] - self.row_before
        return self

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k, length = self.order - 1, WINDOW + 1
        rows = np.searchsorted(self.contexts, self.ctx[rng.choice(len(self.ctx), n, p=self.counts / self.counts.sum())])
        code = self.contexts[rows]
        out = np.empty((n, length), np.int64)
        for i in range(k):  # the start contexts' characters
            out[:, i] = code // VOCAB ** (k - 1 - i) % VOCAB
        for t in range(k, length):
            rows = np.minimum(np.searchsorted(self.contexts, code), len(self.contexts) - 1)
            lost = self.contexts[rows] != code
            if lost.any():
                rows[lost] = rng.integers(len(self.contexts), size=int(lost.sum()))
            target = self.row_before[rows] + rng.random(n) * self.row_total[rows]
            idx = np.clip(np.searchsorted(self.cum, target, side="right"), self.start[rows], self.stop[rows] - 1)
            out[:, t] = self.next[idx]
            code = (self.contexts[rows] % VOCAB ** (k - 1)) * VOCAB + out[:, t]
        return out, np.zeros(n, np.int64)


class CharGRU(LightningModule):
    """Character language model: embedding 32, one GRU layer of 64, a linear head; logits ``(N, T, VOCAB)``."""

    def __init__(self, embedding: int = 32, hidden: int = 64, lr: float = 5e-3) -> None:
        super().__init__()
        self.embed, self.gru, self.head = nn.Embedding(VOCAB, embedding), nn.GRU(embedding, hidden, batch_first=True), \
            nn.Linear(hidden, VOCAB)
        self.lr = lr

    def forward(self, x):
        return self.head(self.gru(self.embed(x))[0])

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x).reshape(-1, VOCAB), y.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


# -- regression ------------------------------------------------------------------------------------------------
class TableData:
    """One seed's random 50 / 20 / 30% split of a scikit-learn table, inputs and target standardized by training."""

    def __init__(self, name: str, seed: int) -> None:
        import sklearn.datasets

        if name == "diabetes":
            x, y = sklearn.datasets.load_diabetes(return_X_y=True)
        else:  # breast_cancer_texture: ``mean texture`` (column 1) from the other 29 features
            table = sklearn.datasets.load_breast_cancer().data
            x, y = np.delete(table, 1, axis=1), table[:, 1]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(x))
        cuts = np.round(np.cumsum(SPLIT[:2]) * len(x)).astype(int)
        idx = dict(zip(("train", "val", "test"), np.split(order, cuts)))
        t = idx["train"]
        mx, sx, my, sy = x[t].mean(0), x[t].std(0) + 1e-8, y[t].mean(), y[t].std()
        self.split = {k: (((x[v] - mx) / sx).astype(np.float32), ((y[v] - my) / sy).astype(np.float32))
                      for k, v in idx.items()}
        self.tensors = {k: table_dataset(*v) for k, v in self.split.items()}
        self.train = self.split["train"]
        self.inputs = x.shape[1]


def table_dataset(x, y) -> TensorDataset:
    return TensorDataset(torch.as_tensor(np.asarray(x), dtype=torch.float32),
                         torch.as_tensor(np.asarray(y), dtype=torch.float32))


class JointGaussian:
    """A Gaussian over ``[inputs, target]`` (mean and full covariance of the rows it is fitted on), sampled with
    covariance ``temperature ** 2 * Sigma``."""

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = temperature

    def fit(self, x: np.ndarray, y: np.ndarray) -> "JointGaussian":
        z = np.column_stack([x, y]).astype(np.float64)
        self.mean, self.cov = z.mean(0), np.cov(z, rowvar=False) + 1e-6 * np.eye(z.shape[1])
        return self

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        z = rng.multivariate_normal(self.mean, self.temperature ** 2 * self.cov, size=n)
        return z[:, :-1].astype(np.float32), z[:, -1].astype(np.float32)


RIDGE = 1.0


def label_chain(x: np.ndarray, y: np.ndarray, generations: int, seed: int, ridge: float = RIDGE) -> list:
    """Dohmatob, Feng and Kempe (2024): the real inputs kept, the targets regenerated each generation by a ridge
    regression (penalty ``ridge``) fitted on the previous generation's targets, plus fresh Gaussian noise of the
    real fit's residual variance. Returns ``[(x, y_1), ..., (x, y_G)]``."""
    rng = np.random.default_rng(seed + 7)
    a = np.column_stack([x, np.ones(len(x))]).astype(np.float64)
    penalty = ridge * np.diag([1.0] * x.shape[1] + [0.0])

    def fit(targets):
        return np.linalg.solve(a.T @ a + penalty, a.T @ targets)

    sigma = float(np.std(y - a @ fit(y)))
    out, current = [], y.astype(np.float64)
    for _ in range(generations):
        current = a @ fit(current) + rng.normal(0.0, sigma, len(y))
        out.append((x, current.astype(np.float32)))
    return out


class MLPRegressor(LightningModule):
    """MLP inputs-16-1 (ReLU) trained with the mean squared error, Adam 1e-3; predictions ``(N,)``. (The protocol's
    inputs-64-1 at 3e-3 overfitted diabetes: its real-only test MSE rose 0.42 -> 0.75 at seed 102; RESULTS.md,
    section 6, protocol notes.)"""

    def __init__(self, inputs: int, hidden: int = 16, lr: float = 1e-3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.lr = lr

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


# -- the tasks -------------------------------------------------------------------------------------------------
KINDS = {"pydoc": "language_model", "stdlib_docs": "language_model", "diabetes": "regression",
         "breast_cancer_texture": "regression"}
DATASETS = tuple(KINDS)

#: the real-only fits' test-loss standard error the margins are 2.5 of (mean over ``pure_real`` at seeds 100-102,
#: outside the suite; ``python benchmarks/suite_tasks.py --margins``); ``None``: not measured yet
MARGIN_BASIS: dict[str, Optional[float]] = {"pydoc": 0.02286, "stdlib_docs": 0.02279, "diabetes": 0.05638,
                                             "breast_cancer_texture": 0.04610}
MARGIN_FLOOR = 0.02


def margin(name: str) -> float:
    """``max(0.02, 2.5 standard errors of the real-only fit's final test loss)``, to 3 decimals."""
    se = MARGIN_BASIS[name]
    return round(max(MARGIN_FLOOR, 2.5 * se if se is not None else 0.0), 3)


@dataclass
class TaskSpec:
    """A dataset of the suite: its kind, data, model, batch size and samples per epoch, ground-truth margin."""

    name: str
    kind: str
    make: Callable[[int], Any]
    model: Callable[[Any], LightningModule]
    batch_size: int
    samples_per_epoch: int

    @property
    def margin(self) -> float:
        return margin(self.name)

    def real_dm(self, data):
        return SplitsDataModule(data.tensors, self.batch_size)


def task(name: str) -> TaskSpec:
    if KINDS[name] == "language_model":
        return TaskSpec(name, "language_model", functools.partial(TextData, name), lambda d: CharGRU(), 32, 640)
    return TaskSpec(name, "regression", functools.partial(TableData, name), lambda d: MLPRegressor(d.inputs), 64,
                    1920)


@torch.no_grad()
def per_sample_losses(kind: str, model: LightningModule, dataset: TensorDataset) -> torch.Tensor:
    """The test loss of each sample: a window's mean cross-entropy per character, or a squared error."""
    x, y = dataset.tensors
    out = model(x)
    if kind == "language_model":
        return F.cross_entropy(out.reshape(-1, VOCAB), y.reshape(-1), reduction="none").reshape(y.shape).mean(1)
    return (out.reshape(-1) - y) ** 2


# -- the scenarios ---------------------------------------------------------------------------------------------
#: name -> (expected, what the synthetic source is), per kind
SCENARIOS = {
    "language_model": {
        "pure_real": ("healthy", "real text only"),
        "good": ("healthy", "char 5-gram of the real training text, generation 1, temperature 1"),
        "accumulate": ("healthy", "generations 1-10 of a 5-gram accumulate chain; real share falls to 10%"),
        "replace": ("collapse", "generations 10, 20, 30 of a 4-gram replace chain at temperature 0.8"),
        "low_temperature": ("collapse", "the good 5-gram sampled at temperature 0.2"),
    },
    "regression": {
        "pure_real": ("healthy", "real rows only"),
        "good": ("healthy", "joint Gaussian of inputs and target, generation 1, temperature 1"),
        "accumulate": ("healthy", "generations 1-10 of the Gaussian's accumulate chain; real share falls to 10%"),
        "shrink": ("collapse", "generations 10, 20, 30 of the Gaussian's replace chain, 50 a generation, at "
                   "temperature 0.95"),
        "label_chain": ("collapse", "real inputs, targets of generations 30, 60, 90 of a ridge chain"),
    },
}

GOOD_SIZE, PER_GENERATION, ACCUMULATED, GENERATIONS = 1800, 200, 10, (10, 20, 30)
#: the generators' strengths: the protocol's (RESULTS.md, section 6), but for three set on seeds 100-102 before the
#: suite's first run (its protocol notes): ``low_temperature`` 0.5 -> 0.2, ``shrink`` 200 samples a generation at
#: 0.9 -> 50 at 0.95, ``label_chain`` generations 10, 20, 30 -> 30, 60, 90
STRENGTH = {"good_order": 5, "replace_order": 4, "replace_temperature": 0.8, "replace_per_generation": 400,
            "low_temperature": 0.2, "shrink_temperature": 0.95, "shrink_per_generation": 50,
            "shrink_generations": GENERATIONS, "label_generations": (30, 60, 90)}


def _source(kind: str, x, y, generator: str, generation: int = 1, **params) -> SyntheticSource:
    data = window_dataset(x) if kind == "language_model" else table_dataset(x, y)
    return SyntheticSource(data, generator=generator, generation=generation, params=params)


def _generator(kind: str, regime: str) -> Callable[[], Any]:
    s = STRENGTH
    if kind == "language_model":
        if regime == "replace":
            return lambda: CharNGram(s["replace_order"], s["replace_temperature"])
        return lambda: CharNGram(s["good_order"], s["low_temperature"] if regime == "low" else 1.0)
    return lambda: JointGaussian(s["shrink_temperature"] if regime == "replace" else 1.0)


def build_scenario(kind: str, scenario: str, data, seed: int) -> tuple:
    """``(synthetic sources or None, real fraction schedule)`` of ``scenario`` on the seed's ``data``."""
    if scenario == "pure_real":
        return None, 1.0
    rng = np.random.default_rng(seed + 1)
    train = data.train
    if scenario in ("good", "low_temperature"):
        model = _generator(kind, "low" if scenario == "low_temperature" else "good")().fit(*train)
        t = getattr(model, "temperature", 1.0)
        sources = {"gen1": _source(kind, *model.sample(GOOD_SIZE, rng), f"{type(model).__name__} t={t:g}",
                                   temperature=t)}
    elif scenario == "accumulate":
        chain = generation_chain(_generator(kind, "accumulate"), *train, generations=ACCUMULATED,
                                 samples_per_generation=PER_GENERATION, regime="accumulate", seed=seed)
        sources = {f"gen{g}": _source(kind, x, y, "accumulate chain", g, regime="accumulate")
                   for g, (x, y) in enumerate(chain, 1)}
    elif scenario == "label_chain":
        gens = STRENGTH["label_generations"]
        chain = label_chain(*train, max(gens), seed)
        sources = {f"gen{g}": _source(kind, *chain[g - 1], "ridge label chain", g, ridge=RIDGE) for g in gens}
    else:  # replace (language model) or shrink (regression): the replace chain at a temperature below 1
        lm = kind == "language_model"
        per = STRENGTH["replace_per_generation" if lm else "shrink_per_generation"]
        gens = GENERATIONS if lm else STRENGTH["shrink_generations"]
        chain = generation_chain(_generator(kind, "replace"), *train, generations=max(gens),
                                 samples_per_generation=per, regime="replace", seed=seed)
        sources = {f"gen{g}": _source(kind, *chain[g - 1], "replace chain", g, regime="replace") for g in gens}
    return sources, schedule(0.1 if scenario == "accumulate" else 0.0)


def sample_text(source: SyntheticSource, n: int = 2) -> list[str]:
    """The first ``n`` windows of a language-model source, as text (to look at)."""
    x, y = source.data.tensors
    return [decode(list(x[i].tolist()) + [int(y[i, -1])]) for i in range(min(n, len(x)))]

