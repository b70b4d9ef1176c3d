"""``CollapseGuard``: act on collapse indicators the way ``EarlyStopping`` acts on a monitored metric."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from collapse_guard._compat import Callback, LightningModule, Trainer, rank_zero_warn
from collapse_guard.callbacks._base import (
    CollapseMetricsReader, producers_attribution_rules, producers_default_rules, require_mixed_datamodule,
    run_after_producers, run_collectively,
)
from collapse_guard.callbacks._logger_io import log_text
from collapse_guard.callbacks._model_io import copies_best_weights
from collapse_guard.callbacks._progress_bar import hide_words, show_word
from collapse_guard.callbacks.quarantine import active_sources, quarantine, warn_without_attribution
from collapse_guard.callbacks.monitor_keys import check_module_metrics, check_monitors, missing_metrics_message
from collapse_guard.callbacks.check_log import CheckLog
from collapse_guard.callbacks.events import GuardEvent, event_fields, fraction_change, moved
from collapse_guard.callbacks._state_keys import adopt_older_state, legacy_state_key, older_state_keys
from collapse_guard.callbacks.policy import (
    DECISIONS, EXHAUSTED, PERSISTS, Decision, RuleBook, as_rules, check_guard_arguments,
)
from collapse_guard.callbacks.readings import FRESH, MISSING, STALE, agree_across_ranks, read_monitors
from collapse_guard.callbacks.rules import Rule, RuleState, Verdict, default_rules

__all__ = ["CollapseGuard", "GuardEvent", "STATE_CODES", "default_rules"]

#: guard states logged as ``collapse/guard/state``
STATE_CODES = {"ok": 0, "warn": 1, "inject": 2, "stop": 3, "quarantine": 4}


class CollapseGuard(RuleBook, CollapseMetricsReader, Callback):
    r"""Reads logged collapse indicators at every check and warns, injects fresh real data, or stops.

    Like ``EarlyStopping``, it reads ``trainer.callback_metrics``; it runs after the callbacks that log
    ``collapse/`` metrics (it moves itself behind them), at the end of every training epoch. Each :class:`Rule`
    keeps a baseline, a bound and a patience counter; when rules fire, the strongest of their actions is taken (the
    policy :func:`~collapse_guard.callbacks.policy.decide`, shared with ``GenerationGuard``):

    * ``"warn"``: a warning with the reason;
    * ``"inject"``: ``datamodule.inject(...)`` moves ``inject_fraction`` of the reserve into training and raises the
      real fraction by ``real_fraction_step``, from the next epoch on; it escalates to ``"stop"`` when neither
      more reserve nor a higher real fraction is left, or after ``max_injections`` injections;
    * ``"stop"``: ``trainer.should_stop = True``;
    * ``"quarantine"`` (a family rule over synthetic sources asks for it): the sources it names are dropped from the
      next epoch (``MixedDataModule.quarantine``, weight 0), their slots going to the other synthetic sources; it
      takes the place of ``"inject"`` whenever the fired rules name some, not all, of the sources still trained on
      (the harmful source goes, the good synthetic data stays). A collapse that persists after it injects, then
      stops.

    **Which source.** With two or more synthetic sources and ``SourceAudit`` / ``SourceCheck`` among the callbacks,
    the default rules add their attribution rules (each a family rule, one member per source, action
    ``"quarantine"`` for a guard whose action is ``"inject"``, the guard's own otherwise): a source lacking a class
    of the real data, or covering under 0.9 of the best complete source's k-NN coverage of real data (judged at the
    first check), or whose held-out accuracy stays 15 points and 3 standard errors below the best source's for two
    checks. The event names the source (:attr:`GuardEvent.sources`) and the evidence. Without those callbacks a fit mixing several sources is warned
    about at set-up.

    **Best weights.** ``"stop"`` puts back the model's weights from the check at which the first rule's indicator
    was at its best (by default the held-out real accuracy), as Keras' ``EarlyStopping(restore_best_weights=True)``:
    a fit stopped for collapse ends with the weights from before the damage, not with the damaged ones (pass
    ``restore_best=False`` to keep the last weights, as Lightning's ``EarlyStopping`` does). With
    ``restore_best=True``, ``"inject"`` does so too before training goes on with fresh real data; by default
    (``None``) ``"inject"`` keeps the current weights. The optimizer's state and
    the learning-rate schedule are not rolled back. The copy is taken on the CPU at every new best, so it costs
    one model of host memory (and is saved in checkpoints); it needs a strategy whose ``LightningModule.state_dict()``
    holds the whole model (one device, DDP); under a sharded one (FSDP, DeepSpeed) the default keeps no copy and
    ``restore_best=True`` is an error at set-up.

    Every action is one :class:`GuardEvent` (epoch, rule, rules, value, bound, action, reason: every rule that fired
    at that check, the reserve moved and the real fraction before and after) in :attr:`events`, logged as
    ``collapse/guard/events`` (count) and ``collapse/guard/state`` (0 ok, 1 warned, 2 injected, 3 stopped,
    4 quarantined).

    A NaN or infinite indicator fires its rule at once with the rule's ``non_finite`` action, ``"stop"`` by
    default, as ``EarlyStopping(check_finite=True)`` does, and is acted on even during a cooldown: a diverged model
    or check is not something fresh real data can fix. Give the rule ``non_finite="inject"``, ``"warn"`` or
    ``"ignore"`` to do otherwise.

    **Several processes.** Every rank judges the same numbers: the monitored values are gathered from all ranks
    and rank 0's are judged everywhere (a warning names a metric whose value differs between ranks: log it with
    ``sync_dist=True``), so rule baselines, patience counters and events are identical on every rank. The
    decision goes through ``strategy.reduce_boolean_decision`` and a broadcast from rank 0, so every rank takes the
    same action and every rank's ``MixedDataModule`` applies the same injection. An error while reading the
    metrics on one rank is raised on every rank (no rank waits for the others forever).

    **Resume.** The rule states (baselines, best values, patience counters), events, injections made, cooldown
    and state are checkpointed (:meth:`state_dict`) under a :attr:`state_key` made of the rules and the default
    action, so two guards with different rules do not clash and a resumed fit with the same rules continues where
    it stopped; a checkpoint holding a guard with other rules is not loaded into this one (with a warning). With
    the ``MixedDataModule``'s own state (reserve cursor, real fraction floor, injections, counts) a fit resumed from
    an epoch-end checkpoint replays the uninterrupted fit: the same batches, indicators and decisions.
    ``ModelCheckpoint`` saves at the end of the training epoch, after this guard, unless validation runs more
    than once an epoch or not every epoch; pass it ``save_on_train_epoch_end=True`` then. A mid-epoch checkpoint
    (``every_n_train_steps``) is not replayed exactly.

    Args:
        rules: the rules (a list of :class:`Rule`; one ``Rule`` alone is taken as ``[rule]``); default: at set-up,
            :func:`default_rules` of the task of the Trainer's ``HeldOutRealCheck`` (classifier, language model,
            regressor: ``HeldOutRealCheck(task=...)``), those of a classifier until then.
        action: default action of rules that name none: ``"warn"``, ``"inject"`` or ``"stop"``.
        inject_fraction: share in ``(0, 1]`` of the initial reserve moved into training per injection.
        real_fraction_step: how much an injection raises the target real fraction, in ``[0, 1]``.
        max_injections: injections before a persisting collapse escalates to ``"stop"``.
        cooldown: checks after an action during which no further action is taken (the injection needs an epoch
            of training to show).
        strict: raise when a monitored metric is never logged (at set-up for the ``collapse/`` metrics whose
            callback tells its keys in advance and for keys outside ``collapse/`` when ``module_metrics`` is given,
            else at the first check that should have logged it).
        verbose: report every event as a warning (``rank_zero_warn``); with ``False`` only ``"warn"`` events are.
        allow_fraction_only: what ``"inject"`` does with no reserve to inject (``MixedDataModule(reserve=0)``, the
            datamodule's default): ``None`` (default) raises only the real fraction and warns once at set-up (so the
            two defaults work together); ``True`` the same without the warning; ``False`` makes it an error at
            set-up (for a pipeline where a missing reserve is a mistake).
        restore_best: put back the weights of the first rule's best check: ``None`` (default) on ``"stop"`` only,
            ``True`` on ``"inject"`` and ``"stop"``, ``False`` never (and no copy of the weights is kept).
        module_metrics: the keys the ``LightningModule`` logs with ``self.log`` that rules may read (e.g.
            ``["val_loss"]``). Given, a rule on a key outside ``collapse/`` that is not among them is refused at
            set-up, before the first training step; ``None`` (default): such a key is checked at the first check,
            as ``EarlyStopping`` checks its ``monitor``.

    Raises:
        ValueError: for an unknown action, out-of-range numbers or numbers of the wrong kind (NaN, a bool, a str,
            ``cooldown=1.5``); at set-up: an ``"inject"`` rule with no reserve
            and ``allow_fraction_only=False``, or with nothing at all to inject, a rule on a ``collapse/``
            metric that no callback of the Trainer logs (the message lists those that are logged), a rule on another
            key not in a given ``module_metrics`` (the message suggests a close match). (A rule on
            held-out real indicators over a held-out real set of fewer than 2 classes is rejected by
            ``HeldOutRealCheck`` at its set-up.)
        TypeError: ``rules`` holding something else than a ``Rule`` (a metric key: wrap it in ``Rule(key, ...)``);
            ``module_metrics`` that is not a list of non-empty strings;
            at set-up, when an ``"inject"`` rule has no ``MixedDataModule`` to inject into.
        RuntimeError: at a check, with ``strict=True``, when a monitored metric is not logged (the message lists
            the ``collapse/`` metrics that are).

    Example::

        guard = CollapseGuard(action="inject", rules=[Rule("collapse/heldout_real/acc", sigmas=2.0, patience=2)])
        trainer = pl.Trainer(callbacks=[RatioMonitor(), HeldOutRealCheck(), guard])
        trainer.fit(model, datamodule=dm)
        print(guard.events)
    """

    event_type = GuardEvent

    def __init__(
        self,
        rules: Optional[Sequence[Rule]] = None,
        action: str = "inject",
        inject_fraction: float = 0.5,
        real_fraction_step: float = 0.5,
        max_injections: int = 2,
        cooldown: int = 1,
        strict: bool = True,
        verbose: bool = True,
        allow_fraction_only: Optional[bool] = None,
        restore_best: Optional[bool] = None,
        module_metrics: Optional[Sequence[str]] = None,
    ) -> None:
        check_guard_arguments(action, inject_fraction, max_injections, cooldown, real_fraction_step)
        if not 0.0 <= real_fraction_step <= 1.0:
            raise ValueError(f"`real_fraction_step` must be in [0, 1], got {real_fraction_step!r}.")
        self._default_rules = rules is None  # then the rules of the fit's task, chosen at set-up
        rules = default_rules() if rules is None else as_rules(rules, type(self).__name__)
        if not rules:
            raise ValueError("`rules` is empty: give at least one Rule, or None for the default rules.")
        self.set_policy(rules, action, inject_fraction, real_fraction_step, max_injections, cooldown, strict)
        self.verbose = verbose
        if allow_fraction_only is not None and not isinstance(allow_fraction_only, bool):
            raise TypeError(f"`allow_fraction_only` must be True, False or None, got {allow_fraction_only!r}.")
        self.allow_fraction_only = allow_fraction_only
        if restore_best is not None and not isinstance(restore_best, bool):
            raise TypeError(f"`restore_best` must be True, False or None, got {restore_best!r}.")
        self.restore_best = restore_best
        self.module_metrics = check_module_metrics(module_metrics)
        self._copies = restore_best is not False  # whether best weights are copied (set-up asks the strategy too)
        #: with ``restore_best``: ``{"epoch", "value", "weights"}`` of the first rule's best check (CPU tensors)
        self.best_weights: Optional[dict] = None
        self.state = "ok"
        self.check_log = CheckLog()  #: every check: values, bounds in force, action, word

    @property
    def state_key(self) -> str:
        # Lightning reads a callback's state_key at every hook call (for its profiler's names): build the string
        # once per (rules, action), not six times a training step
        key = (tuple(self.rules), self.action)
        cached = self.__dict__.get("_state_key_cache")
        if cached is None or cached[0] != key:
            cached = (key, self._generate_state_key(rules=self.rules, action=self.action))
            self.__dict__["_state_key_cache"] = cached
        return cached[1]

    @property
    def _legacy_state_key(self) -> str:
        return legacy_state_key(self._generate_state_key, self.rules, self.action)

    @property
    def monitors(self) -> tuple[str, ...]:
        """Every logged key the rules read: monitored values and the standard errors of ``sigmas`` bounds."""
        keys = [k for r in self.rules for k in (r.monitor, r.stderr_key) if k is not None]
        return tuple(dict.fromkeys(keys))

    @property
    def _injects(self) -> bool:  # a quarantine that would name every source left injects instead
        return any(self.action_of(r) in ("inject", "quarantine") or r.non_finite == "inject" for r in self.rules)

    @property
    def _quarantines(self) -> bool:
        return any(self.action_of(r) == "quarantine" for r in self.rules)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self._default_rules:  # those of the task of the Trainer's HeldOutRealCheck (a classifier's without one)
            attribution = [replace(r, action="quarantine" if self.action == "inject" else None)
                           for r in producers_attribution_rules(trainer)]
            self.use_rules((producers_default_rules(trainer) or default_rules()) + attribution)
            if not attribution:
                warn_without_attribution(trainer)
        if self._injects:
            dm = require_mixed_datamodule(trainer, f"{type(self).__name__} with action 'inject'")
            self._check_reserve(dm)
        run_after_producers(trainer, self)
        self._copies = copies_best_weights(trainer.strategy, self.restore_best)
        if self.strict:
            check_monitors(trainer, self.rules, self.module_metrics, type(self).__name__)

    def _check_reserve(self, dm) -> None:
        if dm.reserve_remaining > 0:
            return
        if self.real_fraction_step == 0:
            raise ValueError(
                "CollapseGuard: action 'inject' can do nothing: there is no reserve (`reserve=0`) and "
                "`real_fraction_step=0`. Give a reserve, a `real_fraction_step` > 0, or use action='stop'."
            )
        if self.allow_fraction_only is False:
            raise ValueError(
                "CollapseGuard: action 'inject' has no reserve to inject: the MixedDataModule was built with "
                "`reserve=0`. Keep fresh real data back for it (e.g. MixedDataModule(..., reserve=0.2) or a reserve "
                "Dataset), or let 'inject' only raise the real fraction with CollapseGuard(..., "
                "allow_fraction_only=True), or use action='stop' / 'warn'."
            )
        if self.allow_fraction_only is None:
            rank_zero_warn(
                "CollapseGuard: the MixedDataModule keeps no reserve of fresh real data (`reserve=0`, its default), "
                "so action 'inject' will only raise the real fraction of training by `real_fraction_step` "
                f"({self.real_fraction_step}). Keep real data back for it with MixedDataModule(..., reserve=0.2), or "
                "pass CollapseGuard(allow_fraction_only=True) to silence this (False makes it an error)."
            )

    # -- the check ------------------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        keys, readings = run_collectively(trainer, type(self).__name__, lambda: self._read(trainer))
        readings = self._agree(trainer, keys, readings)
        verdicts = self._judge(trainer, keys, readings)
        if self._copies:
            self._keep_best(trainer, pl_module, verdicts)
        decision = self.decide(verdicts, **self._room(trainer))
        # every rank judged rank 0's readings; rank 0's decision is taken everywhere all the same
        any_fired = trainer.strategy.reduce_boolean_decision(bool(decision.fired), all=False)
        chosen = int(trainer.strategy.broadcast(DECISIONS.index(decision.action), src=0)) if any_fired else 0
        if decision.cooling:
            self.cooldown_left -= 1
        elif chosen > 0:
            self._act(trainer, DECISIONS[chosen], decision)
        pl_module.log("collapse/guard/state", float(STATE_CODES[self.state]))
        show_word(trainer, "guard", self.check_log.close(trainer, DECISIONS[chosen], decision, self.state))
        pl_module.log("collapse/guard/events", float(len(self.events)))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            hide_words(trainer)

    def _read(self, trainer: Trainer) -> tuple[list[str], list[tuple[float, float]]]:
        return read_monitors(trainer, self.rules)

    def _agree(self, trainer: Trainer, keys: list[str], readings: list[tuple[float, ...]]) -> list[tuple[float, ...]]:
        return agree_across_ranks(trainer, keys, readings, self.__dict__.setdefault("_disagreeing_keys", set()))

    def _judge(self, trainer: Trainer, keys: list[str], readings: list[tuple[float, float]]) -> list[Verdict]:
        """Verdicts of the rules whose metric was measured at this epoch (the same on every rank)."""
        status = {key: reading[0] for key, reading in zip(keys, readings)}
        row = {key: reading[1] for key, reading in zip(keys, readings) if reading[0] == FRESH and "*" not in key}
        verdicts, missing = [], []
        for state in self.states:
            found = status.get(state.rule.monitor, MISSING)
            if found == STALE:
                continue
            verdict = self.check_log.judge(state, row) if found == FRESH else None  # noted with its bound
            if verdict is None:
                missing.append(state.rule.monitor)
                continue
            verdicts.append(verdict)
        if missing and self.strict:
            raise RuntimeError(missing_metrics_message(type(self).__name__, missing, trainer, self.module_metrics))
        return verdicts

    def _keep_best(self, trainer: Trainer, pl_module: LightningModule, verdicts: list[Verdict]) -> None:
        """Copy the weights when the first rule's indicator reaches a new best at this check (same on every rank)."""
        first = self.states[0]
        verdict = next((v for v in verdicts if v.rule is first.rule), None)
        if verdict is None or verdict.non_finite or first.best is None or verdict.value != first.best:
            return
        weights = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
        self.best_weights = {"epoch": trainer.current_epoch, "value": verdict.value, "weights": weights}

    def _restore(self, pl_module: LightningModule) -> str:
        if not self.best_weights:
            return ""
        pl_module.load_state_dict(self.best_weights["weights"])
        return (
            f"restored the weights of epoch {self.best_weights['epoch']} "
            f"({self.rules[0].monitor} = {self.best_weights['value']:.4f}, its best)"
        )

    def _room(self, trainer: Trainer) -> dict:
        """What an injection could still do: the real fraction now and the reserve (read only by inject guards)."""
        if not self._injects:
            return {"real_fraction": 0.0}
        dm = trainer.datamodule
        return {"real_fraction": dm.current_real_fraction(), "reserve_size": dm.reserve_size,
                "reserve_remaining": dm.reserve_remaining,
                "quarantinable": active_sources(dm) if self._quarantines else ()}

    def _act(self, trainer: Trainer, action: str, decision: Decision) -> None:
        fired = list(decision.fired)
        detail, reasons = "", "; ".join(v.reason for v in fired)
        if action == "quarantine":
            detail = quarantine(trainer.datamodule, decision.sources, trainer.current_epoch, reasons)
        elif action == "inject":
            detail = self._inject(trainer, decision, reasons)
        elif decision.escalated == PERSISTS:
            detail = f"collapse persists after {self.injections} injection(s): stopping"
        elif decision.escalated == EXHAUSTED:
            current = trainer.datamodule.current_real_fraction()
            detail = f"no reserve left and the real fraction is already {current:.2f}: stopping"
        if action == "stop":
            trainer.should_stop = True
            detail = detail or "stopping training"
        if action == "stop" and self.restore_best is not False or action == "inject" and self.restore_best:
            restored = self._restore(trainer.lightning_module)
            detail = f"{restored}; {detail}" if restored and detail else (restored or detail)
        self.events.append(GuardEvent(epoch=trainer.current_epoch, global_step=trainer.global_step, action=action,
                                      sources=decision.sources if action == "quarantine" else (),
                                      **event_fields(fired, detail)))
        self.acted()
        if self.state != "stop":
            self.state = action
        message = f"CollapseGuard epoch {trainer.current_epoch}: {action} — {self.events[-1].reason}"
        if action == "warn" or self.verbose:  # every event at warning level (a warning guard's even when not verbose)
            rank_zero_warn(message)
        if trainer.is_global_zero:
            log_text(trainer.loggers, "collapse/guard/events", message, trainer.global_step)

    def _inject(self, trainer: Trainer, decision: Decision, reason: str) -> str:
        """Move the reserve samples and raise the real fraction the decision sized (:func:`~collapse_guard.callbacks.
        policy.inject_size`, the one sizing both guards use) through ``MixedDataModule.inject``; returns what was
        done."""
        dm = trainer.datamodule
        current = dm.current_real_fraction()
        record = dm.inject(num_samples=decision.samples, min_real_fraction=decision.real_fraction, reason=reason)
        self.injections += 1
        return f"{moved(record['samples'], record['reserve_remaining'])}, {fraction_change(current, decision.real_fraction)}"

    def summary(self) -> dict:
        """What the guard did, as plain data (the report's ``guards`` entry): ``state``, ``injections``,
        ``cooldown_left``, ``config`` (its arguments), ``rules`` (each rule's settings, state, baseline and bound in
        force, :meth:`RuleState.summary <collapse_guard.callbacks.rules.RuleState.summary>`), ``events``, ``checks``."""
        config = ("action", "inject_fraction", "real_fraction_step", "max_injections", "cooldown", "strict",
                  "restore_best")
        return {
            "state": self.state,
            "injections": self.injections,
            "cooldown_left": self.cooldown_left,
            "config": {k: getattr(self, k) for k in config},
            "rules": [s.summary() for s in self.states],
            "events": [e.state_dict() for e in self.events],
            "checks": self.check_log.state_dict()["checks"],
        }

    # -- checkpointing --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {**self.book_state_dict(), **self.check_log.state_dict(), "state": self.state,
                "best_weights": self.best_weights}

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        guards = [cb for cb in trainer.callbacks if isinstance(cb, CollapseGuard)]
        if not guards or guards[0] is not self:  # one warning for all the guards of the Trainer
            return
        for guard in guards:  # before Lightning looks their states up (load_state_dict comes after this hook)
            fresh = adopt_older_state(checkpoint, guard.state_key, guard._legacy_state_key,
                                      older_state_keys(guard._generate_state_key, guard.rules, guard.action),
                                      guard.rules)
            if len(fresh) > 1:  # more than a rule added since: the defaults changed
                rank_zero_warn(f"CollapseGuard: the checkpoint holds this guard's state saved with an earlier version's "
                               f"default rules; its events and injections are restored, and the rules {fresh} start "
                               "their baselines afresh from the next check.")
        mine = {key for g in guards for key in (g.state_key, g._legacy_state_key)}
        saved = [k for k in (checkpoint.get("callbacks") or {}) if isinstance(k, str) and k.startswith("CollapseGuard")]
        orphans = [k for k in saved if k not in mine]
        if orphans:
            rank_zero_warn(
                f"the checkpoint holds the state of {len(orphans)} CollapseGuard(s) with rules that no guard of this "
                f"Trainer has ({orphans}); their baselines, patience counters and events are not restored. A guard's "
                "state is found by its rules and default action: resume with the same ones to continue it."
            )

    def load_state_dict(self, state_dict: dict) -> None:
        self.load_book_state_dict(state_dict)
        self.state = state_dict["state"]
        self.best_weights = state_dict.get("best_weights")
        self.check_log.load_state_dict(state_dict)  # a state saved before the log: no rows

