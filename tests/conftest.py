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


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed(request):
    """A different, reproducible seed for every test."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
