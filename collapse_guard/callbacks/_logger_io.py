"""What the guard and the report hand to the Trainer's loggers beyond scalars: each guard event as text, the report's
figures and files, each in the form its logger keeps (TensorBoard text and figures, MLflow run artifacts, Weights &
Biases tables and images; a logger of another kind keeps the scalars ``pl_module.log`` gave it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional
from urllib.parse import urlparse
from urllib.request import url2pathname

from collapse_guard._compat import rank_zero_warn


def _kind(logger: Any) -> str:
    return type(logger).__name__


def log_text(loggers: Iterable[Any], key: str, text: str, step: int) -> None:
    """``text`` under ``key`` at ``step`` in every logger that keeps text (rank zero only: loggers write there).

    TensorBoard: ``SummaryWriter.add_text``; MLflow: a run artifact ``<key>/step_<step>.txt``; Weights & Biases: a
    table row. A logger failing here warns, never ends the fit.
    """
    for logger in loggers:
        try:
            kind = _kind(logger)
            if kind == "TensorBoardLogger":
                logger.experiment.add_text(key, text, global_step=step)
            elif kind == "MLFlowLogger":
                logger.experiment.log_text(logger.run_id, text, f"{key}/step_{step}.txt")
            elif kind == "WandbLogger":
                logger.log_text(key=key, columns=["step", "text"], data=[[step, text]])
        except Exception as err:  # noqa: BLE001 - a logger's failure must not end the fit
            rank_zero_warn(f"collapse_guard could not hand {key!r} to {_kind(logger)}: {type(err).__name__}: {err}")


def _figures(record: dict) -> dict:
    """The report's plots of ``record`` as matplotlib figures (name -> ``Figure``; plots without data left out)."""
    from matplotlib import rc_context

    from collapse_guard.report.plots import PLOTS

    with rc_context({"text.usetex": False}):
        drawn = {name: draw(record) for name, _, draw in PLOTS}
    return {name: fig for name, fig in drawn.items() if fig is not None}


def run_folder(loggers: Iterable[Any]) -> Optional[Path]:
    """The first logger's own folder of this run, where the report belongs, when it is not Lightning's ``log_dir``:
    an MLflow run's artifact folder (a local ``file:`` store; ``trainer.log_dir`` is the tracking folder of every
    run there), a Weights & Biases run's files folder. ``None``: use ``trainer.log_dir`` (TensorBoard and CSV
    loggers' ``version_N/``). Rank zero only (other ranks hold no experiment).

    Example::

        folder = run_folder(trainer.loggers) or Path(trainer.log_dir or trainer.default_root_dir)
    """
    logger = next(iter(loggers), None)
    try:
        if _kind(logger) == "MLFlowLogger":
            uri = urlparse(logger.experiment.get_run(logger.run_id).info.artifact_uri)
            return Path(url2pathname(uri.path)) if uri.scheme in ("", "file") else None
        if _kind(logger) == "WandbLogger":
            return Path(logger.experiment.dir)
    except Exception as err:  # noqa: BLE001 - the Trainer's log dir serves then
        rank_zero_warn(f"collapse_guard could not find {_kind(logger)}'s run folder ({type(err).__name__}: {err}); "
                       "the report goes under the Trainer's log dir.")
    return None


def log_report(loggers: Iterable[Any], folder: Path, record: dict, step: int) -> None:
    """The report of ``record`` to every logger that keeps more than scalars: TensorBoard its plots as figures
    (``add_figure``); MLflow the files of ``folder`` as run artifacts under ``collapse_report/``; Weights & Biases
    its plots as images. A logger failing here warns, never ends the fit."""
    loggers = list(loggers)
    figures = _figures(record) if any(_kind(lg) in ("TensorBoardLogger", "WandbLogger") for lg in loggers) else {}
    for logger in loggers:
        try:
            kind = _kind(logger)
            if kind == "TensorBoardLogger":
                for name, fig in figures.items():
                    logger.experiment.add_figure(f"collapse/report/{name}", fig, global_step=step, close=False)
            elif kind == "MLFlowLogger" and run_folder([logger]) not in (folder, folder.parent):  # not already there
                logger.experiment.log_artifacts(logger.run_id, str(folder), "collapse_report")
            elif kind == "WandbLogger":
                logger.log_image(key="collapse/report", images=list(figures.values()), caption=list(figures))
        except Exception as err:  # noqa: BLE001 - a logger's failure must not end the fit
            rank_zero_warn(f"collapse_guard could not hand the report to {_kind(logger)}: {type(err).__name__}: {err}")
