"""``HeldOutRealCheck``: measure the model on held-out real (and held-out synthetic) data at every check."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from collapse_guard._compat import Callback, LightningModule, Trainer, rank_zero_warn
from collapse_guard._rng import preserved_rng
from collapse_guard.callbacks._base import (
    CollapseMetricsProducer,
    monitored_keys,
    require_mixed_datamodule,
    run_collectively,
    show_in_progress_bar,
)
from collapse_guard.callbacks._dry_run import check_classes, check_sizes, dry_run, first_batch, run_loss_fn
from collapse_guard.callbacks._model_io import default_batch_fn, default_forward_fn
from collapse_guard.callbacks.features import FeatureIndicators, penultimate_features
from collapse_guard.callbacks.generated import generated_indicators, generated_keys
from collapse_guard.callbacks.paired import PairedReference
from collapse_guard.callbacks.rules import Rule, default_rules
from collapse_guard.callbacks.tasks import Task, check_task, task_from_batch
from collapse_guard.metrics.loss import LossIndicators

ON_ERROR = ("warn", "raise")


class HeldOutRealCheck(CollapseMetricsProducer, Callback):
    r"""Runs the model on held-out real and held-out synthetic data and logs collapse indicators.

    At every check (the end of every ``every_n_epochs``-th training epoch) the model, in eval mode and without
    gradients, reads the :class:`~collapse_guard.MixedDataModule`'s held-out real data (all of it) and up to
    ``synthetic_samples`` of its held-out synthetic data (a fixed subset, the same at every check). Indicators are
    torchmetrics ``Metric`` states, synced across ranks, logged through ``pl_module.log`` so every logger sees them.

    **Any model.** What is measured depends on the ``task``, inferred at set-up from the target of the first held-out
    real batch (:mod:`collapse_guard.callbacks.tasks`) or given; every task logs the held-out real ``loss`` and
    ``loss_stderr`` (per sample, per sequence for language models), the held-out synthetic loss and the gap:

    * ``"language_model"`` (integer labels ``(N, T)``; logits ``(N, T, V)`` or outputs carrying ``.logits``):
      ``collapse/heldout_real/{loss,loss_stderr,perplexity,token_acc,token_acc_stderr,entropy}`` per scored token
      (label ``-100`` not scored; labels equal to the inputs, Hugging Face's causal convention, are shifted by one),
      standard errors by sequence (:class:`~collapse_guard.metrics.language_model.LanguageModelIndicators`); gap
      keys ``loss``, ``token_acc``;
    * ``"regression"`` (float targets; predictions ``(N,)``, ``(N, 1)`` or ``(N, D)``):
      ``collapse/heldout_real/{loss,loss_stderr,mse,mae,r2,pred_var_ratio,residual_tail_mass}``
      (:class:`~collapse_guard.metrics.regression.RegressionIndicators`); gap keys ``loss``, ``r2``;
    * ``"loss"``: only the loss of ``loss_fn``, for any model and batch (no ``batch_fn`` or ``forward_fn`` call);
    * ``"classification"`` (integer targets ``(N,)``; logits ``(N, C)``), the classifier indicators below.

    With ``loss_fn`` the logged ``loss`` and ``loss_stderr`` are those of the user's own per-sample loss.
    ``CollapseGuard()`` without rules judges the default rules of the task (:func:`~collapse_guard.default_rules`).
    For a classifier:

    * ``collapse/heldout_real/{loss,loss_stderr,acc,acc_stderr,entropy,eff_classes,eff_classes_ratio,label_tv,``
      ``label_kl,worst_class_recall,worst_class_recall_stderr,calibration_error}`` and, per class ``c`` present,
      ``collapse/heldout_real/class_recall/<c>`` and ``class_recall_stderr/<c>`` (the default ``class`` rule judges
      each against its own history) (:class:`~collapse_guard.metrics.ClassificationIndicators`);
    * ``collapse/heldout_synthetic/{loss,acc}`` and ``collapse/gap/{loss,acc}``: the held-out synthetic value
      minus the held-out real one. A model that does well on synthetic data and worse on real data (a positive
      accuracy gap) has learned the generator;
    * opt-in, with ``features=True``: ``collapse/features/{precision,recall,density,coverage,frechet,mmd,``
      ``variance_ratio,tail_mass_ratio,vendi,vendi_real,effective_rank_real}``: the model's features (default: the
      inputs of its last ``nn.Linear``) of up to ``feature_samples`` *training* synthetic samples against those of
      the held-out real data (:class:`~collapse_guard.callbacks.features.FeatureIndicators`). No default rule reads
      them; they cost about ten times the rest of the check (``benchmarks/cost.py``, one CPU core: 0.33 s a check
      with them, 0.03 s without, 512 training synthetic and 400 held-out real samples, an MLP of 1.6 M parameters);
    * with a ``sample_fn`` (generative models), ``collapse/generated/{...}`` on ``feature_samples`` samples of the
      model: a language model's token ids against the held-out real inputs, ``distinct_1, distinct_2,
      unigram_entropy, unigram_entropy_real, vocab_coverage`` (:class:`~collapse_guard.callbacks.generated.
      TextSampleIndicators`); any other model's, the feature indicators above, samples and held-out real inputs
      mapped by ``sample_feature_fn`` (default: flattened).

    Every check's values are kept in :attr:`history` (``{"epoch", "global_step", key: value, ...}``), saved with
    checkpoints, for reports.

    A check that fails (an exception in a hook or the model) is re-raised on every rank (``on_error="raise"``,
    the default: a guard that silently stops seeing is worse than a crash) or skipped on every rank with a warning
    (``"warn"``); ranks agree first, so none waits forever, and the checkpoints of earlier epochs are untouched.

    Args:
        every_n_epochs: check every this many training epochs (``>= 1``).
        batch_fn: ``batch -> (inputs, target)``; default :func:`default_batch_fn`.
        forward_fn: ``(pl_module, inputs) -> outputs`` (logits ``(N, C)``, ``(N, T, V)``, predictions); default
            :func:`default_forward_fn`.
        synthetic: also measure held-out synthetic data and the gap.
        synthetic_samples: held-out synthetic samples measured at every check, at most: a random subset drawn
            with the datamodule's ``seed`` (the same samples at every check, so checks compare), split between
            ranks like the held-out real data (``None``: all of them). ``"auto"`` (default): the task's
            (``Task.synthetic_samples``): 512 samples, which measure a classifier's accuracy gap to about 2
            percentage points (binomial standard error at 80% accuracy); 128 sequences for a language model (each
            scores all its tokens; 512 made the check cost more than 3% of a fit, ``benchmarks/RESULTS.md`` 6b).
        features: compute the feature-space indicators (opt-in; see above for what they cost).
        feature_fn: ``(pl_module, inputs) -> (N, D)`` features; default: the penultimate-layer hook.
        feature_samples: training synthetic (or generated) samples compared with held-out real, ``>= k + 1``.
        k: neighbour rank of the k-NN indicators (``>= 1``).
        sample_fn: ``(pl_module, n) -> samples`` for generative models (``None``: no generative check).
        sample_feature_fn: maps generated samples and held-out real inputs to ``(N, D)`` features (default:
            flatten every sample).
        max_batches: at most this many batches of each held-out set per check (``None``: all).
        on_error: ``"raise"`` (the error on the failing rank, a ``RuntimeError`` on the others) or ``"warn"``
            (skip the failed check; its metrics are not logged, so the guard does not judge it).
        prog_bar: show held-out real accuracy (perplexity, MSE, loss by task) in the progress bar, as
            ``heldout_acc`` (``heldout_ppl``, ``heldout_mse``, ``heldout_loss``).
        task: ``"classification"``, ``"language_model"``, ``"regression"`` or ``"loss"``; ``None`` (default):
            inferred at set-up (a float target: regression; an integer ``(N,)`` one: classification; an integer
            ``(N, T)`` one: language model).
        loss_fn: ``(pl_module, batch) -> per-sample losses (N,)`` (e.g. ``F.cross_entropy(..., reduction="none")``):
            the logged ``loss`` / ``loss_stderr``; needed with ``task="loss"``.

    Raises:
        ValueError: for out-of-range arguments, an unknown ``task``, ``task="loss"`` without ``loss_fn``; at set-up, when the held-out real set has no more than ``k``
            samples and feature indicators are asked for, or ``synthetic_samples`` is smaller than the number of
            ranks, or a rule of the Trainer's ``CollapseGuard`` reads a held-out real indicator and the held-out
            real set holds fewer than 2 classes (read once, through ``batch_fn``); at a check, when a batch cannot be split into inputs and targets (with ``on_error="raise"``).
        TypeError: a ``loss_fn`` not callable; at set-up, when the Trainer's datamodule is not a ``MixedDataModule``,
            or, with no ``task``, ``batch_fn`` gives a target that is not a tensor (the task cannot be inferred).
        Exception: at fit start, before the first training batch, a dry run puts one held-out real batch through
            ``batch_fn``, ``forward_fn`` and the model (without gradients, in eval mode, the training mode and the
            random state restored after, not counted as a training batch) and refuses, naming the one at fault:
            ``batch_fn`` failing or giving a target that is not a tensor; the model failing on the inputs (its
            error restated with the inputs' shape, of the same built-in type, chaining the original); a model
            without ``forward`` (pass ``forward_fn=``, or ``task="loss"`` with ``loss_fn``); ``forward_fn``
            returning no tensor (``TypeError``), outputs the task cannot read (``ValueError``: a classifier's logits
            not ``(N, C)``, ``C >= 2``, a language model's not ``(N, T, V)`` for labels ``(N, T)``, a regressor's
            predictions not one per target); ``loss_fn`` failing or not giving ``(N,)`` losses. With ``on_error="warn"`` it warns instead. Under several processes every
            rank fails together, naming the failing rank.

    Example::

        check = HeldOutRealCheck(batch_fn=lambda b: (b["pixels"], b["label"]))
        trainer = pl.Trainer(callbacks=[check])

        # every held-out synthetic sample, and the feature-space indicators on 1000 training synthetic samples
        check = HeldOutRealCheck(synthetic_samples=None, features=True, feature_samples=1000)

        # a Hugging Face causal LM: batches {"input_ids", "attention_mask"}, outputs with .logits: nothing to pass
        trainer = pl.Trainer(callbacks=[HeldOutRealCheck(), CollapseGuard()])  # task "language_model", its rules
    """

    produces = ("collapse/heldout_real/", "collapse/heldout_synthetic/", "collapse/gap/", "collapse/features/",
                "collapse/generated/")

    def __init__(
        self,
        every_n_epochs: int = 1,
        batch_fn: Optional[Callable[[Any], tuple[Any, Tensor]]] = None,
        forward_fn: Optional[Callable[[LightningModule, Any], Tensor]] = None,
        synthetic: bool = True,
        synthetic_samples: Optional[Union[int, str]] = "auto",
        features: bool = False,
        feature_fn: Optional[Callable[[LightningModule, Any], Tensor]] = None,
        feature_samples: int = 512,
        k: int = 5,
        sample_fn: Optional[Callable[[LightningModule, int], Any]] = None,
        sample_feature_fn: Optional[Callable[[Any], Tensor]] = None,
        max_batches: Optional[int] = None,
        on_error: str = "raise",
        prog_bar: bool = True,
        task: Optional[str] = None,
        loss_fn: Optional[Callable[[LightningModule, Any], Tensor]] = None,
    ) -> None:
        for name, value in (("every_n_epochs", every_n_epochs), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if not isinstance(feature_samples, int) or feature_samples <= k:
            raise ValueError(f"`feature_samples` must be an integer > k={k}, got {feature_samples!r}.")
        if synthetic_samples is not None and synthetic_samples != "auto" and (
            isinstance(synthetic_samples, bool) or not isinstance(synthetic_samples, int) or synthetic_samples < 1
        ):
            raise ValueError(
                f"`synthetic_samples` must be a positive integer, None (all) or 'auto', got {synthetic_samples!r}."
            )
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
        check_task(task, loss_fn)
        # what the model is (None: inferred at set-up) and the user's own per-sample loss
        self.task, self.loss_fn = task, loss_fn
        # when a check runs, how much it reads, what a failure does, what the progress bar shows
        self.every_n_epochs, self.max_batches = every_n_epochs, max_batches
        self.on_error, self.prog_bar = on_error, prog_bar
        # how a batch becomes logits
        self.batch_fn, self.forward_fn = batch_fn or default_batch_fn, forward_fn or default_forward_fn
        # held-out synthetic data and the gap
        self.synthetic, self.synthetic_samples = synthetic, synthetic_samples
        # the feature-space indicators: of training synthetic samples, and of samples of a generative model
        self.features, self.feature_fn, self.feature_samples, self.k = features, feature_fn, feature_samples, k
        self.sample_fn = sample_fn
        self.sample_feature_fn = sample_feature_fn or (lambda x: x.reshape(x.shape[0], -1).float())
        self.last, self.history, self.paired = {}, [], PairedReference()  # paired: a classifier's reference check
        self._reset_fit_state()

    def _reset_fit_state(self) -> None:
        """Forget the loaders and metric objects kept from check to check (a new fit builds its own)."""
        #: ``(dm, held-out synthetic, training synthetic loader)`` (first check); ``_real``: ``(dm, held-out real)``
        self._loaders, self._real = None, None
        #: one metric per measured set (and per set, the ``loss_fn`` one), reset at every check rather than rebuilt
        self._metrics: dict[str, Any] = {}
        #: ``(datamodule, task adapter)`` of this fit, found at set-up
        self._task: Optional[tuple[Any, Task]] = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._reset_fit_state()
        dm = require_mixed_datamodule(trainer, type(self).__name__)
        task = self.task_of(trainer)
        check_sizes(self, dm, int(trainer.world_size))
        if task.name == "classification" and any(k.startswith("collapse/heldout_real/") for k in monitored_keys(trainer)):
            check_classes(dm, self.batch_fn)

    def task_of(self, trainer: Trainer) -> Task:
        """The task adapter of this fit: ``task``, else inferred from the first held-out real batch
        (:func:`~collapse_guard.callbacks.tasks.task_from_batch`; read once, through ``batch_fn``, no model call)."""
        dm = trainer.datamodule
        if self._task is None or self._task[0] is not dm:
            read = self.task in (None, "language_model") and getattr(dm, "heldout_real", None) is not None
            self._task = (dm, task_from_batch(self.task, first_batch(self._real_loader(dm)) if read else None,
                                              self.batch_fn))
        return self._task[1]

    def synthetic_limit(self) -> Optional[int]:
        """The held-out synthetic samples measured at every check: ``synthetic_samples``, or with ``"auto"`` the
        task's (``None``: all)."""
        if self.synthetic_samples != "auto":
            return self.synthetic_samples
        return self._task[1].synthetic_samples if self._task is not None else Task.synthetic_samples

    def default_rules(self, trainer: Trainer) -> list[Rule]:
        """The default rules of this fit's task (:func:`~collapse_guard.default_rules`): what ``CollapseGuard()``
        without ``rules`` judges."""
        return default_rules(task=self.task_of(trainer).name)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The dry run: one held-out real batch through ``batch_fn``, ``forward_fn``, the model, the task and
        ``loss_fn`` before training (:func:`~collapse_guard.callbacks._dry_run.dry_run`)."""
        def run() -> None:
            with preserved_rng():  # reading samples and the forward pass must not move the user's random state
                dry_run(self, trainer, pl_module, self._heldout_loaders(trainer.datamodule)[0])

        self._measured(trainer, pl_module, "dry run at fit start", run, "the checks will fail alike")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._reset_fit_state()  # let go of the loaders (and their persistent workers)

    # -- one pass over a loader -----------------------------------------------------------------------------
    def _batches(self, trainer: Trainer, loader: Iterable) -> Iterable:
        for i, batch in enumerate(loader):
            if self.max_batches is not None and i >= self.max_batches:
                return
            yield trainer.strategy.batch_to_device(batch)

    def _metric(self, name: str, make: Callable[[], Any], fits: Callable[[Any], bool], device: torch.device) -> Any:
        """The set's metric, reset: built (``make()``) at the first check, reused at the next ones while it ``fits``."""
        metric = self._metrics.get(name)
        if metric is None or not fits(metric) or metric.device != device:
            metric = self._metrics[name] = make().to(device)
        else:
            metric.reset()
        return metric

    def _pass(self, pl_module: LightningModule, loader: Iterable, name: Optional[str] = None, feature_sink=None,
              input_sink=None) -> dict[str, Any]:
        """The task's metric (``name``) and the ``loss_fn`` one (``name + "#loss_fn"``) of the set ``name`` over
        ``loader`` (none when ``name`` is ``None``); features / inputs go to the sinks when given."""
        trainer, metrics = pl_module.trainer, {}
        task = self.task_of(trainer)
        # the penultimate-layer hook only when its features are wanted: it costs a module walk and a hook call
        hooked = feature_sink is not None and self.feature_fn is None and task.reads_outputs
        with penultimate_features(pl_module) if hooked else nullcontext([]) as captured:
            for batch in self._batches(trainer, loader):
                if name is not None and self.loss_fn is not None:
                    losses = run_loss_fn(self.loss_fn, pl_module, batch)
                    if f"{name}#loss_fn" not in metrics:
                        metrics[f"{name}#loss_fn"] = self._metric(f"{name}#loss_fn", LossIndicators, lambda m: True,
                                                                  losses.device)
                    metrics[f"{name}#loss_fn"].update(losses)
                if not task.reads_outputs:
                    continue
                inputs, target = self.batch_fn(batch)
                captured.clear()
                outputs, target = task.checked(self.forward_fn(pl_module, inputs), target)
                if name is not None:
                    if name not in metrics:
                        metrics[name] = self._metric(name, lambda: task.new_metric(outputs),
                                                     lambda m: task.fits(m, outputs), outputs.device)
                    task.update(metrics[name], outputs, target.to(outputs.device))
                if feature_sink is not None:
                    feats = self.feature_fn(pl_module, inputs) if self.feature_fn is not None else (
                        captured[-1] if captured else None
                    )
                    if feats is not None:
                        feature_sink(feats)
                if input_sink is not None:
                    input_sink(inputs)
        return metrics

    def _heldout_loaders(self, dm) -> tuple[DataLoader, Optional[DataLoader], Optional[DataLoader]]:
        """The held-out real, (capped) held-out synthetic and, for the feature indicators, training synthetic
        loaders, built once per fit: every check reads the same samples, and a loader with persistent workers keeps
        them from check to check instead of starting new worker processes at every check."""
        if self._loaders is None or self._loaders[0] is not dm:
            synthetic = dm.heldout_synthetic_dataloader(max_samples=self.synthetic_limit()) if self.synthetic else None
            training = (dm.synthetic_training_dataloader(max_samples=self.feature_samples)
                        if self.features and self.synthetic else None)
            self._loaders = (dm, synthetic, training)
        return self._real_loader(dm), self._loaders[1], self._loaders[2]

    def _real_loader(self, dm) -> DataLoader:  # built once per fit and datamodule
        if self._real is None or self._real[0] is not dm:
            self._real = (dm, dm.heldout_real_dataloader())
        return self._real[1]

    # -- the check ------------------------------------------------------------------------------------------
    def _measured(self, trainer: Trainer, pl_module: LightningModule, when: str, fn: Callable[[], Any],
                  skipped: str) -> Any:
        """``fn()`` on every rank (:func:`~collapse_guard.callbacks._base.run_collectively`), the model in eval mode
        and without gradients, its batches not counted as training batches; the training mode restored after.
        A failure is raised (``on_error="raise"``) or warned about, saying ``skipped``, and gives ``None``."""
        dm = trainer.datamodule
        paused = dm.counting_paused() if hasattr(dm, "counting_paused") else nullcontext()
        was_training = pl_module.training
        pl_module.eval()
        try:
            with paused, torch.no_grad():
                return run_collectively(trainer, type(self).__name__, fn)
        except Exception as err:  # noqa: BLE001 - raised on every rank alike, so every rank takes this branch
            if self.on_error == "raise":
                raise
            rank_zero_warn(f"HeldOutRealCheck {when} failed ({type(err).__name__}: {err}); {skipped}.")
            return None
        finally:
            pl_module.train(was_training)

    @torch.no_grad()
    def _collect(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The local passes: every metric updated on this rank's shard, nothing synced yet."""
        dm = trainer.datamodule
        collected: dict[str, Any] = {}
        real_inputs: list[Tensor] = []
        features_wanted = self.features and self.synthetic

        def real_features(x: Tensor) -> None:
            if "features" not in collected:
                collected["features"] = FeatureIndicators(x.shape[-1], k=self.k, device=x.device)
            collected["features"].update(x, real=True)

        real_loader, synthetic_loader, training_loader = self._heldout_loaders(dm)
        collected.update(self._pass(
            pl_module,
            real_loader,
            "heldout_real",
            feature_sink=real_features if features_wanted else None,
            input_sink=real_inputs.append if self.sample_fn is not None else None,
        ))
        if synthetic_loader is not None:
            collected.update(self._pass(pl_module, synthetic_loader, "heldout_synthetic"))
        feats = collected.get("features")
        if feats is not None:
            if training_loader is not None:
                self._pass(pl_module, training_loader, feature_sink=lambda x: feats.update(x, real=False))
            if not feats.pair["prdc"].synthetic_features:
                del collected["features"]
        if self.sample_fn is not None and real_inputs:
            collected["generated"] = generated_indicators(
                self.task_of(trainer).name, self.sample_fn(pl_module, self.feature_samples), real_inputs, self.k,
                self.sample_feature_fn)
        return collected

    @staticmethod
    def _compute(collected: dict[str, Any]) -> dict[str, float]:
        """Sync and compute every collected metric (a collective: every rank calls it, in the same order)."""
        values: dict[str, float] = {}
        for name in ("heldout_real", "heldout_synthetic", "features", "generated"):
            metric = collected.get(name)
            for part in (metric, collected.get(f"{name}#loss_fn")):  # the user's loss replaces the task's
                if part is not None:
                    values.update({f"collapse/{name}/{k}": float(v) for k, v in part.compute().items()})
        return values

    def metric_keys(self, trainer: Trainer) -> Optional[set[str]]:
        """The keys this check logs in this fit (known after the datamodule's set-up)."""
        dm, task = trainer.datamodule, self.task_of(trainer)
        keys = {f"collapse/heldout_real/{k}" for k in task.keys}
        keys |= {f"collapse/heldout_real/{k}/*" for k in task.family_keys}  # one key per class
        has_synthetic = self.synthetic and getattr(dm, "heldout_synthetic", None) is not None
        if has_synthetic:
            keys |= {f"collapse/{side}/{k}" for side in ("heldout_synthetic", "gap") for k in task.gap_keys}
        if self.features and self.synthetic and any(
            s["kind"] == "synthetic" and s.get("training_pool") for s in dm.provenance()["sources"]
        ):
            keys |= {f"collapse/features/{k}" for k in FeatureIndicators.KEYS}
        if self.sample_fn is not None:
            keys |= {f"collapse/generated/{k}" for k in generated_keys(task.name)}
        return keys

    def check(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, float]:
        """Run one check and return the values to log (empty when the check failed and ``on_error="warn"``).

        The passes over the data run locally on every rank; the ranks then agree whether any failed
        (:func:`~collapse_guard.callbacks._base.run_collectively`) before any metric syncs, so a failure on one
        rank never leaves another waiting.
        """
        collected = self._measured(trainer, pl_module, f"at epoch {trainer.current_epoch}",
                                   lambda: self._collect(trainer, pl_module), "this check is skipped")
        if collected is None:
            return {}
        values = self._compute(collected)
        values.update(self.paired.values(trainer, collected.get("heldout_real"), values))  # collective, like sync
        real, synth, gap_keys = "collapse/heldout_real/", "collapse/heldout_synthetic/", self.task_of(trainer).gap_keys
        for key in gap_keys:
            if real + key in values and synth + key in values:
                values[f"collapse/gap/{key}"] = values[synth + key] - values[real + key]
        return {k: v for k, v in values.items() if not k.startswith(synth) or k[len(synth):] in gap_keys}

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        values = self.check(trainer, pl_module)
        if not values:
            return
        self.last = values
        self.history.append({"epoch": trainer.current_epoch, "global_step": trainer.global_step, **values})
        shown = "collapse/heldout_real/" + self.task_of(trainer).prog_bar_key
        for key, value in values.items():
            self.log_metric(trainer, pl_module, key, value)
        if self.prog_bar and shown in values:
            show_in_progress_bar(pl_module, shown, values[shown])

    def summary(self) -> dict:
        """What the check measured, as plain data (the report's ``indicators``): ``every_n_epochs``, ``keys`` (in
        first-logged order) and ``history`` (one dict per check: ``epoch``, ``global_step`` and the values)."""
        history = [dict(row) for row in self.history]
        keys: list[str] = []
        for row in history:
            keys += [k for k in row if k not in ("epoch", "global_step") and k not in keys]
        return {"every_n_epochs": self.every_n_epochs, "keys": keys, "history": history}

    def state_dict(self) -> dict:
        return {"last": dict(self.last), "history": list(self.history), "paired": self.paired.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last = dict(state_dict.get("last", {}))
        self.paired.load_state_dict(state_dict.get("paired"))
        self.history = list(state_dict.get("history", []))
