"""Atomic writes and checkpoint loading."""

from __future__ import annotations

import json

import pytest
import torch

from diga.engine import atomic_save, atomic_write_json, get_rng_state, load_checkpoint, set_rng_state


def test_atomic_save_round_trip(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    atomic_save({"w": torch.arange(3)}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"v": 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_save({"v": Boom()}, path)
    assert load_checkpoint(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(bad)


def test_json(tmp_path):
    atomic_write_json(tmp_path / "r.json", {"iou": torch.tensor([0.5, 1.0]), "path": tmp_path})
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["iou"] == [0.5, 1.0] and data["path"] == str(tmp_path)


def test_rng_state_round_trip():
    state = get_rng_state()
    a = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), a)


def test_written_files_get_the_usual_permissions(tmp_path):
    """A temp file from mkstemp is 0o600; the renamed result must be what open() would give."""
    import os

    umask = os.umask(0o022)
    try:
        atomic_save({"v": 1}, tmp_path / "c.pt")
        atomic_write_json(tmp_path / "r.json", {"v": 1})
    finally:
        os.umask(umask)
    for name in ("c.pt", "r.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
