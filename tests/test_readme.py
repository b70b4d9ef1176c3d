"""The README's promises: the quickstart runs as written, and the demo prints the figures README shows."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_quickstart_runs_as_written(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    quickstart = _python_blocks(README.read_text())[0]
    namespace: dict = {}
    exec(compile(quickstart, "README quickstart", "exec"), namespace)
    trainer, guard = namespace["trainer"], namespace["guard"]
    assert trainer.current_epoch == 3
    assert 0.15 <= float(trainer.callback_metrics["collapse/real_fraction"]) <= 0.25 or guard.events


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
