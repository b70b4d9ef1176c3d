"""The checks of number arguments that every part of the package (the data module, the rules, the guards, the
loops) makes alike: a fraction in ``[0, 1]``, a count, a real number; each raises naming the argument."""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional


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


def check_count(value: Any, argument: str, minimum: int = 1, optional: bool = True, owner: str = "") -> Optional[int]:
    """Return ``value`` (an int ``>= minimum``, or ``None`` when ``optional``) or raise a ``ValueError`` naming it.

    Args:
        value: a count of samples, batches, ... or ``None`` (not given).
        argument: the argument's name, for the message.
        minimum: the smallest count allowed (``1``: a positive integer; ``0``: an integer ``>= 0``).
        optional: ``None`` is allowed (the argument was not given).
        owner: what takes the argument, put before it in the message (e.g. ``"Rule('acc'): "``).

    Raises:
        ValueError: ``value`` is a bool, not an integer (``1.5``, ``"3"``, NaN), below ``minimum``, or ``None`` when
            not ``optional``.

    Example::

        check_count(32, "batch_size")  # 32
        check_count(0, "stream_heldout_samples", minimum=0)  # 0
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{owner}`{argument}` must be {wanted}, got {value!r}.")
    return int(value)


def check_real(value: Any, argument: str, allow_infinite: bool = False, optional: bool = False,
               owner: str = "") -> Optional[float]:
    """Return ``value`` as a float, or raise a ``ValueError`` naming the argument: a real number, not a bool, not NaN
    (nor infinite unless ``allow_infinite``). Ranges are the caller's to check, on the float returned.

    Args:
        value: the number to check.
        argument: the argument's name, for the message.
        allow_infinite: ``inf`` and ``-inf`` are allowed (e.g. a bound that is never crossed).
        optional: ``None`` is allowed (returned as ``None``).
        owner: what takes the argument, put before it in the message (e.g. ``"CollapseGuard: "``).

    Raises:
        ValueError: ``value`` is a bool, a str or any other non-number, NaN, or infinite when not allowed.

    Example::

        check_real(0.5, "inject_fraction")  # 0.5
        check_real(float("nan"), "margin")  # ValueError: `margin` must be a finite real number ..., got nan.
    """
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value)
            or (not allow_infinite and math.isinf(value))):
        wanted = "a real number (not NaN, not a bool)"
        if not allow_infinite:
            wanted = "a finite real number (not NaN, inf or a bool)"
        raise ValueError(f"{owner}`{argument}` must be {wanted}, got {value!r}.")
    return float(value)
