PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: setup demo test test-slow wheel-check ci bench

# torch first, pinned to the local CPU wheel, only when no torch is importable:
# an unpinned torch would pull several GB of CUDA packages.
setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install --disable-pip-version-check "torch==2.13.0"
	@$(PIP) install --disable-pip-version-check -q -e ".[dev]"

demo: setup
	$(PYTHON) -m collapse_guard.cli demo --out runs/demo

# pytest-xdist workers of `make test` and `make test-slow` (the machine's 2 cores); PYTEST_JOBS=0: one process.
# The DDP tests (tests/test_ddp.py, two ranks each) share one worker (--dist loadgroup, tests/conftest.py).
PYTEST_JOBS ?= 2
XDIST = -n $(PYTEST_JOBS) --dist loadgroup

test: setup
	$(PYTHON) -m pytest -q $(XDIST)

# the slow reproductions (docs/self_consuming_loops.md: the VAE and character-LM loops, oracle O6 at full scale);
# the VAE test runs its 3 seeds in 3 processes of its own
test-slow: setup
	$(PYTHON) -m pytest -q -m slow $(XDIST) --durations=5 tests/reproductions

# the wheel, installed without dependencies into a fresh venv (system site-packages visible) and imported from there
wheel-check:
	bash .ci/wheel_check $(PYTHON)

# what CI runs on a clean clone (.ci/run): make test, make test-slow, make wheel-check
ci:
	bash .ci/run

# the benchmarks of benchmarks/RESULTS.md, one after the other (about 12 min on 2 cores): detection, alternatives
# and mitigation; the callbacks' cost and the loader's throughput; the feature metrics against reference packages
bench: setup
	@$(PIP) install --disable-pip-version-check -q -e ".[bench]"
	$(PYTHON) benchmarks/detection.py
	$(PYTHON) benchmarks/cost.py
	$(PYTHON) benchmarks/bench_metrics.py
