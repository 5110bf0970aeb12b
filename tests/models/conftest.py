"""Model tests run tiny inputs: one intra-op thread is faster than a contended thread pool."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    # On a shared 2-core machine, OpenMP workers spinning against other processes made
    # this directory ~6x slower at 64x64 inputs; restored afterwards for other tests.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
