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

:func:`detrended_sigma` measures the check-to-check movement from second differences, which a linear trend (a
learning curve still rising) does not inflate. :func:`accumulate` sums small falls over checks, in noise units,
as a CUSUM (Page 1954) or an EWMA (Roberts 1959) does: a fall too small to pass a bound at any one check, but
repeated check after check, passes the accumulated one.
"""
from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

#: ``median(|x_t - x_{t-1}|) / MEDIAN_MOVING_RANGE`` estimates the standard deviation of independent normal values
MEDIAN_MOVING_RANGE = 0.954
#: checks in the running median of :func:`best_level`
LEVEL_WINDOW = 3
#: ``median(|x_t - 2 x_{t-1} + x_{t-2}|) / MEDIAN_SECOND_DIFFERENCE`` estimates the standard deviation of independent
#: normal values around a linear trend (``Δ²x`` has variance ``6 σ²``; the median of ``|N(0, 1)|`` is ``0.6745``)
MEDIAN_SECOND_DIFFERENCE = 0.6745 * math.sqrt(6.0)
#: how a rule may accumulate its standardized falls over checks (``Rule.accumulate``)
ACCUMULATIONS = ("cusum", "ewma")


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


def detrended_sigma(values: Sequence[float]) -> Optional[float]:
    """The standard deviation of an indicator's check-to-check movement around its trend: the median absolute
    second difference over ``0.6745 * sqrt(6) = 1.652``.

    For ``x_t = a + b t + e_t`` with independent ``e_t ~ N(0, σ²)``, ``x_t - 2 x_{t-1} + x_{t-2} = e_t - 2 e_{t-1} +
    e_{t-2}`` has no trend left and variance ``6 σ²`` (von Neumann's successive differences taken twice; the
    median makes it robust as :func:`check_to_check_sigma` is). Where the moving range counts a learning curve's
    steady rise as noise, this does not.

    Args:
        values: the finite values of the checks so far, in order.

    Returns:
        ``median(|Δ²x|) / 1.652``, ``>= 0``; ``None`` with fewer than three values.

    Assumes the trend is close to linear over three checks and the noise independent from check to check: a curve
    that bends sharply (a learning-rate drop) inflates it at the bend; successive checks that share most of their
    error (a model that barely moves, read on the same held-out set) make it small, so a rule on it alone is
    sensitive (combine it with the sampling error: ``Rule(noise="detrended")`` does).

    Example::

        >>> detrended_sigma([0.5, 0.6, 0.7, 0.8]) < 1e-12   # a straight line: no noise around it
        True
        >>> round(detrended_sigma([0.90, 0.92, 0.91, 0.93]), 4)
        0.0182
    """
    if len(values) < 3:
        return None
    seconds = [abs(c - 2 * b + a) for a, b, c in zip(values[:-2], values[1:-1], values[2:])]
    return statistics.median(seconds) / MEDIAN_SECOND_DIFFERENCE


def accumulate(kind: str, statistic: float, fall: float, parameter: float) -> float:
    """One step of an accumulation of standardized falls: the statistic after this check.

    Args:
        kind: ``"cusum"`` or ``"ewma"``.
        statistic: the statistic after the previous check (0 at the start).
        fall: this check's fall below the baseline in noise units, ``(baseline - x) / unit`` for an indicator that
            falls when collapsing (negative: above the baseline).
        parameter: the CUSUM's allowance ``k`` (the reference value, in noise units), or the EWMA's weight ``λ`` in
            ``(0, 1]``.

    Returns:
        ``"cusum"``: ``max(0, statistic + fall - k)``, Page's one-sided cumulative sum (Page, "Continuous inspection
        schemes", *Biometrika* 41, 1954; Montgomery, *Introduction to Statistical Quality Control*, 7th ed. 2013,
        section 9.1): the falls beyond ``k`` units add up, a rise takes them back. ``"ewma"``: ``λ fall + (1 - λ)
        statistic``, Roberts' exponentially weighted moving average (Roberts, "Control chart tests based on
        geometric moving averages", *Technometrics* 1, 1959; Montgomery 2013, section 9.2).

    Assumes the falls of healthy checks are independent with mean 0 and standard deviation 1 in the unit: with a
    unit too small (sampling error only, a model that moves more than that between checks) or healthy checks that
    sit below the baseline on average (a best-so-far baseline: the best of noisy checks sits high), the statistic
    drifts up on healthy training and fires late in a long fit; a larger ``k`` (CUSUM) or limit (EWMA) absorbs it.

    Example::

        >>> accumulate("cusum", 1.0, 1.5, 0.5)
        2.0
        >>> accumulate("ewma", 1.0, 2.0, 0.5)
        1.5
    """
    if kind == "cusum":
        return max(0.0, statistic + fall - parameter)
    if kind == "ewma":
        return parameter * fall + (1.0 - parameter) * statistic
    raise ValueError(f"`kind` must be one of {ACCUMULATIONS}, got {kind!r}.")


def accumulation_units(kind: str, statistic: float, limit: float, parameter: float) -> float:
    """How many noise units below the baseline this check's value must lie for the accumulated statistic to pass
    its limit: the ``sigmas`` of the bound in force (``Rule.accumulate``).

    Args:
        kind: ``"cusum"`` (violated when ``S_t > h``: ``h + k - S_{t-1}`` units) or ``"ewma"`` (violated when ``Z_t >
            L sqrt(λ / (2 - λ))``, the EWMA chart's asymptotic limit: ``(L sqrt(λ / (2 - λ)) - (1 - λ) Z_{t-1}) /
            λ`` units).
        statistic: the statistic after the previous check.
        limit: the rule's ``sigmas``: the CUSUM's decision interval ``h``, or the EWMA's ``L``.
        parameter: ``k`` or ``λ``, as for :func:`accumulate`.

    Example::

        >>> accumulation_units("cusum", 3.0, 4.0, 1.0)   # S = 3 already: a fall of more than 2 units passes h = 4
        2.0
    """
    if kind == "cusum":
        return limit + parameter - statistic
    if kind == "ewma":
        return (ewma_limit(limit, parameter) - (1.0 - parameter) * statistic) / parameter
    raise ValueError(f"`kind` must be one of {ACCUMULATIONS}, got {kind!r}.")


def ewma_limit(sigmas: float, weight: float) -> float:
    """The EWMA chart's asymptotic limit in units of one check's noise: ``L sqrt(λ / (2 - λ))`` (the standard
    deviation of the average of independent unit-variance values, as ``t`` grows; Montgomery 2013, eq. 9.25).

    Example::

        >>> round(ewma_limit(3.0, 0.2), 4)
        1.0
    """
    return sigmas * math.sqrt(weight / (2.0 - weight))
