"""collapse_guard from YAML through LightningCLI: the example config, rules, sources and schedules by class path,
command-line overrides, and the ``lightning.pytorch`` CLI with ``collapse_guard.lightning``."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

pytest.importorskip("jsonargparse")
from jsonargparse import ArgumentParser  # noqa: E402

import collapse_guard as cg  # noqa: E402
from collapse_guard import Rule  # noqa: E402
from collapse_guard.callbacks.heldout import default_batch_fn  # noqa: E402

from cg_testing import DIM, NUM_CLASSES, REAL_BASE, SYNTH_BASE, VAL_BASE, id_dataset  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "integration_examples" / "lightning_cli"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def example_cli(monkeypatch, tmp_path):
    """The example's ``cli_main``, run from a temporary directory (its ``runs/`` lands there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    spec = importlib.util.spec_from_file_location("lightning_cli_example_main", EXAMPLE / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cli_main


def test_example_config_fits(example_cli, tmp_path):
    """``main.py fit --config config.yaml``: the user's DataModule wrapped by class path, two synthetic sources (one
    a SyntheticSource with provenance), a schedule object, every callback with rules in both YAML forms."""
    cli = example_cli(["fit", "--config", str(EXAMPLE / "config.yaml"), "--trainer.max_epochs=2", *QUIET])
    trainer, dm = cli.trainer, cli.datamodule
    assert isinstance(dm, cg.MixedDataModule) and type(dm.real).__name__ == "DigitsDataModule"
    assert dm.source_names == ["real", "reserve", "gen10", "gen20"]
    assert dm.synthetic["gen10"].generation == 10 and dm.synthetic["gen10"].generator.startswith("ClassConditionalGMM")
    assert dm.real_fraction(0) == pytest.approx(0.9) and dm.real_fraction(8) == pytest.approx(0.0)
    assert dm.reserve == 0.3 and dm.holdout == "val"

    kinds = {type(cb).__name__: cb for cb in trainer.callbacks}
    assert {"RatioMonitor", "HeldOutRealCheck", "CollapseGuard", "CollapseReport"} <= set(kinds)
    guard = kinds["CollapseGuard"]
    assert [r.name for r in guard.rules] == ["heldout_real_acc", "acc_change", "class_change", "gap"]
    assert guard.rules[:3] == cg.default_rules()[:3]  # the default rules, spelled out
    assert all(isinstance(r, Rule) for r in guard.rules)
    assert guard.rules[3] == Rule("collapse/gap/acc", mode="min", threshold=0.25, action="warn", name="gap")
    assert trainer.current_epoch == 2

    metrics = trainer.callback_metrics
    for key in ("collapse/real_fraction", "collapse/heldout_real/acc", "collapse/features/recall", "collapse/gap/acc",
                "collapse/guard/state"):
        assert key in metrics, key
    assert float(metrics["collapse/real_fraction"]) == pytest.approx(0.9, abs=0.01)

    log_dir = Path(trainer.log_dir).resolve()  # relative to the working directory
    assert log_dir.is_relative_to(tmp_path.resolve())
    report = json.loads((log_dir / "collapse_report" / "report.json").read_text())
    assert [s["name"] for s in report["provenance"]["sources"]] == ["real", "reserve", "gen10", "gen20"]
    with open(log_dir / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert "collapse/heldout_real/worst_class_recall" in header
    assert (log_dir / "config.yaml").exists()  # LightningCLI saved the resolved config


def test_command_line_overrides(example_cli):
    """Values given on the command line keep their types: fractions stay numbers, callbacks can be appended."""
    cli = example_cli([
        "--config", str(EXAMPLE / "config.yaml"), "--data.init_args.real_fraction=0.4",
        "--data.init_args.holdout=0.25", "--data.init_args.synthetic_weights={gen10: 1, gen20: 3}",
        "--trainer.callbacks+=collapse_guard.CollapseReport", "--trainer.callbacks.dirpath=elsewhere",
        "--data.init_args.real.init_args.batch_size=32", "--data.init_args.synthetic.gen20.init_args.generation=3",
        "--data.init_args.synthetic.gen10.init_args.data.init_args.samples=50", *QUIET,
    ], run=False)
    dm = cli.datamodule
    assert dm.real.batch_size == 32 and dm.real.seed == 0  # nested values of class_path entries, one by one
    assert len(dm.synthetic["gen20"]) == 200 and len(dm.synthetic["gen10"].data) == 50
    assert dm.real_fraction == 0.4 and isinstance(dm.real_fraction, float)
    assert dm.holdout == 0.25 and isinstance(dm.holdout, float)
    assert dict(dm.synthetic_weights) == {"gen10": 1, "gen20": 3}
    reports = [cb for cb in cli.trainer.callbacks if isinstance(cb, cg.CollapseReport)]
    assert len(reports) == 2 and reports[0].dirpath is None and str(reports[1].dirpath) == "elsewhere"


def test_one_unnamed_synthetic_source_in_yaml_is_an_error(example_cli, tmp_path):
    """In YAML, synthetic sources are named (``synthetic: {name: {class_path: ...}}``)."""
    import yaml

    settings = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    settings["data"]["init_args"]["synthetic"] = {
        "class_path": "collapse_guard.SyntheticSource",
        "init_args": {"data": {"class_path": "models.SyntheticDigits", "init_args": {"generation": 2}}},
    }
    config = tmp_path / "one_source.yaml"
    config.write_text(yaml.safe_dump(settings))
    with pytest.raises((SystemExit, ValueError)):  # never read as sources named "class_path" and "init_args"
        cli = example_cli(["--config", str(config), *QUIET], run=False)
        cli.datamodule.setup("fit")


def guard_parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cg.CollapseGuard, "guard")
    return parser


