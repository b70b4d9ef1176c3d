"""``CollapseGuard``'s action ``"quarantine"``: drop the synthetic sources the attribution names, keep the others.

The policy (:func:`~collapse_guard.callbacks.policy.decide`) chooses the sources; this module reads which sources a
quarantine may still drop, applies it to the ``MixedDataModule`` and words what it did. It takes the place of
``"inject"`` when the attribution is confident: the harmful source goes, the good synthetic data stays (injecting
real data would dilute both alike); a collapse that persists after it injects, then stops.
"""
from __future__ import annotations

from typing import Any, Sequence

from collapse_guard._compat import Trainer, rank_zero_warn
from collapse_guard.data.datamodule import MixedDataModuleMixin


def active_sources(dm: Any) -> tuple[str, ...]:
    """The synthetic sources of ``dm`` that the next epoch still draws from (weight above 0), in source order.

    Example::

        active_sources(dm)   # ('gen10', 'gen20'); ('gen10',) after dm.quarantine('gen20')
    """
    mixer = getattr(dm, "mixer", None)
    if mixer is None:
        return ()
    return tuple(name for name, share in mixer.synthetic_shares().items() if share > 0)


def quarantine(dm: Any, sources: Sequence[str], epoch: int, reason: str) -> str:
    """Drop ``sources`` from the next epoch of ``dm`` (``MixedDataModule.quarantine(sources, weight=0)``); returns
    what was done, in words: the sources and the synthetic shares before and after.

    Args:
        dm: the fit's ``MixedDataModule``.
        sources: names of its synthetic sources, at least one.
        epoch: the epoch of the check (for the words).
        reason: why (the fired rules' reasons), kept in the datamodule's quarantine record.

    Example::

        quarantine(dm, ["noisy"], 3, "accuracy vs the best source noisy: -0.52 < -0.15")
        # "quarantined 'noisy' after epoch 3: synthetic shares good 0.50 -> 1.00, noisy 0.50 -> 0.00"
    """
    record = dm.quarantine(list(sources), weight=0.0, reason=reason)
    before, after = record["shares_before"], record["shares_after"]
    shares = ", ".join(f"{name} {before[name]:.2f} -> {after.get(name, 0.0):.2f}" for name in before)
    named = ", ".join(repr(name) for name in sources)
    return f"quarantined {named} after epoch {epoch}: synthetic shares {shares}"


def warn_without_attribution(trainer: Trainer) -> None:
    """Warn once when the fit mixes two or more synthetic sources and no callback can name a harmful one: the
    default guard then can only inject real data (diluting good and bad sources alike) or stop."""
    dm = getattr(trainer, "datamodule", None)
    count = len(active_sources(dm)) if isinstance(dm, MixedDataModuleMixin) else 0
    if count < 2:
        return
    rank_zero_warn(
        f"CollapseGuard: the fit mixes {count} synthetic sources, but no callback attributes harm "
        "to one of them, so the guard can only inject real data or stop. Add SourceAudit() and SourceCheck() to the "
        "Trainer's callbacks: the default guard then quarantines a source they name (missing classes, low coverage, "
        "accuracy far below the other sources) and keeps the others."
    )


__all__ = ["active_sources", "quarantine", "warn_without_attribution"]
