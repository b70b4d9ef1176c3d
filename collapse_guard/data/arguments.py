"""Argument checks of the data module: fractions, splits, counts; each error names the argument and the fix.

Shared by :class:`~collapse_guard.MixedDataModule`, :class:`~collapse_guard.data.mixing.MixingState`,
:class:`~collapse_guard.RatioMonitor` and the generation loops, so one argument is checked one way everywhere.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional, Union

from collapse_guard._compat import is_datamodule


def check_fraction(value: object, argument: str, epoch: Optional[int] = None) -> float:
    """Return ``value`` as a float in ``[0, 1]`` or raise a ``ValueError`` naming the argument (and epoch).

    Args:
        value: the share of real samples per batch to check.
        argument: the argument's name, for the message.
        epoch: the epoch a schedule returned ``value`` for, for the message (``None``: not a schedule).

    Raises:
        ValueError: ``value`` is not a real number in ``[0, 1]`` (a bool is not one).

    Example::

        check_fraction(0.3, "real_fraction")  # 0.3
    """
    where = f" at epoch {epoch}" if epoch is not None else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"`{argument}`{where} must be a real number in [0, 1] (the share of real samples per batch), "
            f"got {value!r}."
        )
    return float(value)


def check_count(value: Any, argument: str, minimum: int = 1, optional: bool = True) -> Optional[int]:
    """Return ``value`` (an int ``>= minimum``, or ``None`` when ``optional``) or raise a ``ValueError`` naming it.

    Args:
        value: a count of samples, batches, ... or ``None`` (not given).
        argument: the argument's name, for the message.
        minimum: the smallest count allowed (``1``: a positive integer; ``0``: an integer ``>= 0``).
        optional: ``None`` is allowed (the argument was not given).

    Raises:
        ValueError: ``value`` is a bool, not an int, below ``minimum``, or ``None`` when not ``optional``.

    Example::

        check_count(32, "batch_size")  # 32
        check_count(0, "stream_heldout_samples", minimum=0)  # 0
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{argument}` must be {wanted}, got {value!r}.")
    return value


def check_split(value: Any, argument: str, allow_val: bool = False) -> None:
    """Check a held-out or reserve split: ``"val"`` (when allowed), a fraction in ``[0, 1)`` or a map-style Dataset.

    Raises:
        TypeError: a str, bytes or bool other than ``"val"``, or an object that is neither a number nor map-style.
        ValueError: a fraction outside ``[0, 1)``.
    """
    if allow_val and value == "val":
        return
    if isinstance(value, (bool, str, bytes)):  # a str has __getitem__ and __len__ but is no Dataset
        accepted = '"val", ' if allow_val else ""
        raise TypeError(f"`{argument}` must be {accepted}a fraction in [0, 1) or a Dataset, got {value!r}.")
    if isinstance(value, numbers.Real):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"`{argument}` as a fraction must be in [0, 1), got {value!r}.")
        return
    if not (hasattr(value, "__getitem__") and hasattr(value, "__len__")):
        accepted = '"val", ' if allow_val else ""
        raise TypeError(f"`{argument}` must be {accepted}a fraction in [0, 1) or a map-style Dataset, got {value!r}.")


def check_mixing_arguments(
    real: Any,
    real_fraction: Union[float, Callable[[int], float]],
    holdout: Any,
    reserve: Any,
    synthetic_holdout: Any,
    batch_size: Any,
    samples_per_epoch: Any,
    verify_holdout: Any,
    stream_heldout_samples: Any,
) -> None:
    """Every check of :class:`~collapse_guard.MixedDataModule`'s constructor, in the order it makes them.

    Raises:
        TypeError: ``verify_holdout`` neither a bool nor a callable; a split of an unsupported type.
        ValueError: no ``real``; a fraction out of range; ``holdout="val"`` without a real DataModule; a count
            that is not a positive integer (``stream_heldout_samples``: not ``>= 0``).
    """
    if not (isinstance(verify_holdout, bool) or callable(verify_holdout)):
        raise TypeError(
            f"`verify_holdout` must be True, False or a callable `sample -> part to hash`, got {verify_holdout!r}."
        )
    if real is None:
        raise ValueError("`real` is required: the real data to guard training with.")
    if not callable(real_fraction):
        check_fraction(real_fraction, "real_fraction")
    check_split(holdout, "holdout", allow_val=True)
    if holdout == "val" and not is_datamodule(real):
        raise ValueError(
            '`holdout="val"` takes the real LightningDataModule\'s validation set, but `real` is a '
            f"{type(real).__name__}. Pass a fraction (e.g. holdout=0.2) or a held-out Dataset."
        )
    check_split(reserve, "reserve")
    if not (isinstance(synthetic_holdout, numbers.Real) and 0.0 <= synthetic_holdout < 1.0):
        raise ValueError(f"`synthetic_holdout` must be a fraction in [0, 1), got {synthetic_holdout!r}.")
    check_count(batch_size, "batch_size")
    check_count(samples_per_epoch, "samples_per_epoch")
    check_count(stream_heldout_samples, "stream_heldout_samples", minimum=0, optional=False)
