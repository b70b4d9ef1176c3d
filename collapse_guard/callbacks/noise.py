"""The noise model of the rules: how far an indicator moves between checks of healthy training, and the level it
has reached.

Two statistics of statistical process control, for the series of values a rule has judged so far (one per check):

* :func:`check_to_check_sigma`: the moving-range estimate of an individuals chart's standard deviation
  (Shewhart 1931; Montgomery, *Introduction to Statistical Quality Control*, 7th ed. 2013, section 6.4), in its
  robust form, the median moving range over ``0.954`` (for independent normal values the median of
  ``|x_t - x_{t-1}|`` is ``0.6745 * sqrt(2) * sigma = 0.954 sigma``). It measures how far the model itself moves
  from check to check (what the held-out set's standard error, a property of the held-out sample, does not);
* :func:`best_level`: the best running median of three consecutive checks (Tukey's 3-median smoother, Tukey,
  *Exploratory Data Analysis* 1977): the level training has reached, which one lucky check does not raise (the best
  single value of ``n`` noisy checks lies about ``1.5`` of their standard deviations above their mean for
  ``n = 10``; the best median of three about ``0.8``).

:func:`combined_sigma` puts the two sources of noise a fall must exceed together: the sampling error of the
held-out estimate (logged with the value) and the check-to-check movement, as independent errors, in quadrature.
"""
from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

#: ``median(|x_t - x_{t-1}|) / MEDIAN_MOVING_RANGE`` estimates the standard deviation of independent normal values
MEDIAN_MOVING_RANGE = 0.954
#: checks in the running median of :func:`best_level`
LEVEL_WINDOW = 3


def check_to_check_sigma(values: Sequence[float]) -> Optional[float]:
    """The standard deviation of an indicator's check-to-check movement: median moving range over ``0.954``.

    Args:
        values: the finite values of the checks so far, in order (any units).

    Returns:
        ``median(|values[t] - values[t-1]|) / 0.954``, in the values' units, ``>= 0``; ``None`` with fewer than two
        values (no movement seen yet).

    Assumes the movements of healthy checks are alike (a stationary process): a learning curve still rising fast
    inflates it (fewer alarms, later ones); the median keeps one large fall (a collapse) from inflating it.

    Example::

        >>> round(check_to_check_sigma([0.90, 0.92, 0.91, 0.93]), 4)
        0.021
    """
    if len(values) < 2:
        return None
    ranges = [abs(b - a) for a, b in zip(values[:-1], values[1:])]
    return statistics.median(ranges) / MEDIAN_MOVING_RANGE


def best_level(values: Sequence[float], mode: str = "max") -> Optional[float]:
    """The best running median of :data:`LEVEL_WINDOW` consecutive values: the level an indicator has reached.

    Args:
        values: the finite values of the checks so far, in order.
        mode: ``"max"`` (higher is better) or ``"min"``.

    Returns:
        The best (highest for ``"max"``) median of ``values[t-2:t+1]`` over ``t`` (fewer values at the start: the
        median of those there are); ``None`` for no values.

    Example::

        >>> best_level([0.5, 0.9, 0.7, 0.8])   # the single 0.9 is not the level
        0.8
    """
    if not values:
        return None
    medians = (statistics.median(values[max(0, t - LEVEL_WINDOW + 1):t + 1]) for t in range(len(values)))
    return max(medians) if mode == "max" else min(medians)


def combined_sigma(stderr: Optional[float], movement: Optional[float]) -> Optional[float]:
    """The noise unit of a ``noise="combined"`` rule: ``sqrt(stderr**2 + movement**2)``.

    Args:
        stderr: the sampling standard error logged with the value (``None`` or NaN: not known).
        movement: :func:`check_to_check_sigma` of the checks so far (``None``: not known yet).

    Returns:
        The root sum of squares of the parts known, in the values' units; ``None`` when neither is known.

    Example::

        >>> combined_sigma(0.03, 0.04)
        0.05
    """
    parts = [abs(x) for x in (stderr, movement) if x is not None and math.isfinite(x)]
    if not parts:
        return None
    return round(math.sqrt(sum(x * x for x in parts)), 15)
