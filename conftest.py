"""Root pytest configuration: names every doctest may use without importing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(torch=torch, F=F, nn=nn)
