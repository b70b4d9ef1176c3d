"""``CollapseGuard``: act on collapse indicators the way ``EarlyStopping`` acts on a monitored metric."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from collapse_guard._compat import Callback, LightningModule, Trainer, rank_zero_info, rank_zero_warn
from collapse_guard.callbacks._base import CollapseMetricsProducer, require_mixed_datamodule, run_after_producers
from collapse_guard.callbacks.rules import ACTIONS, Rule, RuleState, Verdict

#: guard states logged as ``collapse/guard/state``
STATE_CODES = {"ok": 0, "warn": 1, "inject": 2, "stop": 3}


def default_rules() -> list[Rule]:
    """The rules ``CollapseGuard()`` uses when given none (chosen on the digits demo; see README).

    * held-out real accuracy more than 2% below its best so far, two checks running;
    * worst-class recall on held-out real more than 10% below its best so far, two checks running (the tail
      a collapsing model loses first);
    * effective number of predicted classes more than 5% below its best so far, two checks running.

    All three are relative to the best value so far, so the rising values of early training never fire them.
    """
    return [
        Rule("collapse/heldout_real/acc", mode="max", relative=0.02, patience=2, name="heldout_real_acc"),
        Rule("collapse/heldout_real/worst_class_recall", mode="max", relative=0.10, patience=2, name="worst_class"),
        Rule("collapse/heldout_real/eff_classes_ratio", mode="max", relative=0.05, patience=2, name="eff_classes"),
    ]


@dataclass
class GuardEvent:
    """One decision of the guard: which rule fired, on what value, against which bound, and what was done."""

    epoch: int
    global_step: int
    rule: str
    monitor: str
    value: float
    threshold: Optional[float]
    action: str
    reason: str


class CollapseGuard(Callback):
    r"""Reads logged collapse indicators at every check and warns, injects fresh real data, or stops.

    Like ``EarlyStopping``, it reads ``trainer.callback_metrics``; it runs after the callbacks that log
    ``collapse/`` metrics (it moves itself behind them), at the end of every training epoch. Each :class:`Rule`
    keeps a baseline, a bound and a patience counter; when rules fire, the strongest of their actions is taken:

    * ``"warn"``: a warning with the reason;
    * ``"inject"``: ``datamodule.inject(...)`` moves ``inject_fraction`` of the reserve into training and raises the
      real fraction by ``real_fraction_step``, from the next epoch on; it escalates to ``"stop"`` when neither
      more reserve nor a higher real fraction is left, or after ``max_injections`` injections;
    * ``"stop"``: ``trainer.should_stop = True``.

    Every firing is a :class:`GuardEvent` (epoch, rule, value, bound, action, reason) in :attr:`events`, logged as
    ``collapse/guard/events`` (count) and ``collapse/guard/state`` (0 ok, 1 warned, 2 injected, 3 stopped).
    The decision goes through ``strategy.reduce_boolean_decision`` and a broadcast from rank 0, so every rank
    takes the same action.

    Args:
        rules: the rules; default :func:`default_rules`.
        action: default action of rules that name none: ``"warn"``, ``"inject"`` or ``"stop"``.
        inject_fraction: share in ``(0, 1]`` of the initial reserve moved into training per injection.
        real_fraction_step: how much an injection raises the target real fraction, in ``[0, 1]``.
        max_injections: injections before a persisting collapse escalates to ``"stop"``.
        cooldown: checks after an action during which no further action is taken (the injection needs an epoch
            of training to show).
        strict: raise when a monitored metric was never logged.
        verbose: print every event.

    Raises:
        ValueError: for an unknown action or out-of-range numbers.
        TypeError: at set-up, when an ``"inject"`` rule has no ``MixedDataModule`` to inject into.
        RuntimeError: at a check, with ``strict=True``, when a monitored metric is not logged (the message lists
            the ``collapse/`` metrics that are).

    Example::

        guard = CollapseGuard(action="inject", rules=[Rule("collapse/heldout_real/acc", relative=0.02)])
        trainer = pl.Trainer(callbacks=[RatioMonitor(), HeldOutRealCheck(), guard])
        trainer.fit(model, datamodule=dm)
        print(guard.events)
    """

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
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"`action` must be one of {ACTIONS}, got {action!r}.")
        if not 0.0 < inject_fraction <= 1.0:
            raise ValueError(f"`inject_fraction` must be in (0, 1], got {inject_fraction!r}.")
        if not 0.0 <= real_fraction_step <= 1.0:
            raise ValueError(f"`real_fraction_step` must be in [0, 1], got {real_fraction_step!r}.")
        if max_injections < 0 or cooldown < 0:
            raise ValueError("`max_injections` and `cooldown` must be >= 0.")
        rules = list(default_rules() if rules is None else rules)
        if not rules:
            raise ValueError("`rules` is empty: give at least one Rule, or None for the default rules.")
        self.rules = rules
        self.action = action
        self.inject_fraction = inject_fraction
        self.real_fraction_step = real_fraction_step
        self.max_injections = max_injections
        self.cooldown = cooldown
        self.strict = strict
        self.verbose = verbose
        self.states = [RuleState(rule) for rule in rules]
        self.events: list[GuardEvent] = []
        self.injections = 0
        self.cooldown_left = 0
        self.state = "ok"

    @property
    def state_key(self) -> str:
        return f"CollapseGuard{{rules={[r.label for r in self.rules]}}}"

    def action_of(self, rule: Rule) -> str:
        return rule.action or self.action

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if any(self.action_of(r) == "inject" for r in self.rules):
            require_mixed_datamodule(trainer, f"{type(self).__name__} with action 'inject'")
        run_after_producers(trainer, self)

    # -- the check ------------------------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        verdicts = self._judge(trainer)
        fired = [v for v in verdicts if v.fired]
        local = max((ACTIONS.index(self.action_of(v.rule)) for v in fired), default=-1)
        any_fired = trainer.strategy.reduce_boolean_decision(bool(fired), all=False)
        chosen = int(trainer.strategy.broadcast(local, src=0)) if any_fired else -1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
        elif chosen >= 0:
            self._act(trainer, ACTIONS[chosen], fired)
        pl_module.log("collapse/guard/state", float(STATE_CODES[self.state]), prog_bar=True)
        pl_module.log("collapse/guard/events", float(len(self.events)))

    def _judge(self, trainer: Trainer) -> list[Verdict]:
        """Verdicts of the rules whose metric was measured at this epoch.

        A metric of a :class:`CollapseMetricsProducer` (``HeldOutRealCheck``, ``RatioMonitor``) is judged only at
        the epochs it was logged, so a check every few epochs is never judged twice on a stale value; any other
        logged metric (the module's own) is judged whenever it is in ``trainer.callback_metrics``.
        """
        metrics, epoch = trainer.callback_metrics, trainer.current_epoch
        producers = [cb for cb in trainer.callbacks if isinstance(cb, CollapseMetricsProducer)]
        verdicts, missing = [], []
        for state in self.states:
            key = state.rule.monitor
            producer = next((p for p in producers if p.logs(key)), None)
            if producer is not None and producer.logged_epoch(key) != epoch:
                if producer.ran_at(epoch):  # it measured this epoch, but not this key: a misnamed monitor
                    missing.append(key)
                continue
            if key not in metrics:
                missing.append(key)
                continue
            verdicts.append(state.check(float(torch.as_tensor(metrics[key]))))
        if missing and self.strict:
            logged = sorted(k for k in metrics if k.startswith("collapse/")) or sorted(metrics)
            raise RuntimeError(
                f"CollapseGuard monitors {missing}, which no callback or module logged by epoch {epoch}. "
                f"Logged now: {logged}. Add HeldOutRealCheck()/RatioMonitor() to the Trainer's callbacks, or fix "
                "the rule's `monitor` (or pass strict=False to skip rules whose metric is missing)."
            )
        return verdicts

    def _act(self, trainer: Trainer, action: str, fired: list[Verdict]) -> None:
        detail = ""
        if action == "inject":
            action, detail = self._inject(trainer, "; ".join(v.reason for v in fired))
        if action == "stop":
            trainer.should_stop = True
            detail = detail or "stopping training"
        for v in fired or [None]:
            base = v.reason if v else "a rule fired on another rank"
            reason = f"{base}; {detail}" if detail else base
            self.events.append(
                GuardEvent(
                    epoch=trainer.current_epoch,
                    global_step=trainer.global_step,
                    rule=v.rule.label if v else "remote",
                    monitor=v.rule.monitor if v else "",
                    value=v.value if v else math.nan,
                    threshold=v.bound if v else None,
                    action=action,
                    reason=reason,
                )
            )
        for state in self.states:
            state.reset_wait()
        self.cooldown_left = self.cooldown
        if self.state != "stop":
            self.state = action
        message = f"CollapseGuard epoch {trainer.current_epoch}: {action} — "
        message += "; ".join(v.reason for v in fired) or "a rule fired on another rank"
        message += f"; {detail}" if detail else ""
        if action == "warn":
            rank_zero_warn(message)
        elif self.verbose:
            rank_zero_info(message)

    def _inject(self, trainer: Trainer, reason: str) -> tuple[str, str]:
        """Inject reserve data and raise the real fraction, or escalate; returns (action taken, what was done)."""
        dm = trainer.datamodule
        if self.injections >= self.max_injections:
            return "stop", f"collapse persists after {self.injections} injection(s): stopping"
        current = dm.current_real_fraction()
        target = min(1.0, current + self.real_fraction_step)
        samples = min(dm.reserve_remaining, max(1, round(self.inject_fraction * len(dm.mixer.reserve_order))))
        if samples == 0 and target <= current:
            return "stop", f"no reserve left and the real fraction is already {current:.2f}: stopping"
        record = dm.inject(num_samples=samples, real_fraction=target, reason=reason)
        self.injections += 1
        detail = (
            f"injected {record['samples']} reserve samples "
            f"({record['reserve_remaining']} left), real fraction {current:.2f} -> {target:.2f} from next epoch"
        )
        return "inject", detail

    # -- checkpointing --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "rules": [s.state_dict() for s in self.states],
            "events": [asdict(e) for e in self.events],
            "injections": self.injections,
            "cooldown_left": self.cooldown_left,
            "state": self.state,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        for state, saved in zip(self.states, state_dict["rules"]):
            state.load_state_dict(saved)
        self.events = [GuardEvent(**e) for e in state_dict["events"]]
        self.injections = state_dict["injections"]
        self.cooldown_left = state_dict["cooldown_left"]
        self.state = state_dict["state"]
