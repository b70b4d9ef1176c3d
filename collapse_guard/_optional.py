"""Imports of the packages that only some features need, with the extra that installs them named on failure."""
from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``import module``, or an ``ImportError`` that names the feature and the extra that installs it.

    Args:
        module: the module to import (``"sklearn.datasets"``).
        extra: the collapse-guard extra that installs its package (``"demo"``).
        feature: what needs it, for the message.

    Raises:
        ImportError: the module is not installed.

    Example::

        load_digits = require("sklearn.datasets", "demo", "the digits demo").load_digits
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = module.split(".")[0]
        raise ImportError(f"{feature} needs `{package}`, which is not installed: pip install "
                          f"'collapse-guard[{extra}]' (or install `{package}` itself).") from err


__all__ = ["require"]
