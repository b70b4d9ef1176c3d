"""The default rules of the tasks other than classification (``default_rules(task=...)``): a language model, a
regressor, and any model measured by its own loss alone.

Each watches the held-out real loss; a NaN or infinite loss stops training at once (``Rule.non_finite="stop"``, the
default). **How they were chosen** (``benchmarks/RESULTS.md``, section 6, protocol written before any run): on the
development part of the task suite (``benchmarks/suite_tasks.py``: a character GRU on CPython's help texts; an MLP
regressor on scikit-learn's diabetes data; seeds 0-2; healthy, accumulating, degenerate and self-consuming
generators) the most sensitive rule with no false alarm and no firing in a real-only fit was kept
(``benchmarks/choose_task_defaults.py``), then reported once on an untouched part (the docstrings of Python's
standard library, breast-cancer texture, and seeds 3-5).
"""
from __future__ import annotations

from collapse_guard.callbacks.rules import Rule

#: the smallest rise of a language model's held-out loss the default rule fires on, nats per token
LANGUAGE_MODEL_MIN_CHANGE = 0.05


def language_model_rules(min_change: float = 0.0) -> list[Rule]:
    """The rule ``CollapseGuard()`` uses for a language model (``HeldOutRealCheck`` task ``"language_model"``).

    ``heldout_real_loss``: the held-out real loss per token (nats) more than 2 of its standard errors (by sequence:
    :class:`~collapse_guard.metrics.language_model.LanguageModelIndicators`) **and** more than 0.05 nats above its
    best check so far, at one check; armed after 3 checks. A rise of the loss is a rise of the perplexity
    ``exp(loss)`` by at least 5%: a model trained on a generator that lost the tails of the real text predicts real
    text worse (Shumailov et al., Nature 2024, Fig. 2).

    **How well it holds** (section 6 of ``benchmarks/RESULTS.md``): development 6/6 collapsed fits caught, 0/9
    healthy fits alarmed; untouched 18/18 caught, 0/27 alarmed, median delay +0 checks, no firing in a real-only fit.

    **When it fails.** It cannot tell collapse from over-fitting: a fit whose held-out loss climbs from over-fitting
    fires it too (as ``EarlyStopping`` would act). A slow rise is caught once its total passes 0.05 nats and 2
    standard errors; a held-out set of a few sequences has a wide standard error.

    Args:
        min_change: the smallest rise that fires, nats per token; below 0.05 it stays 0.05.

    Example::

        >>> language_model_rules()[0].min_change
        0.05
    """
    return [Rule("collapse/heldout_real/loss", mode="min", sigmas=2.0, noise="stderr", baseline="best",
                 baseline_checks=3, min_change=max(LANGUAGE_MODEL_MIN_CHANGE, min_change), patience=1,
                 name="heldout_real_loss")]


def regression_rules(min_change: float = 0.0) -> list[Rule]:
    """The rule ``CollapseGuard()`` uses for a regressor (``HeldOutRealCheck`` task ``"regression"``).

    ``heldout_real_loss``: the held-out real mean squared error more than 6 check-to-check units above its level, at
    one check; armed after 3 checks. The unit is the moving-range estimate of how far the MSE moved between the
    checks so far (``noise="checks"``, Shewhart's individuals chart, Montgomery 2013, section 6.4); the level the
    lowest median of three consecutive checks. A regressor trained on data whose labels came from a chain of fitted
    models errs more on real data generation after generation (Dohmatob, Feng & Kempe 2024).

    The variance of the predictions over that of the real targets (``collapse/heldout_real/pred_var_ratio``,
    regression to the mean) is logged but no default rule reads it: on the development part no setting of a rule
    on it caught a collapse the loss rule missed without a false alarm. Add one for a generator whose variance you
    expect to shrink: ``Rule("collapse/heldout_real/pred_var_ratio", mode="max", sigmas=3, noise="checks",
    min_change=0.1, baseline="level", baseline_checks=3, patience=2)``.

    **How well it holds** (section 6 of ``benchmarks/RESULTS.md``): development 3/3 caught, 0/12 alarmed; untouched
    4/6 caught, 1/39 alarmed (2.6%), median delay +1.5: the goals of 95% caught, 2% false alarms and +1 check are
    not met, and the development part held 3 collapsed fits only.

    **When it fails.** A fit whose MSE stalls above real-only instead of rising is not caught; a healthy fit whose
    MSE moves little between checks has a small unit, so a late rise of it fires.

    Args:
        min_change: the smallest rise of the MSE that fires, in squared target units.

    Example::

        >>> [r.name for r in regression_rules()]
        ['heldout_real_loss']
    """
    return [Rule("collapse/heldout_real/loss", mode="min", sigmas=6.0, noise="checks", baseline="level",
                 baseline_checks=3, min_change=min_change, patience=1, name="heldout_real_loss")]


def loss_rules(min_change: float = 0.0) -> list[Rule]:
    """The rule ``CollapseGuard()`` uses for a model measured by its own loss alone (task ``"loss"``): the
    regressor's (:func:`regression_rules`), whose unit (the loss's own check-to-check movement) does not depend on
    what the loss measures. Not benchmarked on other losses.

    Example::

        >>> [r.monitor for r in loss_rules()]
        ['collapse/heldout_real/loss']
    """
    return regression_rules(min_change)


#: task -> its default rules
TASK_RULES = {"language_model": language_model_rules, "regression": regression_rules, "loss": loss_rules}
