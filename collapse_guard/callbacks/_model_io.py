"""How ``HeldOutRealCheck`` reads a batch and the model: ``(inputs, target)`` out of a batch (``batch_fn``), logits out
of the model (``forward_fn``), and the checks that name either one when what they give cannot be read."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from collapse_guard._compat import LightningModule

INPUT_KEYS = ("input", "inputs", "x", "pixel_values", "input_ids", "image", "images", "features")
TARGET_KEYS = ("label", "labels", "y", "target", "targets")



def default_batch_fn(batch: Any) -> tuple[Any, Tensor]:
    """Split a batch into ``(inputs, target)``: ``(x, y, ...)`` tuples or dicts with usual key names.

    A dict with ``input_ids`` and no target (a causal language model's batch, Hugging Face style) gives
    ``(input_ids, labels)`` with the labels the inputs themselves, ``-100`` where ``attention_mask`` is 0.

    Raises:
        ValueError: for a batch of another structure; pass ``batch_fn`` to :class:`HeldOutRealCheck` then.
    """
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, dict):
        x = next((batch[k] for k in INPUT_KEYS if k in batch), None)
        y = next((batch[k] for k in TARGET_KEYS if k in batch), None)
        if x is not None and y is not None:
            return x, y
        ids = batch.get("input_ids")
        if isinstance(ids, Tensor) and y is None:
            mask = batch.get("attention_mask")
            return ids, ids if not isinstance(mask, Tensor) else ids.masked_fill(mask == 0, -100)
    raise ValueError(
        f"HeldOutRealCheck cannot tell inputs from targets in a batch of type {type(batch).__name__}"
        + (f" with keys {sorted(batch)}" if isinstance(batch, dict) else "")
        + ". Pass `batch_fn=lambda batch: (inputs, target)`."
    )


def default_forward_fn(pl_module: LightningModule, inputs: Any) -> Tensor:
    """``pl_module(inputs)``, taking ``.logits`` or ``["logits"]`` from model outputs that carry them."""
    out = pl_module(inputs)
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    return getattr(out, "logits", out)


def _describe(obj: Any) -> str:
    """A short description of a batch part for messages: a tensor's shape and dtype, a dict's keys, a type."""
    if isinstance(obj, Tensor):
        return f"Tensor of shape {tuple(obj.shape)}, {str(obj.dtype).replace('torch.', '')}"
    if isinstance(obj, dict):
        return f"dict with keys {sorted(map(str, obj))}"
    return type(obj).__name__


def _restated(err: Exception, message: str) -> Exception:
    """``message`` (which quotes ``err``) as an exception of ``err``'s built-in type, else a ``RuntimeError``, so
    code that catches the original type still catches it; the caller raises it ``from err``."""
    cls = type(err) if type(err).__module__ == "builtins" else RuntimeError
    try:
        return cls(message)
    except Exception:  # noqa: BLE001 - a built-in type whose constructor takes more than a message
        return RuntimeError(message)


def checked_logits(logits: Any, target: Any) -> tuple[Tensor, Tensor]:
    """``(logits, target)`` when ``forward_fn`` gave ``(N, C)`` logits, ``C >= 2``, for the ``N`` targets of
    ``batch_fn``.

    Raises:
        TypeError: ``logits`` or ``target`` is not a tensor.
        ValueError: ``logits`` of another shape, or of one output per sample (the classification indicators
            compare ``C >= 2`` classes).
    """
    if not isinstance(target, Tensor):
        raise TypeError(
            f"HeldOutRealCheck: `batch_fn` gave a target of type {type(target).__name__}; the target must be a "
            "tensor of class indices: pass `batch_fn=lambda batch: (inputs, target)`."
        )
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"HeldOutRealCheck: `forward_fn` returned {_describe(logits)}; it must return a Tensor of logits of "
            "shape (N, C): pass `forward_fn=lambda pl_module, inputs: logits` (the default calls "
            "`pl_module(inputs)` and takes `.logits` or `['logits']` when the output has them)."
        )
    n = target.reshape(-1).shape[0]
    if (logits.ndim == 2 and logits.shape == (n, 1)) or (logits.ndim == 1 and logits.shape[0] == n):
        raise ValueError(
            f"HeldOutRealCheck: the model gives one output per sample (logits of shape {tuple(logits.shape)}), but "
            "the classification indicators (accuracy, worst-class recall, effective number of classes) need logits "
            "of at least 2 classes. For a binary classifier with one logit z = pl_module(inputs).reshape(-1, 1), pass a "
            "`forward_fn` that returns `torch.cat([-z, z], dim=1) / 2` (their softmax is sigmoid(z))."
        )
    if logits.ndim != 2 or logits.shape[0] != n:
        raise ValueError(
            f"HeldOutRealCheck: `forward_fn` returned logits of shape {tuple(logits.shape)}; they must have shape "
            f"(N, C), where N = {n} is the batch size (the number of targets `batch_fn` gives) and C >= 2 the "
            "number of classes: pass a `forward_fn` (and `batch_fn`) that give one row of class logits per target."
        )
    return logits, target


#: strategies whose ``LightningModule.state_dict()`` is a shard of the model, not the whole of it
SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy", "XLAFSDPStrategy")


def copies_best_weights(strategy: Any, restore_best: Any) -> bool:
    """Whether ``CollapseGuard`` keeps a copy of the best check's weights under ``strategy``.

    ``restore_best=None`` (the default: restore on ``"stop"``) keeps copies unless the strategy shards the model
    (:data:`SHARDED_STRATEGIES`), where a copy of one rank's shard cannot be put back; ``False`` never keeps them.

    Raises:
        ValueError: ``restore_best=True`` under a sharded strategy (pass ``restore_best=False`` or ``None``).

    Example::

        >>> copies_best_weights(object(), None)
        True
    """
    sharded = type(strategy).__name__ in SHARDED_STRATEGIES
    if restore_best and sharded:
        raise ValueError(f"CollapseGuard(restore_best=True) cannot put back the weights under {type(strategy).__name__}"
                         ", which shards the model: pass restore_best=False (or None: restore where the strategy allows).")
    return restore_best is not False and not sharded
