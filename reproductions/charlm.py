"""A tiny character-level language model on real English text, for self-consuming loops of text.

The real text is the help-topic corpus that ships with every CPython (``pydoc_data.topics.topics``: about 465,000
characters of English documentation and code examples). :class:`CharGRU` is a one-layer GRU over characters
(embedding 32, 64 hidden units) that samples with temperature 1; :func:`charlm_metrics` gives the held-out real
perplexity and the diversity of the generated text (distinct-n, unigram entropy, type-token ratio, vocabulary
coverage; Li et al. 2016, Guo et al. 2023, Shumailov et al. 2024).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from collapse_guard._compat import LightningModule
from reproductions._epoch_loss import EpochLoss

BOS = 0  #: id of the begin-of-sequence token every sequence starts from


def load_topics_text() -> str:
    """The real English text of ``pydoc_data.topics.topics`` (CPython's help topics), topics in sorted key order.

    The corpus ships with Python, so nothing is downloaded; its exact content depends on the Python version.
    """
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


class CharVocab:
    """Characters <-> ids; id 0 is the begin-of-sequence token :data:`BOS`.

    Args:
        text: the text whose characters make the vocabulary (sorted by code point).

    Example::

        >>> v = CharVocab("hello")
        >>> v.decode(v.encode("hole")), len(v)
        ('hole', 5)
    """

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.index = {c: i + 1 for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> Tensor:
        """Ids of ``text`` (int64), without a BOS token.

        Raises:
            KeyError: for a character outside the vocabulary.
        """
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        """Text of a 1-D id sequence (BOS ids are dropped)."""
        return "".join(self.chars[i - 1] for i in torch.as_tensor(ids).tolist() if i > 0)


def text_split(
    seq_len: int = 64, n_train: int = 300, n_heldout: int = 1000, seed: int = 0, text: Optional[str] = None
) -> Tuple[TensorDataset, TensorDataset, CharVocab]:
    """Non-overlapping ``seq_len``-character chunks of the real text, split at random into training and held-out.

    Args:
        seq_len: characters per sequence.
        n_train: real training sequences (generation 0).
        n_heldout: held-out real sequences (never trained on).
        seed: seed of the split.
        text: the corpus; default :func:`load_topics_text`.

    Returns:
        ``(train, heldout, vocab)``: ``TensorDataset`` s of int64 ids ``(n, seq_len)`` and the vocabulary.

    Raises:
        ValueError: if the text has fewer than ``n_train + n_heldout`` chunks.

    Example::

        >>> train, heldout, vocab = text_split(64, 300, 1000)
        >>> tuple(train.tensors[0].shape), len(heldout)
        ((300, 64), 1000)
    """
    text = load_topics_text() if text is None else text
    vocab = CharVocab(text)
    ids = vocab.encode(text)
    n_chunks = len(ids) // seq_len
    if n_train + n_heldout > n_chunks:
        raise ValueError(f"the text has {n_chunks} chunks of {seq_len} characters; asked for {n_train + n_heldout}.")
    chunks = ids[: n_chunks * seq_len].view(n_chunks, seq_len)
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(n_chunks))
    return (
        TensorDataset(chunks[perm[:n_train]].clone()),
        TensorDataset(chunks[perm[n_train : n_train + n_heldout]].clone()),
        vocab,
    )


class CharGRU(LightningModule):
    r"""A one-layer character GRU language model that samples with a temperature.

    Every sequence is read after a :data:`BOS` token, so the model also learns how sequences start and can
    generate sequences of the training format from nothing: ``sample`` draws ``seq_len`` characters by ancestral
    sampling at ``temperature`` (1: the model's own distribution). The loss is the mean next-character
    cross-entropy (nats); gradients are clipped to norm 1.

    Args:
        vocab_size: number of ids (characters + BOS).
        seq_len: characters per generated sequence.
        embed: embedding width.
        hidden: GRU hidden units.
        lr: Adam learning rate.
        temperature: sampling temperature, ``> 0``.

    Raises:
        ValueError: for a non-positive temperature.

    Example::

        >>> lm = CharGRU(vocab_size=10, seq_len=8)
        >>> lm.sample(3, torch.Generator().manual_seed(0)).tensors[0].shape
        torch.Size([3, 8])

    Recursive training of language models on their own text: Shumailov et al., "AI models collapse when trained
    on recursively generated data", Nature 631 (2024); Guo et al., "The curious decline of linguistic diversity:
    training language models on synthetic text" (2023).
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int = 64,
        embed: int = 32,
        hidden: int = 64,
        lr: float = 1e-2,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.save_hyperparameters()
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.lr = lr
        self.temperature = temperature
        self.embedding = nn.Embedding(vocab_size, embed)
        self.rnn = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)
        self.epoch_loss = EpochLoss()

    def forward(self, ids: Tensor, state: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Next-id logits ``(B, L, V)`` after each position of ``ids`` ``(B, L)``, and the final GRU state."""
        out, state = self.rnn(self.embedding(ids), state)
        return self.head(out), state

    def token_nll(self, ids: Tensor) -> Tensor:
        """Next-character negative log-likelihoods (nats) of every character of ``ids`` ``(B, L)``, after BOS."""
        ids = ids.to(self.device)
        inputs = torch.cat([torch.full_like(ids[:, :1], BOS), ids[:, :-1]], dim=1)
        logits, _ = self(inputs)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), ids.reshape(-1), reduction="none")

    def training_step(self, batch, batch_idx):
        loss = self.token_nll(batch[0]).mean()
        self.epoch_loss.add(loss, len(batch[0]))
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_loss.log(self, "train_loss")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")

    @torch.no_grad()
    def perplexity(self, ids: Tensor, batch_size: int = 500) -> float:
        """``exp`` of the mean next-character cross-entropy of ``ids`` ``(n, L)``."""
        total, count = 0.0, 0
        for i in range(0, len(ids), batch_size):
            nll = self.token_nll(ids[i : i + batch_size])
            total += float(nll.sum())
            count += nll.numel()
        return math.exp(total / count)

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> TensorDataset:
        """``n`` generated sequences of ``seq_len`` ids (ancestral sampling from BOS at ``temperature``).

        Args:
            n: number of sequences.
            generator: CPU ``torch.Generator`` of the draws.

        Returns:
            ``TensorDataset(ids)`` with ``ids`` int64 ``(n, seq_len)``: the format of :func:`text_split`'s data.
        """
        x = torch.full((n, 1), BOS, dtype=torch.long, device=self.device)
        state, out = None, []
        for _ in range(self.seq_len):
            logits, state = self(x, state)
            probs = F.softmax(logits[:, -1].float().cpu() / self.temperature, dim=-1)
            probs[:, BOS] = 0.0  # BOS only starts a sequence
            nxt = torch.multinomial(probs, 1, generator=generator)
            out.append(nxt)
            x = nxt.to(self.device)
        return TensorDataset(torch.cat(out, dim=1))


def words_of(ids: Tensor, vocab: CharVocab) -> List[str]:
    """The generated (or real) sequences ``(n, L)`` as strings, one per sequence, for word-level indicators."""
    return [vocab.decode(row) for row in ids]


def charlm_metrics(vocab: CharVocab, min_count: int = 2) -> Dict[str, Callable]:
    """Indicators of the character LM loop, for :class:`~collapse_guard.loop.LightningSelfConsumingLoop`.

    * ``heldout_ppl``: perplexity (per character) of the generation's model on held-out real text;
    * ``char_entropy``: unigram entropy (nats) of the characters of the generated text;
    * ``distinct_4``: distinct character 4-grams over all character 4-grams of the generated text;
    * ``word_ttr`` / ``word_distinct_2``: type-token ratio / distinct-2 of the whitespace-separated words;
    * ``word_entropy``: unigram entropy (nats) of those words;
    * ``vocab_coverage``: share of the held-out real word types seen at least ``min_count`` times that occur in
      the generated text (the tail a collapsing model loses).

    All text indicators read the generated corpus of the generation (``samples_per_generation`` sequences); they
    depend on its size, so compare generations of equal size.

    Args:
        vocab: the vocabulary of :func:`text_split`.
        min_count: real word types rarer than this do not count for ``vocab_coverage``.

    Returns:
        ``name -> f(Generation)``.
    """
    from collapse_guard.metrics.functional import distinct_n, unigram_entropy, vocabulary_coverage

    def ids_of(ds) -> Tensor:
        return ds.tensors[0] if isinstance(ds, TensorDataset) else torch.stack([ds[i][0] for i in range(len(ds))])

    def _ppl(gen) -> float:
        return gen.model.perplexity(ids_of(gen.heldout))

    def _text(gen):
        ids = ids_of(gen.samples)
        words = words_of(ids, vocab)
        real_words = words_of(ids_of(gen.heldout), vocab)
        return {
            "char_entropy": unigram_entropy(ids),
            "distinct_4": distinct_n(ids, 4),
            "word_ttr": distinct_n(words, 1),
            "word_distinct_2": distinct_n(words, 2),
            "word_entropy": unigram_entropy(words),
            "vocab_coverage": vocabulary_coverage(real_words, words, min_count=min_count),
        }

    return {"heldout_ppl": _ppl, "text": _text}


#: the diversity indicators of generated text the guard watches: table header -> (metric, margin argument)
TEXT_INDICATORS = {
    "vocab cov": "text/vocab_coverage",
    "distinct-4": "text/distinct_4",
    "word TTR": "text/word_ttr",
    "char H": "text/char_entropy",
    "word H": "text/word_entropy",
}


def charlm_rules(ppl_margin: float = 0.10, diversity_margin: float = 0.10, entropy_margin: float = 0.05) -> list:
    """Rules of the character LM loop, all relative to generation 0 (``baseline="first"``), patience 1.

    * ``heldout_ppl`` more than ``ppl_margin`` above generation 0 (``mode="min"``);
    * vocabulary coverage, distinct-4 and word type-token ratio more than ``diversity_margin`` below generation 0;
    * character and word unigram entropy more than ``entropy_margin`` below generation 0 (5% of about 3.2 nats
      is 0.16 nats: a 15% fall of the effective number of characters ``exp(H)``).

    Returns:
        A list of :class:`~collapse_guard.Rule` named ``"ppl"`` and as the keys of :data:`TEXT_INDICATORS`.
    """
    from collapse_guard.callbacks.rules import Rule

    rules = [Rule("heldout_ppl", mode="min", relative=ppl_margin, baseline="first", name="ppl")]
    for label, key in TEXT_INDICATORS.items():
        margin = entropy_margin if key.endswith("entropy") else diversity_margin
        rules.append(Rule(key, mode="max", relative=margin, baseline="first", name=label))
    return rules


def run_charlm_experiment(
    generations: int = 8,
    seed: int = 0,
    n_train: int = 300,
    samples_per_generation: Optional[int] = None,
    max_epochs: int = 60,
    seq_len: int = 64,
    guarded: bool = False,
    ppl_margin: float = 0.10,
    diversity_margin: float = 0.10,
    entropy_margin: float = 0.05,
    num_threads: Optional[int] = 1,
    progress=None,
) -> dict:
    """A character GRU trained generation after generation on its own text (``replace``), on real English text.

    Generation 0 trains on ``n_train`` real sequences of ``seq_len`` characters; every later generation on the
    ``samples_per_generation`` sequences (default ``n_train``: the dataset size is fixed) its predecessor generated
    at temperature 1, with the same number of optimisation steps (``samples_per_epoch = n_train``). The rules of
    :func:`charlm_rules` run as a warn-only :class:`~collapse_guard.loop.GenerationGuard` on that loop, so its
    events say when each indicator first leaves its margin; with ``guarded=True`` the same loop runs again with
    the rules injecting real data (refit, real share +0.25 up to 0.75).

    Args:
        generations: generations after generation 0.
        seed: run seed.
        n_train: real training sequences.
        samples_per_generation: sequences each generation generates.
        max_epochs: epochs per fit.
        seq_len: characters per sequence.
        guarded: also run the guarded loop.
        ppl_margin: see :func:`charlm_rules`.
        diversity_margin: see :func:`charlm_rules`.
        entropy_margin: see :func:`charlm_rules`.
        num_threads: torch threads during the runs.
        progress: ``f(str)`` called after every run, or ``None``.

    Returns:
        ``{"replace": NeuralLoopResult, "guarded": NeuralLoopResult | None, "real": {metric: value}, "vocab",
        "first_fired": {rule: generation | None}, "ppl_plus_margin": generation | None, "lead": {rule: int}}``;
        ``lead[rule]`` is how many generations before held-out perplexity passed ``+ppl_margin`` the rule fired
        (negative: after).
    """
    import warnings as _warnings

    from collapse_guard.loop.guard import GenerationGuard
    from collapse_guard.loop.neural import Generation, LightningSelfConsumingLoop

    real, heldout, vocab = text_split(seq_len, n_train, 1000, seed=0)
    metrics = charlm_metrics(vocab)
    out: dict = {"vocab": vocab, "guarded": None}

    def loop_with(guard):
        return LightningSelfConsumingLoop(
            lambda g: CharGRU(len(vocab), seq_len=seq_len),
            "replace",
            samples_per_generation=samples_per_generation or n_train,
            samples_per_epoch=n_train,
            metrics=metrics,
            guard=guard,
            max_epochs=max_epochs,
            batch_size=32,
            num_threads=num_threads,
            generator_name="CharGRU(emb 32, GRU 64)",
            generator_params={"temperature": 1.0, "seq_len": seq_len, "max_epochs": max_epochs},
        )

    watch = GenerationGuard(charlm_rules(ppl_margin, diversity_margin, entropy_margin), action="warn")
    with _warnings.catch_warnings():
        _warnings.filterwarnings("ignore", message="GenerationGuard generation")
        out["replace"] = loop_with(watch).run(real, generations, heldout=heldout, seed=seed)
    if progress is not None:
        progress(f"replace: {sum(r.seconds for r in out['replace'].records):.1f} s")
    if guarded:
        guard = GenerationGuard(
            charlm_rules(ppl_margin, diversity_margin, entropy_margin),
            action="inject",
            refit=True,
            real_fraction_step=0.25,
            max_real_fraction=0.75,
        )
        out["guarded"] = loop_with(guard).run(real, generations, heldout=heldout, seed=seed)
        if progress is not None:
            progress(f"guarded: {sum(r.seconds for r in out['guarded'].records):.1f} s")
    # the real text's own indicators (a real corpus of the generated corpora's size, from the held-out-free pool)
    n_ref = samples_per_generation or n_train
    ref = TensorDataset(real.tensors[0][:n_ref]) if n_ref <= n_train else real
    context = Generation(0, None, ref, None, heldout, real)
    out["real"] = {f"text/{k}": float(v) for k, v in metrics["text"](context).items()}
    first = {}
    for event in out["replace"].events:  # one event per generation, naming every rule that fired then
        for rule in event.rules:
            first.setdefault(rule, event.generation)
    names = ["ppl"] + list(TEXT_INDICATORS)
    out["first_fired"] = {n: first.get(n) for n in names}
    ppl_gen = out["first_fired"]["ppl"]
    out["ppl_plus_margin"] = ppl_gen
    out["lead"] = {
        n: (ppl_gen - g if ppl_gen is not None and g is not None else None)
        for n, g in out["first_fired"].items()
        if n != "ppl"
    }
    return out
