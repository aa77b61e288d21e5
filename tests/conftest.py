"""Shared test set-up. Run with: .venv/bin/python -m pytest tests

Tests that need an optional framework skip with the reason when it is absent (detectron2 is not
on the package registries, so CI skips those; run them locally with detectron2 installed).
"""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (ROOT, os.path.join(ROOT, "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer tests (still run by default)")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """For modules of small tensors: extra intra-op threads only add synchronisation (on a busy
    2-core machine they made such tests 10-20x slower; one thread is as fast on an idle one).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
