"""``HeldOutRealCheck``'s reading of the model before training: the task of the model from one held-out real batch
(at set-up), and the dry run at fit start that puts that batch through ``batch_fn``, the model and the task, each
failure restated naming which argument to fix."""
from __future__ import annotations

from typing import Any, Callable, Optional

from collapse_guard._compat import LightningModule
from collapse_guard.callbacks._model_io import _describe, _restated, default_forward_fn


def first_batch(loader: Any) -> Optional[Any]:
    """The loader's first batch, collated as the loader collates (``None`` for an empty loader), without starting
    worker processes or drawing from a shuffling sampler."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None or len(dataset) == 0:
        return None
    return loader.collate_fn([dataset[i] for i in range(min(len(dataset), loader.batch_size or 1))])


def _restating(fn: Callable[..., Any], *args: Any, name: str, hint: str) -> Any:
    """``fn(*args)``; a failure restated as ``name`` failing on a held-out real batch (the last argument), with
    ``hint`` saying what to pass."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - restated with what to fix
        raise _restated(err, f"HeldOutRealCheck: `{name}` failed on a held-out real batch ({_describe(args[-1])}): "
                             f"{type(err).__name__}: {err}. {hint}") from err


def split_batch(batch_fn: Callable[[Any], tuple[Any, Any]], batch: Any) -> tuple[Any, Any]:
    """``batch_fn(batch)``; its failure restated with the batch's structure and what to pass."""
    inputs, target = _restating(batch_fn, batch, name="batch_fn", hint=(
        "It must split a collated batch into (inputs, target): pass `batch_fn=lambda batch: (inputs, target)`, or "
        "for a model without targets `task='loss'` with `loss_fn=lambda pl_module, batch: per_sample_losses`."))
    return inputs, target


def run_model(forward_fn: Callable[[LightningModule, Any], Any], pl_module: LightningModule, inputs: Any) -> Any:
    """``forward_fn(pl_module, inputs)``; a missing ``forward`` or a failure restated naming ``forward_fn``."""
    model = type(pl_module).__name__
    try:
        return forward_fn(pl_module, inputs)
    except NotImplementedError as err:
        if forward_fn is not default_forward_fn:
            raise
        raise NotImplementedError(
            f"HeldOutRealCheck: the model {model} defines no `forward` ({err}), and the default `forward_fn` "
            "calls `pl_module(inputs)`: define `forward`, pass `forward_fn=lambda pl_module, inputs: outputs` "
            "(e.g. `pl_module.net(inputs)`), or measure the model by its own loss alone with `task='loss'` and "
            "`loss_fn=lambda pl_module, batch: per_sample_losses`."
        ) from err
    except Exception as err:  # noqa: BLE001 - restated with what to fix
        raise _restated(err, (
            f"HeldOutRealCheck: the model {model}, called through `forward_fn`, fails on held-out real inputs "
            f"({_describe(inputs)}, as `batch_fn` gives them): {type(err).__name__}: {err}. Pass a `batch_fn` "
            "that gives the inputs the model takes, or a `forward_fn=lambda pl_module, inputs: outputs` that "
            "calls the model as its training_step does.")) from err


def run_loss_fn(loss_fn: Callable[[LightningModule, Any], Any], pl_module: LightningModule, batch: Any) -> Any:
    """``loss_fn(pl_module, batch)``: per-sample losses ``(N,)``; a failure or another shape restated naming it.

    Raises:
        ValueError: ``loss_fn`` returned no tensor of one loss per sample.
    """
    from torch import Tensor

    losses = _restating(loss_fn, pl_module, batch, name="loss_fn",
                        hint="It must return the per-sample losses of the batch, shape (N,).")
    if not isinstance(losses, Tensor) or losses.ndim not in (1, 2) or (losses.ndim == 2 and losses.shape[1] != 1) \
            or losses.numel() == 0:
        raise ValueError(
            f"HeldOutRealCheck: `loss_fn` returned {_describe(losses)}; it must return one loss per sample (per "
            "sequence), a tensor of shape (N,): e.g. `F.cross_entropy(logits, y, reduction='none')`, not the mean.")
    return losses


def dry_run(check: Any, trainer: Any, pl_module: LightningModule, loader: Any) -> None:
    """The first held-out real batch of this rank through ``batch_fn``, ``forward_fn``, the model, the task and
    ``loss_fn``: the check's first check, before the first training batch."""
    batch = first_batch(loader)
    if batch is None:
        return
    batch = trainer.strategy.batch_to_device(batch)
    task = check.task_of(trainer)
    if task.reads_outputs:
        inputs, target = split_batch(check.batch_fn, batch)
        task.checked(run_model(check.forward_fn, pl_module, inputs), target)
    if check.loss_fn is not None:
        run_loss_fn(check.loss_fn, pl_module, batch)


def check_classes(dm: Any, batch_fn: Callable[[Any], tuple[Any, Any]]) -> None:
    """Classification indicators on held-out real data that a rule reads need at least two classes in it.

    Raises:
        ValueError: the held-out real set holds fewer than 2 classes.
    """
    classes = dm.heldout_real_classes(batch_fn)
    if len(classes) < 2:
        raise ValueError(
            f"HeldOutRealCheck: the held-out real set ({len(dm.heldout_real)} samples) holds "
            f"{len(classes)} class{'' if len(classes) == 1 else 'es'} ({classes.tolist()}), but the held-out real "
            "indicators a CollapseGuard rule monitors (worst-class recall, effective number of classes, label "
            "marginals) compare classes and need at least 2: hold out real data of every class (a larger or "
            "stratified `holdout`)."
        )


def check_sizes(check: Any, dm: Any, world: int) -> None:
    """The held-out sets are large enough for what ``check`` (a ``HeldOutRealCheck``) computes on ``world`` ranks.

    Raises:
        ValueError: k-NN indicators over a held-out real set of no more than ``k`` samples, or fewer
            ``synthetic_samples`` than ranks.
    """
    heldout = getattr(dm, "heldout_real", None)
    if (check.features or check.sample_fn is not None) and heldout is not None and len(heldout) <= check.k:
        raise ValueError(
            f"HeldOutRealCheck: the held-out real set has {len(heldout)} samples but the k-NN indicators need "
            f"more than k={check.k}. Hold out more real data, lower `k`, or pass features=False."
        )
    limit = check.synthetic_limit()
    if (check.synthetic and limit is not None and limit < world
            and getattr(dm, "heldout_synthetic", None) is not None):
        raise ValueError(
            f"HeldOutRealCheck: `synthetic_samples={limit}` is fewer than the {world} ranks that "
            "share the held-out synthetic samples at every check (each needs at least one): raise it, or pass None."
        )
