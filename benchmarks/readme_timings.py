"""Wall time of every command whose time the README states, with the machine's load before and after each.

Runs each command as the README writes it (from the repository root, or the folder it ``cd`` s into), one after the
other, output discarded, and prints a table: command, exit status, wall seconds, the 1-minute load average before
and after. The README's timings are re-measured with it; state the load beside a timing.

Usage::

    python benchmarks/readme_timings.py            # every command (about 6 min on 2 cores at load 1)
    python benchmarks/readme_timings.py --only demo,wrap
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

#: name -> (folder relative to the repository root, command)
COMMANDS = {
    "demo": (".", [PY, "-m", "collapse_guard.cli", "demo", "--out", "runs/demo"]),
    "demo_quick": (".", [PY, "-m", "collapse_guard.cli", "demo", "--quick", "--out", "runs/demo_quick"]),
    "wrap": (".", [PY, "integration_examples/wrap_datamodule.py"]),
    "wrap_quick": (".", [PY, "integration_examples/wrap_datamodule.py", "--quick"]),
    "cli": ("integration_examples/lightning_cli", [PY, "main.py", "fit", "--config", "config.yaml"]),
    "hf": (".", [PY, "integration_examples/hf_datasets.py"]),
    "hf_quick": (".", [PY, "integration_examples/hf_datasets.py", "--quick"]),
    "lm": (".", [PY, "integration_examples/language_model.py"]),
    "lm_quick": (".", [PY, "integration_examples/language_model.py", "--quick"]),
    "regression": (".", [PY, "integration_examples/regression_diabetes.py"]),
    "regression_quick": (".", [PY, "integration_examples/regression_diabetes.py", "--quick"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated names of COMMANDS (default: all)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(COMMANDS)
    print(f"{os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(f"{'command':<18} {'exit':>4} {'wall s':>7} {'load before':>11} {'load after':>10}")
    for name in names:
        folder, command = COMMANDS[name]
        before = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT / folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        print(f"{name:<18} {done.returncode:>4} {wall:>7.1f} {before:>11.1f} {os.getloadavg()[0]:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
