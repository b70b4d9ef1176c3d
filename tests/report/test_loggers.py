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
