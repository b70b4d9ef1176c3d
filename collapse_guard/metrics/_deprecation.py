"""Keyword arguments renamed in :mod:`collapse_guard.metrics`: the old names keep working, with a warning.

The metrics call the set compared with held-out real data *synthetic* (the project's word: real fraction,
synthetic source, held-out synthetic); they used to call it ``fake``.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable, TypeVar

_F = TypeVar("_F", bound=Callable)


def renamed_kwargs(**old_to_new: str) -> Callable[[_F], _F]:
    """Decorator: accept each old keyword name ``old`` as ``new``, with a ``DeprecationWarning``.

    Args:
        old_to_new: ``old="new"`` pairs of keyword names.

    Raises:
        TypeError: (from the decorated function) when both the old and the new name are given.

    Example::

        @renamed_kwargs(fake="synthetic")
        def variance_ratio(real, synthetic): ...

        variance_ratio(x, fake=y)  # DeprecationWarning: `fake` is deprecated, use `synthetic`
    """

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got both `{old}` and `{new}`; pass only `{new}`.")
                    warnings.warn(
                        f"{fn.__name__}(): `{old}` is deprecated and will be removed, use `{new}` (same meaning).",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def deprecated_alias(new: str, old: str) -> property:
    """A read-only attribute ``old`` that returns ``self.<new>`` with a ``DeprecationWarning``."""

    def getter(self):
        warnings.warn(
            f"{type(self).__name__}.{old} is deprecated and will be removed, use `.{new}` (same value).",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self, new)

    return property(getter, doc=f"Deprecated alias of ``{new}``.")
