"""pytest set-up for the collapse_guard tests: quiet Lightning's advice for tiny CPU fits, one thread and a fixed
seed. The shared helpers live in the importable package ``cg_testing`` (``tests/cg_testing/``)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


def pytest_configure(config):
    # Lightning's advice for real training runs, noise for these tiny CPU fits
    for message in (
        "does not have many workers",
        "isinstance.treespec, LeafSpec",
        "You passed in a `val_dataloader` but have no `validation_step`",
        "Trying to infer the `batch_size` from an ambiguous collection",
    ):
        config.addinivalue_line("filterwarnings", f"ignore:.*{message}")


CORE_TEST_FILES = {
    "test_sampler.py", "test_datamodule.py", "test_rules.py", "test_guard.py", "test_callbacks_fit.py",
    "test_classification_indicators.py", "test_heldout_features.py", "test_report.py",
}


@pytest.fixture(autouse=True)
def _one_thread_and_seeded(request):
    """One CPU thread for every test (timing-independent and immune to oversubscription on a shared machine);
    for the core tests (the files above) also a fixed seed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if Path(request.node.path).name in CORE_TEST_FILES:
        torch.manual_seed(0)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


#: test files whose tests start processes of their own (two DDP ranks each): under pytest-xdist they run in one
#: worker, one after another (``--dist loadgroup``), so no more than two ranks compete with the other worker's test
XDIST_GROUPS = {"test_ddp.py": "ddp"}


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = XDIST_GROUPS.get(Path(item.path).name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
