"""Fixtures (the device, a seed per test) and the `slow` marker; the helpers are in helpers.py."""
import os
import sys
import zlib

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # grid_encoder
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # helpers

from helpers import DEVICES  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: compiles the kernels from nothing (deselect with -m 'not slow')")


@pytest.fixture(scope="session", autouse=True)
def _float64_cpu_kernels():
    """Loads the float64 CPU kernels (built on first use) up front, for the tests that call the operators directly;
    test_packaging checks that grid_sample's first call loads them."""
    from grid_encoder import _build

    _build.load_on_use("cpu64")


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed(request):
    """A different, reproducible seed for every test."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
