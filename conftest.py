"""Root pytest configuration: names every doctest may use without importing, and the files
that examples (doctests, the docs' code blocks) write kept under the test's ``tmp_path``."""

import tempfile

import pytest
import torch
import torch.nn.functional as F
from _pytest.doctest import DoctestItem
from torch import nn


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(torch=torch, F=F, nn=nn)


@pytest.fixture(autouse=True)
def _example_temp_files_in_tmp_path(request, monkeypatch):
    """Examples write with ``tempfile.mkdtemp()`` as a reader would; for a doctest or a test marked
    ``examples`` that lands in ``tmp_path``, removed with it, instead of model files and checkpoints
    left in /tmp."""
    if isinstance(request.node, DoctestItem) or request.node.get_closest_marker("examples"):
        monkeypatch.setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