def test_rules_from_yaml_in_both_forms():
    parser = guard_parser()
    cfg = parser.parse_string(
        "guard:\n"
        "  action: stop\n"
        "  rules:\n"
        "    - {monitor: collapse/heldout_real/acc, relative: 0.05, patience: 3}\n"
        "    - {monitor: collapse/heldout_real/worst_class_recall, sigmas: 2.0, min_change: 0.02}\n"
        "    - class_path: collapse_guard.Rule\n"
        "      init_args: {monitor: collapse/heldout_real/loss, mode: min, threshold: 2.0, baseline: first}\n"
    )
    guard = parser.instantiate(cfg).guard
    assert isinstance(guard, cg.CollapseGuard) and guard.action == "stop"
    assert guard.rules == [
        Rule("collapse/heldout_real/acc", relative=0.05, patience=3),
        Rule("collapse/heldout_real/worst_class_recall", sigmas=2.0, min_change=0.02),
        Rule("collapse/heldout_real/loss", mode="min", threshold=2.0, baseline="first"),
    ]
    assert parser.instantiate(parser.parse_string("guard: {}")).guard.rules == cg.default_rules()


def test_invalid_rule_in_yaml_is_an_error():
    parser = guard_parser()
    with pytest.raises(Exception, match="mode"):
        parser.instantiate(parser.parse_string("guard:\n  rules:\n    - {monitor: a/b, mode: up, relative: 0.1}\n"))


def test_every_public_class_is_configurable():
    """Every constructor argument of the public classes has a type jsonargparse resolves."""
    parser = ArgumentParser(exit_on_error=False)
    for i, cls in enumerate([cg.MixedDataModule, cg.RatioMonitor, cg.HeldOutRealCheck, cg.CollapseGuard,
                             cg.CollapseReport, cg.SyntheticSource, Rule]):
        parser.add_class_arguments(cls, f"c{i}", skip={"real", "monitor", "data"})
    cfg = parser.parse_string(
        "c0: {holdout: 0.2, reserve: 0.1, real_fraction: 0.3, verify_holdout: false, synthetic_weights: {a: 1}}\n"
        "c2: {every_n_epochs: 2, batch_fn: collapse_guard.callbacks.heldout.default_batch_fn}\n"
        "c4: {dirpath: /tmp/report, plots: false}\n"
    )
    assert cfg.c0.holdout == 0.2 and cfg.c0.verify_holdout is False and cfg.c0.real_fraction == 0.3
    assert cfg.c2.batch_fn is default_batch_fn and str(cfg.c4.dirpath) == "/tmp/report"


# -- the lightning.pytorch CLI ------------------------------------------------------------------------------------
L = pytest.importorskip("lightning.pytorch")


