"""``CollapseReport``: write what the collapse_guard callbacks saw, at the end of a fit (or when it fails)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

from collapse_guard._compat import Callback, LightningModule, Trainer, rank_zero_warn
from collapse_guard.callbacks._logger_io import log_report, run_folder
from collapse_guard.callbacks.guard import CollapseGuard
from collapse_guard.callbacks.heldout import HeldOutRealCheck
from collapse_guard.callbacks.ratio import RatioMonitor
from collapse_guard.callbacks.source_check import SourceCheck
from collapse_guard.report.files import DEFAULT_SUBDIR
from collapse_guard.report.record import build_record, source_indicator_section
from collapse_guard.report.reference import load_reference
from collapse_guard.report.render import ON_ERROR, ReportResult, write_report


class CollapseReport(Callback):
    r"""Writes a report of the fit: a JSON record, a provenance manifest, plots, an HTML page and a summary.

    At the end of the fit (``on_fit_end``), and when the fit ends in an exception or an interrupt
    (``on_exception``: with what it has, status ``"failed"``, or ``"interrupted"`` for Ctrl-C and SIGTERM), it finds the other
    collapse_guard callbacks in ``trainer.callbacks`` by type and writes into :attr:`dirpath`:

    * ``report.json``: the record: the real fraction per epoch and source (``RatioMonitor``), the indicators of
      every check (``HeldOutRealCheck``) and each synthetic source's (``SourceCheck``), every ``CollapseGuard``'s
      rules with their baselines, bounds and state, its events with their reasons, the injections, the provenance
      (a ``SourceAudit``'s audit, the quarantines) and the final state (schema in :mod:`collapse_guard.report.record`);
    * ``provenance.json``: every training source of the ``MixedDataModule``: name, real or synthetic, generator
      and its parameters as given, generation, samples drawn and share of all training samples;
    * ``real_fraction.png``: the real fraction over training; ``indicators.png``: the indicators a guard rule
      reads, each rule's bound in force at each check as a step line, the values beyond it and those that fired
      marked, the bad direction in each title; ``indicators_other.png``: the other indicators; guard events
      marked in all, the reference run overlaid (matplotlib's Agg canvas; no display, no ``pyplot`` state);
    * ``report.html``: one self-contained page with all of it (plots as base64 data URIs, no external CSS/JS): a
      timeline of every check (real fraction, each monitored value and its bound, the rules that fired, the action,
      the guard's word), a legend of the indicators (what each measures, which way is bad), the other indicators
      folded, the comparison with the reference run;
    * a summary on the terminal: the last action and the health at the last check, a compact timeline, the
      rules, the events, the comparison (``rich`` tables with ``rich`` installed, plain text without).

    The Trainer's loggers get what each keeps beyond scalars (:mod:`collapse_guard.callbacks._logger_io`):
    TensorBoard the plots as figures, MLflow the report's files as run artifacts (``collapse_report/``), Weights &
    Biases the plots as images; ``CollapseGuard`` hands them each event's text as it happens.

    Any of the callbacks may be missing (a fit without a guard gets a report without rules and events; a fit
    without a ``MixedDataModule``, one without provenance). Only global rank zero writes and prints; it reads only
    what every rank holds, with no collective, so it cannot hang the other ranks. A failure while writing (a
    plotting error, a full disk) is a warning (:class:`~collapse_guard.report.ReportWarning`) and the other parts
    are still written: a report never ends the fit, nor touches its checkpoints or data. ``collapse-guard report
    DIRPATH`` re-renders plots, page and summary from ``report.json``. Under ``Trainer(fast_dev_run=...)`` nothing
    is written, as Lightning then writes no logs or checkpoints.

    Args:
        dirpath: folder of the report. Default: ``collapse_report/`` in the first logger's folder of this run:
            ``<trainer.log_dir>`` for TensorBoard and CSV loggers (``lightning_logs/version_N/``), the run's
            artifact folder for MLflow (a local store; else under ``trainer.log_dir``, the files then logged as
            artifacts), the run's files folder for Weights & Biases, ``default_root_dir`` without a logger.
        plots: write the two PNG plots.
        html: write ``report.html``.
        summary: print the ``rich`` summary on rank zero.
        on_error: ``"warn"`` (default: warn and go on) or ``"raise"`` (for tests and CI: a report error fails the
            fit at its end). An error in ``on_exception`` only ever warns, so it never hides the fit's own error.
        reference: another run's report to compare with (e.g. the same fit on real data only): its report folder,
            run folder or ``report.json``. Read here, with the checks of any record, so a bad one is an error
            before training; its indicators, real fraction and final state are kept in the record (``reference``).

    Attributes:
        record: the last record written (``None`` before), as saved in ``report.json``.
        result: the :class:`~collapse_guard.report.ReportResult` of the last write: files and errors.
        reference: the reference run as the record keeps it (:func:`~collapse_guard.report.load_reference`), or
            ``None``.

    Raises:
        ValueError: for an unknown ``on_error``; for a ``reference`` that cannot be read or is not a report (the
            message names it, and the field at fault).

    Example::

        report = CollapseReport(dirpath="runs/exp1/report", reference="runs/real_only/collapse_report")
        trainer = pl.Trainer(callbacks=[RatioMonitor(), HeldOutRealCheck(), CollapseGuard(), report])
        trainer.fit(model, datamodule=dm)
        print(report.record["final"]["guard_state"], report.result.files)
    """

    def __init__(
        self,
        dirpath: Optional[Union[str, "os.PathLike[str]"]] = None,
        plots: bool = True,
        html: bool = True,
        summary: bool = True,
        on_error: str = "warn",
        reference: Optional[Union[str, "os.PathLike[str]"]] = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
        try:  # now, not at the end of the fit: a wrong path costs no training
            self.reference = load_reference(reference) if reference is not None else None
        except ValueError as err:
            raise ValueError(f"CollapseReport(reference=...): {err}") from err
        self._dirpath_arg = dirpath
        self._resolved: Optional[Path] = Path(dirpath).expanduser() if dirpath is not None else None
        self.plots = plots
        self.html = html
        self.summary = summary
        self.on_error = on_error
        self.record: Optional[dict] = None
        self.result: Optional[ReportResult] = None

    @property
    def dirpath(self) -> Optional[Path]:
        """The report folder: the ``dirpath`` given, or (after set-up) the default under the Trainer's log dir."""
        return self._resolved

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit" and self._dirpath_arg is None:
            # every rank runs set-up: `trainer.log_dir` broadcasts rank 0's folder, so all agree on it; an MLflow or
            # W&B run's own folder instead (rank zero writes the report)
            log_dir = Path(trainer.log_dir or trainer.default_root_dir)
            own = run_folder(trainer.loggers) if trainer.is_global_zero else None
            self._resolved = (own or log_dir) / DEFAULT_SUBDIR

    def _folder(self, trainer: Trainer) -> Path:
        # before set-up (an error in the datamodule's setup): no collective here, rank 0 only
        return self._resolved or Path(trainer.default_root_dir) / DEFAULT_SUBDIR

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.write(trainer, status="completed")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # Ctrl-C, or SIGTERM (Lightning's SIGTERMException is a SystemExit): stopped from outside, not a failure
        status = "interrupted" if isinstance(exception, (KeyboardInterrupt, SystemExit)) else "failed"
        try:
            self.write(trainer, status=status, error=exception, on_error="warn")
        except Exception as err:  # noqa: BLE001 - never hide the fit's own exception
            rank_zero_warn(f"CollapseReport could not write the report of the failed fit: {type(err).__name__}: {err}")

    def write(
        self,
        trainer: Trainer,
        status: str = "completed",
        error: Optional[BaseException] = None,
        on_error: Optional[str] = None,
    ) -> Optional[ReportResult]:
        """Build the record from the Trainer's callbacks and datamodule and write the report (rank zero only).

        Returns:
            What was written and what failed, or ``None`` on other ranks and under ``fast_dev_run``.

        Raises:
            Exception: only with ``on_error="raise"``, the first error of a step.
        """
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return None
        on_error = on_error or self.on_error
        folder = self._folder(trainer)
        source_check = self._find(trainer, SourceCheck)
        try:
            record = build_record(
                trainer,
                ratio_monitor=self._find(trainer, RatioMonitor),
                check=self._find(trainer, HeldOutRealCheck),
                guards=[cb for cb in trainer.callbacks if isinstance(cb, CollapseGuard)],
                datamodule=trainer.datamodule,
                status=status,
                error=error,
                dirpath=str(folder),
                reference=self.reference,
                source_indicators=None if source_check is None else source_indicator_section(
                    source_check.history, source_check.every_n_epochs),
            )
        except Exception as err:  # noqa: BLE001 - the report must not end the fit
            if on_error == "raise":
                raise
            rank_zero_warn(f"CollapseReport could not gather the record ({type(err).__name__}: {err}); nothing written.")
            self.result = ReportResult(errors={"record": f"{type(err).__name__}: {err}"})
            return self.result
        self.record = record
        self.result = write_report(
            record, folder, plots=self.plots, html=self.html, summary=self.summary, on_error=on_error
        )
        log_report(trainer.loggers, folder, record, trainer.global_step)
        return self.result

    @staticmethod
    def _find(trainer: Trainer, kind: type) -> Any:
        return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)
