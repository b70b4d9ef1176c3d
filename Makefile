PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: setup demo test bench

# torch first, pinned to the local CPU wheel, only when no torch is importable:
# an unpinned torch would pull several GB of CUDA packages.
setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install --disable-pip-version-check "torch==2.13.0"
	@$(PIP) install --disable-pip-version-check -q -e ".[dev]"

demo: setup
	$(PYTHON) -m collapse_guard.cli demo --out runs/demo

test: setup
	$(PYTHON) -m pytest -q

# the benchmarks of benchmarks/RESULTS.md, one after the other (about 12 min on 2 cores): detection, alternatives
# and mitigation; the callbacks' cost and the loader's throughput; the feature metrics against reference packages
bench: setup
	@$(PIP) install --disable-pip-version-check -q -e ".[bench]"
	$(PYTHON) benchmarks/detection.py
	$(PYTHON) benchmarks/cost.py
	$(PYTHON) benchmarks/bench_metrics.py