class IdDataset(Dataset):
    """``cg_testing.id_dataset`` as a class, so YAML can name it."""

    def __init__(self, n: int = 60, base: int = SYNTH_BASE, label: int = 0) -> None:
        self.data = id_dataset(n, base, label=label)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        return self.data[index]


class LRealDM(L.LightningDataModule):
    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        self.train_set, self.val_set = id_dataset(60, REAL_BASE), id_dataset(20, VAL_BASE)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)


class LTinyMLP(L.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.net = torch.nn.Sequential(torch.nn.Linear(DIM - 1, 16), torch.nn.ReLU(), torch.nn.Linear(16, NUM_CLASSES))

    def forward(self, x):
        return self.net(x[:, 1:])

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def lightning_config(tmp_path: Path, api: str) -> Path:
    module = __name__
    text = f"""
trainer:
  max_epochs: 2
  accelerator: cpu
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  num_sanity_val_steps: 0
  limit_val_batches: 0
  default_root_dir: {tmp_path}
  callbacks:
    - class_path: {api}.RatioMonitor
    - class_path: {api}.HeldOutRealCheck
      init_args: {{features: false}}
    - class_path: {api}.CollapseGuard
      init_args:
        action: warn
        rules: [{{monitor: collapse/heldout_real/acc, threshold: 2.0}}]
model:
  class_path: {module}.LTinyMLP
data:
  class_path: {api}.MixedDataModule
  init_args:
    real: {{class_path: {module}.LRealDM}}
    synthetic:
      g1: {{class_path: {module}.IdDataset, init_args: {{n: 60}}}}
    real_fraction: 0.25
    reserve: 0.25
    samples_per_epoch: 64
"""
    path = tmp_path / f"{api}.yaml"
    path.write_text(text)
    return path


def test_lightning_pytorch_cli_with_collapse_guard_lightning(tmp_path, monkeypatch):
    from lightning.pytorch.cli import LightningCLI

    import collapse_guard.lightning as cgl

    monkeypatch.chdir(tmp_path)
    config = lightning_config(tmp_path, "collapse_guard.lightning")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = LightningCLI(args=["fit", "--config", str(config)], save_config_kwargs={"overwrite": True})
    dm = cli.datamodule
    assert isinstance(dm, cgl.MixedDataModule) and isinstance(dm, L.LightningDataModule)
    assert isinstance(dm.real, LRealDM)
    assert list(dm.samples_by_source().values()) == [2 * 16, 0, 2 * 48]
    guard = next(cb for cb in cli.trainer.callbacks if isinstance(cb, cgl.CollapseGuard))
    assert [(e.epoch, e.action) for e in guard.events] == [(0, "warn")]  # then a check of cooldown
    assert "collapse/heldout_real/acc" in cli.trainer.callback_metrics


def test_lightning_pytorch_cli_rejects_pytorch_lightning_classes(tmp_path, monkeypatch, capsys):
    """Why ``collapse_guard.lightning`` exists: ``lightning.pytorch``'s CLI takes only its own namespace's classes."""
    from lightning.pytorch.cli import LightningCLI

    monkeypatch.chdir(tmp_path)
    config = lightning_config(tmp_path, "collapse_guard")
    with pytest.raises(SystemExit):
        LightningCLI(args=["fit", "--config", str(config)], run=False)
    assert "collapse_guard" in capsys.readouterr().err


def test_pytorch_lightning_cli_takes_collapse_guard_lightning_callbacks(example_cli):
    """``collapse_guard.lightning``'s callbacks are ``Callback``s of both namespaces."""
    import collapse_guard.lightning as cgl

    cli = example_cli(["--config", str(EXAMPLE / "config.yaml"),
                       "--trainer.callbacks+=collapse_guard.lightning.CollapseReport", *QUIET], run=False)
    assert any(isinstance(cb, cgl.CollapseReport) for cb in cli.trainer.callbacks)
    assert sys.modules.get("lightning.pytorch") is not None


def test_a_class_path_entry_read_as_named_sources_is_refused():
    real = id_dataset(40, REAL_BASE)
    dm = cg.MixedDataModule(real, {"class_path": id_dataset(20, SYNTH_BASE), "init_args": id_dataset(20, SYNTH_BASE)},
                            holdout=0.25)
    with pytest.raises(ValueError, match="Name the source"):
        dm.setup("fit")
