"""Shared fixtures: devices (cpu always, cuda when present) and float dtypes."""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64])
def dtype(request) -> torch.dtype:
    return request.param


@pytest.fixture(params=[torch.float32, torch.float16, torch.bfloat16])
def low_dtype(request) -> torch.dtype:
    """Float dtypes components must accept (forward only where half is slow on CPU)."""
    return request.param


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
