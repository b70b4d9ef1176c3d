"""What every logged ``collapse/...`` indicator measures and which way it goes when a model collapses.

The one definition in the package (the README's "Logged metrics" table says the same in prose; a test holds the
two together): :data:`INDICATORS`, read through :func:`describe` and :func:`bad_direction` by the report's plots
(the bad direction in each panel's title) and its HTML page (the legend table).

A held-out synthetic key (``collapse/heldout_synthetic/acc``) is described from its held-out real twin and has no bad
direction (it is context: the model may fit its synthetic data as well as it likes); a generated-sample key
(``collapse/generated/recall``) from the feature indicator of the same name.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

#: the ways an indicator can go bad, and the arrow the plots draw for each
BAD_DIRECTIONS = {"falls": "↓", "rises": "↑", "moves": "↕"}


class Indicator(NamedTuple):
    """One logged key, or a family of keys (``key`` ending in ``/*``: ``collapse/share/*``, one per source)."""

    key: str
    measures: str
    #: ``"falls"``, ``"rises"``, ``"moves"`` (either way is bad), or ``None``: context, not a verdict
    bad: Optional[str] = None


_REAL, _FEAT = "collapse/heldout_real/", "collapse/features/"


def _per_source(prefix: str, rows: Iterable[tuple[str, str, Optional[str]]]) -> tuple[Indicator, ...]:
    """A family per ``(name, measures, bad)`` row, keyed ``prefix + name + "/*"`` (one key per synthetic source)."""
    return tuple(Indicator(f"{prefix}{name}/*", measures, bad) for name, measures, bad in rows)


INDICATORS: tuple[Indicator, ...] = (
    # RatioMonitor
    Indicator("collapse/real_fraction", "real share (real + injected reserve) of this epoch's training samples"),
    Indicator("collapse/real_fraction_cumulative", "real share of all training samples so far"),
    Indicator("collapse/real_fraction_target", "target real fraction of this epoch: the schedule, raised by "
              "injections"),
    Indicator("collapse/share/*", "this source's share of the epoch's training samples"),
    # HeldOutRealCheck, every task
    Indicator(_REAL + "loss", "mean loss on held-out real data (cross-entropy, per-token loss, MSE or loss_fn's)",
              "rises"),
    Indicator(_REAL + "loss_stderr", "standard error of the held-out real loss"),
    # language models
    Indicator(_REAL + "perplexity", "exp(per-token held-out real loss)", "rises"),
    Indicator(_REAL + "token_acc", "top-1 next-token accuracy on held-out real text", "falls"),
    Indicator(_REAL + "token_acc_stderr", "standard error of the token accuracy, by sequence"),
    # regression
    Indicator(_REAL + "mse", "mean squared error on held-out real data", "rises"),
    Indicator(_REAL + "mae", "mean absolute error on held-out real data", "rises"),
    Indicator(_REAL + "r2", "coefficient of determination on held-out real data", "falls"),
    Indicator(_REAL + "pred_var_ratio", "variance of the predictions over that of the real targets (regression to "
              "the mean)", "falls"),
    Indicator(_REAL + "residual_tail_mass", "share of samples mispredicted by more than 2 target standard deviations",
              "rises"),
    # classification
    Indicator(_REAL + "acc", "accuracy on held-out real data", "falls"),
    Indicator(_REAL + "acc_stderr", "binomial standard error of the held-out accuracy (the noise a sigmas rule "
              "measures a fall in)"),
    Indicator(_REAL + "acc_change", "change of held-out real accuracy from the reference check, paired on the same "
              "held-out samples", "falls"),
    Indicator(_REAL + "acc_change_stderr", "paired standard error of the accuracy change"),
    Indicator(_REAL + "entropy", "mean predictive entropy, nats (over- or under-confidence)", "moves"),
    Indicator(_REAL + "eff_classes", "effective number of predicted classes, exp(H(predicted label marginal))",
              "falls"),
    Indicator(_REAL + "eff_classes_ratio", "effective number of predicted classes over that of the real labels "
              "(1: as diverse as the real labels)", "falls"),
    Indicator(_REAL + "label_tv", "total variation between the predicted and the real label marginals", "rises"),
    Indicator(_REAL + "label_kl", "KL(real || predicted) label marginals, nats", "rises"),
    Indicator(_REAL + "worst_class_recall", "lowest per-class recall: the tail that goes first", "falls"),
    Indicator(_REAL + "worst_class_recall_stderr", "binomial standard error of the worst class's recall"),
    Indicator(_REAL + "class_recall/*", "recall of one class on held-out real data", "falls"),
    Indicator(_REAL + "class_recall_stderr/*", "binomial standard error of that class's recall"),
    Indicator(_REAL + "class_recall_change/*", "change of that class's recall from the reference check, paired",
              "falls"),
    Indicator(_REAL + "class_recall_change_stderr/*", "paired standard error of that class's recall change"),
    Indicator(_REAL + "calibration_error", "expected calibration error (15 equal-width bins, L1)", "rises"),
    # held-out synthetic minus held-out real
    Indicator("collapse/gap/acc", "held-out synthetic minus held-out real accuracy", "rises"),
    Indicator("collapse/gap/loss", "held-out synthetic minus held-out real loss"),
    Indicator("collapse/gap/token_acc", "held-out synthetic minus held-out real token accuracy"),
    Indicator("collapse/gap/r2", "held-out synthetic minus held-out real R²"),
    # features of training synthetic samples against held-out real ones (k-NN manifold, distances, diversity)
    Indicator(_FEAT + "precision", "share of synthetic features inside the real manifold (k-NN)"),
    Indicator(_FEAT + "recall", "share of real features inside the synthetic manifold (k-NN)", "falls"),
    Indicator(_FEAT + "density", "how many real neighbourhoods hold each synthetic feature (1: real-like)", "rises"),
    Indicator(_FEAT + "coverage", "share of real features with a synthetic one in their neighbourhood", "falls"),
    Indicator(_FEAT + "frechet", "Fréchet distance between Gaussian fits of synthetic and real features", "rises"),
    Indicator(_FEAT + "mmd", "unbiased MMD² between synthetic and real features (RBF kernel)", "rises"),
    Indicator(_FEAT + "variance_ratio", "total variance of synthetic features over that of real ones", "falls"),
    Indicator(_FEAT + "tail_mass_ratio", "share of synthetic features in the real 2.5% tails over the real share",
              "falls"),
    Indicator(_FEAT + "vendi", "Vendi score (effective number of distinct samples) of synthetic features", "falls"),
    Indicator(_FEAT + "vendi_real", "Vendi score of held-out real features", "falls"),
    Indicator(_FEAT + "effective_rank_real", "effective rank of held-out real features", "falls"),
    # samples of a generative model (sample_fn=), language model
    Indicator("collapse/generated/distinct_1", "distinct unigrams of the model's samples", "falls"),
    Indicator("collapse/generated/distinct_2", "distinct bigrams of the model's samples", "falls"),
    Indicator("collapse/generated/unigram_entropy", "token entropy of the model's samples, nats", "falls"),
    Indicator("collapse/generated/unigram_entropy_real", "token entropy of the held-out real text, nats", "falls"),
    Indicator("collapse/generated/vocab_coverage", "share of the real token types found in the samples", "falls"),
    # SourceAudit: each synthetic source (and the real-vs-real baseline) before training
    *_per_source("collapse/audit/", (
        ("missing_classes", "classes of the real data the source lacks (audit)", "rises"),
        ("class_tv", "total variation between the source's and the real class marginals (audit)", "rises"),
        ("precision", "k-NN precision of the source's inputs against real ones (audit)", "falls"),
        ("recall", "k-NN recall of real inputs by the source's (audit)", "falls"),
        ("density", "k-NN density of the source's inputs among real ones (audit)", "moves"),
        ("coverage", "share of real inputs with a source input nearby (audit)", "falls"),
        ("coverage_vs_best", "the source's coverage over the best synthetic source's (audit; 1: the best; a "
         "collapsed or offset source covers far less than a good one beside it)", "falls"),
        ("heldout_copies", "the source's exact copies of held-out real samples (audit)", "rises"),
    )),
    # SourceCheck: each synthetic source at every check
    *_per_source("collapse/source/", (
        ("loss", "mean loss of the source's held-out samples", "moves"),
        ("acc", "accuracy on the source's held-out samples", None),
        ("acc_gap", "accuracy on the source's held-out samples minus held-out real accuracy", "rises"),
        ("acc_vs_best", "accuracy on the source's held-out samples minus the best source's (0: the best; far "
         "below: labels that disagree with the inputs)", "falls"),
        ("grad_cosine", "cosine between the loss gradients of the source's batches and of held-out real data "
         "(negative: its steps raise the real loss)", "falls"),
        ("acc_vs_best_stderr", "standard error of acc_vs_best: the two accuracies' binomial standard errors in "
         "quadrature", None),
        ("grad_cosine_stderr", "standard error of grad_cosine over the source's batches", None),
    )),
    # CollapseGuard
    Indicator("collapse/guard/state", "the guard's last action: 0 none, 1 warned, 2 injected, 3 stopped, "
              "4 quarantined (synthetic sources dropped from the next epoch)"),
    Indicator("collapse/guard/events", "number of guard events so far"),
)

_BY_KEY = {i.key: i for i in INDICATORS}
_TWINS = (("collapse/heldout_synthetic/", _REAL, "on held-out synthetic samples", False),
          ("collapse/generated/", _FEAT, "for the model's generated samples against held-out real inputs", True))


def _family(key: str) -> Optional[Indicator]:
    head, sep, last = key.rpartition("/")
    return _BY_KEY.get(head + "/*") if sep and last and "*" not in last else None


def describe(key: str) -> Optional[Indicator]:
    """The :class:`Indicator` describing a logged ``key`` (its family's for a member, the twin's for a held-out
    synthetic or a generated-sample key), or ``None`` for a key the package does not log.

    Example::

        describe("collapse/heldout_real/class_recall/3").bad   # 'falls'
        describe("collapse/heldout_synthetic/acc").bad         # None: context
    """
    found = _BY_KEY.get(key) or _family(key)
    if found is not None:
        return found
    for prefix, twin, words, keeps_direction in _TWINS:
        if key.startswith(prefix):
            base = describe(twin + key[len(prefix):])
            if base is not None:
                measures = f"as {base.key[len('collapse/'):]} ({base.measures}), {words}"
                return Indicator(prefix + base.key[len(twin):], measures,
                                 base.bad if keeps_direction else None)
    return None


def bad_direction(key: str) -> Optional[str]:
    """Which way ``key`` goes when collapsing: ``"falls"``, ``"rises"``, ``"moves"``, or ``None`` (context, or a
    key not described).

    Args:
        key: a logged key, a family member or a twin (as :func:`describe` takes).

    Returns:
        The direction, or ``None``.

    Example::

        bad_direction("collapse/heldout_real/loss")   # 'rises'
    """
    found = describe(key)
    return found.bad if found is not None else None


def legend(keys: Iterable[str]) -> list[tuple[Indicator, list[str]]]:
    """The descriptions of ``keys``, one per :class:`Indicator` (a family once, with its members), in the order of
    their first key; keys the package does not log are left out.

    Example::

        [(i.key, i.bad, members) for i, members in legend(record["indicators"]["keys"])]
    """
    out: dict[str, tuple[Indicator, list[str]]] = {}
    for key in keys:
        found = describe(key)
        if found is not None:
            out.setdefault(found.key, (found, []))[1].append(key)
    return list(out.values())
