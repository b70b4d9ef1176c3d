"""The Trainer a ``MixedDataModule`` is attached to must be of the DataModule's Lightning namespace."""
from __future__ import annotations

from typing import Any, Optional

from collapse_guard._compat import NAMESPACES


def namespace_of(cls: type) -> Optional[str]:
    """The Lightning namespace (``"pytorch_lightning"`` or ``"lightning.pytorch"``) a class's Lightning bases come
    from, ``None`` for a class of neither.

    Example::

        >>> import pytorch_lightning as pl
        >>> namespace_of(pl.Trainer)
        'pytorch_lightning'
    """
    for klass in cls.__mro__:
        module = klass.__module__
        for name in NAMESPACES:
            if module == name or module.startswith(name + "."):
                return name
    return None


class TrainerNamespaceMixin:
    """A DataModule attribute ``trainer`` that refuses a Trainer of the other Lightning namespace at once, naming the
    fix (Lightning itself fails later, with ``ValueError: Expected a parent``).

    Raises:
        TypeError: when a Trainer of one namespace is attached to a DataModule of the other.
    """

    @property
    def trainer(self) -> Any:
        return self.__dict__.get("_attached_trainer")

    @trainer.setter
    def trainer(self, trainer: Any) -> None:
        if trainer is not None:
            mine, theirs = namespace_of(type(self)), namespace_of(type(trainer))
            if mine and theirs and mine != theirs:
                fix = ("from collapse_guard.lightning import MixedDataModule" if theirs == "lightning.pytorch"
                       else "from collapse_guard import MixedDataModule")
                raise TypeError(
                    f"{type(self).__name__} is a `{mine}` LightningDataModule, but the Trainer is a `{theirs}` one: "
                    f"Lightning's two namespaces do not mix. With `{theirs}` use `{fix}` (and the callbacks of the "
                    "same module).")
        self.__dict__["_attached_trainer"] = trainer
