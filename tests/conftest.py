import os
from pathlib import Path

import socket

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Library tests use small tensors: one intra-op thread is faster than two on a 2-core machine and
# immune to the 10-50x slowdowns of spin-waiting OpenMP threads when the other core is busy.
# (Notebooks run in their own kernels and are not affected.)
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def no_network(monkeypatch):
    """Fail any test whose code opens a network connection (data must ship offline)."""
    def refuse(*args, **kwargs):
        raise AssertionError("dlmi.data must not touch the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
