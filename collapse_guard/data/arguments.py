"""Argument checks of the data module: splits, source names, weights, the seed, and (from
:mod:`collapse_guard._numbers`, re-exported here) fractions and counts; each error names the argument and the fix.

Shared by :class:`~collapse_guard.MixedDataModule`, :class:`~collapse_guard.data.mixing.MixingState`,
:class:`~collapse_guard.RatioMonitor` and the generation loops, so one argument is checked one way everywhere.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Mapping, Optional, Union

from collapse_guard._compat import is_datamodule
from collapse_guard._numbers import check_count, check_fraction, check_real  # noqa: F401 - re-exported


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


#: what a source name must be: it ends metric keys (``collapse/share/<name>``) and the report's rows
SOURCE_NAME_RULE = "a non-empty str without '/' or whitespace (it ends metric keys such as collapse/share/<name>)"


def check_source_name(name: Any, argument: str = "synthetic") -> str:
    """Return ``name`` if it is fit to name a source, else raise naming the rule (:data:`SOURCE_NAME_RULE`).

    Raises:
        TypeError: ``name`` is not a str (e.g. ``3``).
        ValueError: ``name`` is empty or holds a ``/`` or whitespace.

    Example::

        check_source_name("gen1")  # "gen1"
        check_source_name("gen/1")  # ValueError
    """
    if not isinstance(name, str):
        raise TypeError(f"`{argument}`: a source name must be {SOURCE_NAME_RULE}; got {name!r} "
                        f"({type(name).__name__}). Name it with a str, e.g. {{'gen{name}': ...}}.")
    if not name or any(c == "/" or c.isspace() for c in name):
        raise ValueError(f"`{argument}`: a source name must be {SOURCE_NAME_RULE}; got {name!r}. Rename that source "
                         "(e.g. 'gen_1' for 'gen/1' or 'gen 1').")
    return name


def source_names(synthetic: Any) -> Optional[list]:
    """The names ``synthetic`` gives its sources (``"synthetic"`` for one unnamed source), or ``None`` when they
    are known only at set-up (a YAML ``class_path`` entry read as a mapping)."""
    if synthetic is None:
        return []
    if isinstance(synthetic, Mapping):
        if "class_path" in synthetic and set(synthetic) <= {"class_path", "init_args"}:
            return None
        return list(synthetic)
    return ["synthetic"]


def check_synthetic_weights(weights: Any, names: Optional[list]) -> None:
    """Check ``synthetic_weights``: a mapping from source names to finite numbers ``>= 0`` with a positive sum.

    Args:
        weights: the ``synthetic_weights`` given (``None``: none).
        names: the synthetic sources' names (:func:`source_names`; ``None``: not known yet, not checked).

    Raises:
        TypeError: ``weights`` is not a mapping.
        ValueError: a weight that is not a finite number ``>= 0``, all weights zero, or a name no source has.
    """
    if weights is None:
        return
    if not isinstance(weights, Mapping):
        raise TypeError(f"`synthetic_weights` must be a mapping `source name -> weight`, e.g. {{'gen1': 0.7, "
                        f"'gen2': 0.3}}; got {type(weights).__name__}.")
    for name, weight in weights.items():
        value = check_real(weight, f"synthetic_weights[{name!r}]")
        if value < 0:
            raise ValueError(f"`synthetic_weights[{name!r}]` must be >= 0 (a relative share), got {weight!r}.")
    if names is not None:
        unknown = [n for n in weights if n not in names]
        if unknown:
            raise ValueError(f"`synthetic_weights` names unknown sources {unknown}; the synthetic sources are "
                             f"{names}.")
    if weights and not sum(float(w) for w in weights.values()) > 0:
        raise ValueError("`synthetic_weights` are all zero: give at least one source a positive weight.")


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
    synthetic: Any = None,
    synthetic_weights: Any = None,
    seed: Any = 0,
    num_workers: Any = None,
) -> None:
    """Every check of :class:`~collapse_guard.MixedDataModule`'s constructor, in the order it makes them.

    Raises:
        TypeError: ``verify_holdout`` neither a bool nor a callable; a split of an unsupported type; a source name
            that is not a str; ``synthetic_weights`` not a mapping.
        ValueError: no ``real``; a fraction out of range; ``holdout="val"`` without a real DataModule; a count
            that is not a positive integer (``stream_heldout_samples``, ``num_workers``: not ``>= 0``); a ``seed``
            that is not an integer; a source name empty or with ``/`` or whitespace; a synthetic weight that is not
            a finite number ``>= 0``, all weights zero, or a weight for an unknown source.
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
    check_count(num_workers, "num_workers", minimum=0)
    check_seed(seed)
    names = source_names(synthetic)
    for name in names or []:
        check_source_name(name)
    check_synthetic_weights(synthetic_weights, names)


def check_seed(seed: Any) -> int:
    """Return ``seed`` as an int, or raise a ``ValueError`` naming it (a bool, float or str is no seed)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"`seed` must be an integer (the seed of the splits and the sampler), got {seed!r}.")
    return int(seed)
