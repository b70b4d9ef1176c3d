"""Whether the keys a guard's rules read will be logged: checked at set-up against what the Trainer's collapse_guard
callbacks declare and what the user declares the module logs (``CollapseGuard(module_metrics=...)``), and explained
at a check that found a key missing.

A ``collapse/`` key is known before training: every :class:`~collapse_guard.callbacks._base.CollapseMetricsProducer`
declares the prefixes it logs, and most the exact keys (``metric_keys``). A key the ``LightningModule`` logs with
``self.log`` is not known before it is logged; Lightning's ``EarlyStopping`` checks its ``monitor`` at the first
validation end for that reason. ``module_metrics`` moves that check before the first training step: a rule on a key
outside ``collapse/`` that is not declared there is refused at set-up, and a declared key that the module did not log
by the first check is refused then, naming the declaration.
"""
from __future__ import annotations

import difflib
from typing import Any, Optional, Sequence

from collapse_guard._compat import LightningModule, Trainer
from collapse_guard.callbacks._base import CollapseMetricsProducer, producer_of


def check_module_metrics(module_metrics: Any) -> Optional[tuple[str, ...]]:
    """``module_metrics`` as a tuple of keys (``None`` stays ``None``: nothing declared).

    Args:
        module_metrics: ``None``, or a sequence of non-empty strings, the keys the module logs with ``self.log``.

    Raises:
        TypeError: a single string, something not iterable, or an entry that is not a non-empty string.

    Example::

        check_module_metrics(["val_loss", "train_loss"])   # ('val_loss', 'train_loss')
    """
    if module_metrics is None:
        return None
    if isinstance(module_metrics, (str, bytes)) or not hasattr(module_metrics, "__iter__"):
        raise TypeError(f"`module_metrics` must be a list of the metric keys the module logs (e.g. ['val_loss']), "
                        f"got {module_metrics!r}.")
    keys = tuple(module_metrics)
    bad = [k for k in keys if not isinstance(k, str) or not k]
    if bad:
        raise TypeError(f"`module_metrics` must hold non-empty strings (the keys given to `self.log`), got {bad!r}.")
    return keys


def _did_you_mean(key: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(candidates), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_monitors(trainer: Trainer, rules: Sequence[Any], module_metrics: Optional[Sequence[str]], owner: str) -> None:
    """Refuse, before training, every rule whose key will not be logged.

    A ``collapse/`` key must be logged by one of the Trainer's producers (``HeldOutRealCheck``, ``RatioMonitor``,
    ...) and be among the keys it says it logs. With ``module_metrics`` given, any other key must be declared there.
    Without it, such a key is checked at the first check (:func:`missing_metrics_message`).

    Args:
        trainer: the Trainer, at set-up.
        rules: the guard's rules (their ``monitor`` and ``stderr_key``).
        module_metrics: the keys the module declares it logs, or ``None``.
        owner: the guard's name, for the messages.

    Raises:
        ValueError: naming the rule, the key, who would log it, and the fix (a close match among the known keys).

    Example::

        check_monitors(trainer, guard.rules, ["val_loss"], "CollapseGuard")   # in CollapseGuard.setup
    """
    producers = [cb for cb in trainer.callbacks if isinstance(cb, CollapseMetricsProducer)]
    for rule in rules:
        for key, what, arg in ((rule.monitor, "monitors", "monitor"), (rule.stderr_key, "reads", "stderr")):
            if key is None:
                continue
            producer = next((p for p in producers if p.logs(key)), None)
            if producer is not None:
                keys = producer.metric_keys(trainer)
                if keys is not None and key not in keys:
                    raise ValueError(
                        f"{owner} rule {rule.label!r} {what} {key!r}, which {type(producer).__name__} never "
                        f"logs; it logs {sorted(keys)}.{_did_you_mean(key, sorted(keys))} Fix the rule's `{arg}` "
                        "(or pass strict=False)."
                    )
                continue
            maker = producer_of(key)
            if maker is not None:
                raise ValueError(
                    f"{owner} rule {rule.label!r} {what} {key!r}, which {maker} logs, but no {maker} is "
                    f"among the Trainer's callbacks: add {maker}() to `callbacks` (or pass strict=False)."
                )
            if module_metrics is not None and key not in module_metrics:
                raise ValueError(
                    f"{owner} rule {rule.label!r} {what} {key!r}, which no collapse_guard callback logs and which is "
                    f"not among the keys the module declares (`module_metrics={list(module_metrics)}`)."
                    f"{_did_you_mean(key, module_metrics)} Fix the rule's `{arg}`, or add the key to "
                    "`module_metrics` if the module logs it with `self.log`."
                )


def missing_metrics_message(owner: str, missing: list[str], trainer: Trainer,
                            module_metrics: Optional[Sequence[str]] = None) -> str:
    """Why ``owner`` (a decision callback) found no value of the ``missing`` keys at this check, and what to do.

    A key the module logs in its own ``on_train_epoch_end`` is the usual cause for a key outside ``collapse/``:
    Lightning calls the callbacks' ``on_train_epoch_end`` before the module's (only ``EarlyStopping`` and
    checkpoint callbacks run after it), so such a key is logged only after the decision.

    Args:
        owner: the guard's name.
        missing: the keys not logged at this check.
        trainer: the Trainer (its ``callback_metrics``, epoch and module).
        module_metrics: the keys the module declared, or ``None``.

    Returns:
        The message of the ``RuntimeError`` the guard raises.

    Example::

        raise RuntimeError(missing_metrics_message("CollapseGuard", ["val_los"], trainer))
    """
    metrics, epoch, module = trainer.callback_metrics, trainer.current_epoch, trainer.lightning_module
    logged = sorted(k for k in metrics if k.startswith("collapse/")) or sorted(metrics)
    message = (f"{owner} monitors {missing}, which no callback or module logged by epoch {epoch}. Logged now: "
               f"{logged}.{_did_you_mean(missing[0], sorted(metrics))} Add HeldOutRealCheck()/RatioMonitor() to the "
               "Trainer's callbacks, or fix the rule's `monitor` (or pass strict=False to skip rules whose metric is "
               "missing).")
    outside = [k for k in missing if not k.startswith("collapse/")]
    declared = [k for k in outside if module_metrics is not None and k in module_metrics]
    if declared:
        message += f" {declared} are declared in `module_metrics` but {type(module).__name__} did not log them."
    elif outside and module_metrics is None:
        message += (f" Declare the keys the module logs with {owner}(module_metrics=[...]) to have such a rule "
                    "checked at set-up, before the first training step.")
    hook = getattr(type(module), "on_train_epoch_end", None)
    if outside and hook is not LightningModule.on_train_epoch_end:
        message += (f" {type(module).__name__} defines its own `on_train_epoch_end`: a metric logged there comes "
                    f"too late, since Lightning calls the callbacks' `on_train_epoch_end` ({owner}'s too) before the "
                    "module's. Log it in `training_step` with `self.log(key, value, on_epoch=True)`, or in "
                    "`on_train_epoch_start` of the next epoch.")
    return message


__all__ = ["check_module_metrics", "check_monitors", "missing_metrics_message"]
