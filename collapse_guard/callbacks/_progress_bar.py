"""A word in the Trainer's progress bar (``guard=ok``), which ``self.log`` cannot show: it takes numbers only.

Lightning's progress bars (``TQDMProgressBar``, ``RichProgressBar``, and any subclass of ``ProgressBar``) show what
their ``get_metrics(trainer, pl_module)`` returns, and both print a string as it is. :func:`show_word` wraps that
method on the Trainer's own progress-bar instance (not its class: other Trainers and the user's defaults are left
alone) so that it adds the words shown; :func:`hide_words` puts the method back. A Trainer without a progress bar
(``enable_progress_bar=False``) shows nothing.
"""
from __future__ import annotations

from typing import Any

_WORDS = "_collapse_guard_words"
#: a ``get_metrics`` set on the bar instance itself before :func:`show_word` wrapped it (put back by :func:`hide_words`)
_OWN = "_collapse_guard_own_get_metrics"


def show_word(trainer: Any, name: str, word: str) -> None:
    """Show ``name=word`` in ``trainer``'s progress bar from now on (replacing an earlier word of that name).

    Args:
        trainer: the Trainer.
        name: the progress-bar name (short: a bar cuts long names).
        word: what to show.

    Example::

        show_word(trainer, "guard", "injected")   # the bar reads ``... guard=injected``
    """
    bar = getattr(trainer, "progress_bar_callback", None)
    if bar is None:
        return
    words = bar.__dict__.get(_WORDS)
    if words is None:
        words = bar.__dict__[_WORDS] = {}
        if "get_metrics" in bar.__dict__:  # the user's override on this instance: hide_words puts it back
            bar.__dict__[_OWN] = bar.__dict__["get_metrics"]
        inner = bar.get_metrics  # the bound method of the bar's class (or a user's override)

        def get_metrics(trainer: Any, pl_module: Any) -> dict:
            return {**inner(trainer, pl_module), **bar.__dict__.get(_WORDS, {})}

        bar.get_metrics = get_metrics
    words[name] = word


def hide_words(trainer: Any) -> None:
    """Remove the words :func:`show_word` added and give the progress bar its own ``get_metrics`` back.

    Example::

        hide_words(trainer)   # at the end of the fit
    """
    bar = getattr(trainer, "progress_bar_callback", None)
    if bar is not None and bar.__dict__.pop(_WORDS, None) is not None:
        bar.__dict__.pop("get_metrics", None)
        if _OWN in bar.__dict__:
            bar.get_metrics = bar.__dict__.pop(_OWN)


__all__ = ["hide_words", "show_word"]
