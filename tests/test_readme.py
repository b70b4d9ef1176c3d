"""The README's promises: the quickstart runs as written, and the demo prints the figures README shows."""
import re
from pathlib import Path

import pytest
import torch

from collapse_guard import RatioMonitor

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_quickstart_runs_as_written(tmp_path, monkeypatch):
    """What the quickstart says: three epochs, ``real_fraction=0.2`` the share of real samples in every epoch's
    batches until the guard injects (then the raised share from the next epoch on), the reserve withheld until then,
    and the logged ``collapse/real_fraction`` the last epoch's share."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)
    quickstart = _python_blocks(README.read_text())[0]
    namespace: dict = {}
    exec(compile(quickstart, "README quickstart", "exec"), namespace)
    trainer, guard, dm = namespace["trainer"], namespace["guard"], namespace["dm"]
    assert trainer.current_epoch == 3
    history = next(cb for cb in trainer.callbacks if isinstance(cb, RatioMonitor)).history
    first_injection = min((e.epoch for e in guard.events if e.action == "inject"), default=3)
    for row in history:
        if row["epoch"] <= first_injection:
            # to within one sample a batch of 64 (0.2 * 64 = 12.8 real samples)
            assert row["real_fraction_target"] == pytest.approx(0.2)
            assert row["real_fraction"] == pytest.approx(0.2, abs=1 / 64)
            assert row["samples"]["reserve"] == 0  # withheld for injection
        else:
            assert row["real_fraction_target"] > 0.2
            assert row["real_fraction"] == pytest.approx(row["real_fraction_target"], abs=1 / 64)
    assert float(trainer.callback_metrics["collapse/real_fraction"]) == pytest.approx(history[-1]["real_fraction"])
    assert [e["epoch"] for e in dm.injections] == sorted({e.epoch for e in guard.events if e.action == "inject"})


def test_readme_demo_figures_match_the_demo(capsys):
    """Every row of the README's demo output is printed by the full demo (same seed, same figures)."""
    from collapse_guard.demo import run_demo

    readme = README.read_text()
    block = readme.split("It prints, as measured")[1].split("```")[1]
    run_demo(out=None)
    printed = capsys.readouterr().out
    normalise = lambda s: [" ".join(line.split()) for line in s.strip().splitlines() if line.strip()]
    printed_lines = set(normalise(printed))
    for line in normalise(block):
        assert line in printed_lines, f"README line not printed by the demo: {line!r}"
