"""What ``HeldOutRealCheck(sample_fn=...)`` measures on a generative model's own samples at every check: lexical
diversity of generated text against the held-out real text (a language model), or the feature-space indicators of
generated vectors and images against the held-out real inputs (any other model)."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from collapse_guard.callbacks.features import FeatureIndicators
from collapse_guard.metrics.functional.language_model import IGNORE_INDEX
from collapse_guard.metrics.text import DistinctN, UnigramEntropy, VocabularyCoverage


class TextSampleIndicators:
    """Lexical diversity of a language model's samples, with the held-out real text as the reference.

    Wraps torchmetrics ``Metric`` objects (exact across DDP ranks):

    * ``distinct_1``, ``distinct_2``: distinct token unigrams and bigrams over all of them in the samples, ``[0, 1]``
      (Li et al. 2016);
    * ``unigram_entropy`` and ``unigram_entropy_real``: entropy of the token distribution (nats) of the samples and
      of the held-out real text; a model trained on its own text loses the rare tokens first, so the first falls
      below the second (Shumailov et al., Nature 2024);
    * ``vocab_coverage``: share of the held-out real token types that occur in the samples, ``[0, 1]``.

    Compare samples of a fixed size from check to check (``feature_samples`` of them): these indicators depend on
    the size of the corpus.

    Args:
        ignore_index: token id not counted (padding, ``-100`` labels).
        device: where the metric states live.
    """

    #: the keys of :meth:`compute`'s dict
    KEYS = ("distinct_1", "distinct_2", "unigram_entropy", "unigram_entropy_real", "vocab_coverage")

    def __init__(self, ignore_index: Optional[int] = IGNORE_INDEX, device: Optional[torch.device] = None) -> None:
        self.synthetic_only = {"distinct_1": DistinctN(1, ignore_index=ignore_index),
                               "distinct_2": DistinctN(2, ignore_index=ignore_index),
                               "unigram_entropy": UnigramEntropy(ignore_index=ignore_index)}
        self.real_only = {"unigram_entropy_real": UnigramEntropy(ignore_index=ignore_index)}
        self.coverage = VocabularyCoverage(ignore_index=ignore_index)
        for metric in (*self.synthetic_only.values(), *self.real_only.values(), self.coverage):
            metric.to(device)

    def update(self, tokens: Any, real: bool) -> None:
        """Add a batch of held-out real (``real=True``) or generated token ids (``(B, L)`` or a list of 1-D tensors)."""
        for metric in (self.real_only if real else self.synthetic_only).values():
            metric.update(tokens)
        self.coverage.update(tokens, real=real)

    def compute(self) -> dict[str, Tensor]:
        out = {name: m.compute() for name, m in {**self.synthetic_only, **self.real_only}.items()}
        out["vocab_coverage"] = self.coverage.compute()
        return out


def generated_keys(task: str) -> Sequence[str]:
    """The keys (below ``collapse/generated/``) a check with a ``sample_fn`` logs for a model of ``task``."""
    return TextSampleIndicators.KEYS if task == "language_model" else FeatureIndicators.KEYS


def generated_indicators(task: str, samples: Any, real_inputs: Sequence[Any], k: int,
                         sample_feature_fn: Callable[[Any], Tensor]) -> Any:
    """The indicators of ``samples`` (what ``sample_fn`` returned) against the held-out real inputs of this rank.

    A language model's samples are token ids like its inputs (``(N, T)`` or a list of 1-D tensors): text indicators
    (:class:`TextSampleIndicators`); any other model's are mapped by ``sample_feature_fn`` to ``(N, D)`` features:
    :class:`~collapse_guard.callbacks.features.FeatureIndicators`.
    """
    if task == "language_model":
        device = samples.device if isinstance(samples, Tensor) else None
        gen = TextSampleIndicators(device=device)
        for x in real_inputs:
            gen.update(x.to(device) if device is not None else x, real=True)
        gen.update(samples, real=False)
        return gen
    features = sample_feature_fn(samples)
    gen = FeatureIndicators(features.shape[-1], k=k, device=features.device)
    for x in real_inputs:
        gen.update(sample_feature_fn(x).to(features.device), real=True)
    gen.update(features, real=False)
    return gen
