"""The Trainer's loggers get more than scalars: under ``TensorBoardLogger`` each guard event as text and the
report's plots as figures, in the run's own event file."""
from __future__ import annotations

import pytest

from collapse_guard import CollapseGuard, CollapseReport, HeldOutRealCheck, RatioMonitor, Rule

from cg_testing import TinyMLP, make_mixed, make_trainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_tensorboard_run_holds_the_guard_events_as_text_and_the_report_as_figures(tmp_path):
    pytest.importorskip("tensorboard")
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="run")
    guard = CollapseGuard(rules=[Rule("collapse/real_fraction", mode="max", threshold=2.0, action="warn")], cooldown=0)
    trainer = make_trainer(max_epochs=2, callbacks=[RatioMonitor(), HeldOutRealCheck(), guard, CollapseReport()],
                           logger=logger, default_root_dir=str(tmp_path))
    trainer.fit(TinyMLP(), datamodule=make_mixed())
    assert len(guard.events) == 2

    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0, "images": 0}).Reload()
    texts = events.Tensors("collapse/guard/events/text_summary")
    assert [t.step for t in texts] == [e.global_step for e in guard.events]
    assert "CollapseGuard epoch 0: warn" in texts[0].tensor_proto.string_val[0].decode()
    assert {"collapse/report/real_fraction", "collapse/report/indicators"} <= set(events.Tags()["images"])
    assert (tmp_path / "run" / "version_0" / "collapse_report" / "report.json").exists()


def test_the_report_folder_holds_an_events_csv(tmp_path):
    import csv

    guard = CollapseGuard(rules=[Rule("collapse/real_fraction", mode="max", threshold=2.0, action="warn")], cooldown=0)
    report = CollapseReport(dirpath=str(tmp_path / "rep"))
    make_trainer(max_epochs=2, callbacks=[RatioMonitor(), guard, report]).fit(TinyMLP(), datamodule=make_mixed())
    rows = list(csv.DictReader((tmp_path / "rep" / "events.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [e.epoch for e in guard.events] == [0, 1]
    assert all(r["action"] == "warn" and r["monitor"] == "collapse/real_fraction" and float(r["bound"]) == 2.0
               for r in rows)
    assert rows[0]["reason"] == guard.events[0].reason


def _stand_in_logger(kind: str, folder):
    """A Lightning ``Logger`` whose class is named as MLflow's or W&B's, with the experiment API the report reads
    (neither package is installed here): an MLflow run's artifact URI, a W&B run's files folder."""
    from types import SimpleNamespace

    from pytorch_lightning.loggers.logger import Logger

    class Stand(Logger):
        name, version, run_id = "stand", 0, "r1"
        artifacts: list = []

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        @property
        def experiment(self):
            info = SimpleNamespace(artifact_uri=folder.as_uri())
            return SimpleNamespace(get_run=lambda run_id: SimpleNamespace(info=info), dir=str(folder),
                                   log_text=lambda *a: None,
                                   log_artifacts=lambda *a: Stand.artifacts.append(a))

    Stand.__name__ = kind
    return Stand()


@pytest.mark.parametrize("kind", ["MLFlowLogger", "WandbLogger"])
def test_the_report_goes_to_the_run_folder_of_an_mlflow_or_wandb_logger(kind, tmp_path):
    run = tmp_path / "mlruns" / "0" / "r1" / "artifacts" if kind == "MLFlowLogger" else tmp_path / "wandb" / "files"
    logger = _stand_in_logger(kind, run)
    make_trainer(max_epochs=1, callbacks=[RatioMonitor(), CollapseReport()], logger=logger,
                 default_root_dir=str(tmp_path)).fit(TinyMLP(), datamodule=make_mixed())
    assert (run / "collapse_report" / "report.json").exists() and (run / "collapse_report" / "events.csv").exists()
    assert not (tmp_path / "collapse_report").exists()
    assert type(logger).artifacts == []  # already among the run's artifacts: not copied onto itself
