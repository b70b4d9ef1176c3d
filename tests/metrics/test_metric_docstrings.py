"""The docstring examples of the indicator functions run and print what they say."""
from __future__ import annotations

import doctest

import pytest
import torch

import collapse_guard.metrics.functional as F
from collapse_guard.callbacks import task_rules, tasks
from collapse_guard.metrics.functional import (baseline, classification, distance, diversity, knn, language_model,
                                               paired, per_sample, regression, text)


@pytest.mark.parametrize("module", [knn, distance, diversity, text, baseline, language_model, per_sample, regression,
                                    classification, paired, tasks, task_rules], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    torch.manual_seed(0)
    globs = dict(vars(F))
    globs["torch"] = torch
    result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_public_functions_are_documented():
    for name in F.__all__:
        obj = getattr(F, name)
        doc = obj.__doc__ or ""
        assert doc.strip(), name
        if name in {"prdc", "frechet_distance", "maximum_mean_discrepancy", "vendi_score", "effective_rank",
                    "distinct_n", "real_baseline", "tail_mass", "variance_ratio", "knn_radii"}:
            for section in ("Args:", "Returns:", "Raises:", "Example"):
                assert section in doc, (name, section)
