"""The default rules of the tasks other than classification (``default_rules(task=...)``): a language model, a
regressor, and any model measured by its own loss alone.

Every one watches the held-out real loss against its own level and noise; the regressor's add the spread of its
predictions. A NaN or infinite loss stops training at once (``Rule.non_finite="stop"``, the default).
"""
from __future__ import annotations

from collapse_guard.callbacks.rules import Rule


def loss_rise_rule(min_change: float = 0.0) -> Rule:
    """The held-out real loss (per token for a language model, per sample otherwise) more than 4 noise units above
    its level, at one check.

    The unit is ``sqrt(se**2 + m**2)`` (``noise="combined"``): ``se`` the standard error of the mean held-out loss
    (by sequence for a language model: :class:`~collapse_guard.metrics.language_model.LanguageModelIndicators`),
    the noise of the held-out *sample*; ``m`` the moving-range estimate of how far the loss moved between the checks
    so far, the noise of *training* (Shewhart's individuals chart, Montgomery 2013, section 6.4). The level is the
    lowest median of three consecutive checks (``baseline="level"``), armed after 3 checks. A model trained on a
    generator that lost the tails of the real distribution predicts real data worse and worse: its held-out real
    loss (perplexity) rises (Shumailov et al., Nature 2024, Fig. 2; Dohmatob, Feng & Kempe 2024).

    One check is enough (``patience=1``): the check-to-check noise reads every check judged, so the jump of a
    collapse widens the unit it is judged in at the next check; the unit, not patience, keeps healthy checks quiet.

    **When it fails.** The rule cannot tell collapse from over-fitting: a fit on too little real data whose
    held-out loss climbs from over-fitting fires it too (which ``EarlyStopping`` would also act on); a slow rise that
    stays inside the check-to-check noise is caught only once its total passes the bound.

    Args:
        min_change: the smallest rise of the loss that fires, in the loss's units, ``>= 0``.

    Example::

        >>> loss_rise_rule().monitor
        'collapse/heldout_real/loss'
    """
    return Rule("collapse/heldout_real/loss", mode="min", sigmas=4.0, noise="combined", baseline="level",
                baseline_checks=3, min_change=min_change, patience=1, name="heldout_real_loss")


def language_model_rules(min_change: float = 0.0) -> list[Rule]:
    """The rules ``CollapseGuard()`` uses for a language model (``HeldOutRealCheck`` task ``"language_model"``):
    :func:`loss_rise_rule` on the held-out real token loss (a rise of the loss is a rise of the perplexity
    ``exp(loss)``).

    Example::

        >>> [r.name for r in language_model_rules()]
        ['heldout_real_loss']
    """
    return [loss_rise_rule(min_change)]


def regression_rules(min_change: float = 0.0) -> list[Rule]:
    """The rules ``CollapseGuard()`` uses for a regressor (``HeldOutRealCheck`` task ``"regression"``):

    * :func:`loss_rise_rule` on the held-out real mean squared error;
    * ``pred_var_ratio``: the variance of the predictions over that of the real targets more than 3 check-to-check
      units (``noise="checks"``) and at least 0.1 below its level, two checks running: the regressor regresses to the
      mean, the mark of a generator whose variance shrank generation after generation (Shumailov et al., Nature 2024,
      the Gaussian case; Dohmatob, Feng & Kempe 2024).

    Example::

        >>> [r.name for r in regression_rules()]
        ['heldout_real_loss', 'pred_var_ratio']
    """
    return [
        loss_rise_rule(min_change),
        Rule("collapse/heldout_real/pred_var_ratio", mode="max", sigmas=3.0, noise="checks", min_change=0.1,
             baseline="level", baseline_checks=3, patience=2, name="pred_var_ratio"),
    ]


def loss_rules(min_change: float = 0.0) -> list[Rule]:
    """The rules ``CollapseGuard()`` uses for a model measured by its own loss alone (task ``"loss"``):
    :func:`loss_rise_rule`.

    Example::

        >>> [r.monitor for r in loss_rules()]
        ['collapse/heldout_real/loss']
    """
    return [loss_rise_rule(min_change)]


#: task -> its default rules
TASK_RULES = {"language_model": language_model_rules, "regression": regression_rules, "loss": loss_rules}
