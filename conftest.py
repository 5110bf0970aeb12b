"""Root pytest configuration: names every doctest may use without importing, and a
private temporary directory per doctest so the files its example writes are removed."""

import shutil
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
def _doctest_temp_files_removed(request, monkeypatch):
    """Examples write with ``tempfile.mkdtemp()`` as a reader would; point it at a directory
    removed after the example, so a run does not leave model files and checkpoints in /tmp."""
    if not isinstance(request.node, DoctestItem):
        yield
        return
    root = tempfile.mkdtemp(prefix="diga-doctest-")
    monkeypatch.setattr(tempfile, "tempdir", root)
    yield
    shutil.rmtree(root, ignore_errors=True)
