"""Atomic writes and checkpoint loading."""

from __future__ import annotations

import json

import pytest
import torch

from diga.engine.checkpoint import atomic_save, atomic_write_json, get_rng_state, load_checkpoint, set_rng_state
from tests.pickles import RunsCode


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



@pytest.mark.parametrize("kind", ["resume", "translator", "centroids"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, kind):
    """Resume checkpoints, translator files and centroid files all load as plain data only."""
    from diga.translation import LearnedTranslator

    marker = tmp_path / "pwned"
    path = tmp_path / f"{kind}.pt"
    torch.save({"step": 2, "generator_config": RunsCode(marker), "adapter": {}}, path)
    with pytest.raises(ValueError, match=rf"refused to load checkpoint .*{kind}.pt: it asks to run posix.system"):
        if kind == "translator":
            LearnedTranslator.from_checkpoint(path)
        else:
            load_checkpoint(path)
    assert not marker.exists()


def test_empty_and_truncated_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    atomic_save({"w": torch.zeros(100)}, good)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"empty.pt is empty \(0 bytes\)"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(ValueError, match=r"cannot read checkpoint .*cut.pt: truncated or not a torch checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


def test_checkpoints_of_earlier_versions_still_load(tmp_path):
    """diga 0.1 stored ``torch.__version__`` (a ``TorchVersion``) in run configs: allow-listed."""
    path = tmp_path / "old.pt"
    torch.save({"config": {"versions": {"torch": torch.__version__}}}, path)
    assert load_checkpoint(path)["config"]["versions"]["torch"] == str(torch.__version__)


def test_json_is_strict_undefined_numbers_are_null(tmp_path):
    """NaN (an IoU of a class never seen) is not JSON: every reader must be able to load what diga writes."""
    import numpy as np

    atomic_write_json(tmp_path / "r.json", {"miou": float("nan"), "iou": torch.tensor([0.5, float("nan")]),
                                            "loss": float("-inf"), "n": np.float32(np.inf), "ok": 1.5})

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert data == {"miou": None, "iou": [0.5, None], "loss": None, "n": None, "ok": 1.5}


def full_disk_after(limit: int):
    """A temp-file factory whose writes fail as a full disk does once ``limit`` bytes are written."""
    import errno
    import os

    import diga._io as io_module

    class Full(io_module._TempFile):
        written = 0

        def write(self, data):
            if self.written + len(data) > limit:
                try:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                except OSError as err:
                    self.error = self.error or err
                    raise
            self.written += len(data)
            return super().write(data)

    return lambda fd: Full(fd, "wb")


def test_a_full_disk_inside_torch_save_is_a_write_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    """torch.save's zip writer swallows the OSError ("unexpected pos"): the error still names the file and cause."""
    import diga._io as io_module
    from diga.engine.checkpoint import WriteError

    path = tmp_path / "ckpt.pt"
    atomic_save({"w": torch.zeros(10)}, path)
    monkeypatch.setattr(io_module, "_open_temp", full_disk_after(1000))
    with pytest.raises(WriteError, match=r"cannot write .*ckpt.pt: No space left on device \(the previous file"):
        atomic_save({"w": torch.zeros(100_000)}, path)
    with pytest.raises(WriteError, match=r"cannot write .*r.json: No space left on device"):
        atomic_write_json(tmp_path / "r.json", {"x": "y" * 5000})
    assert torch.equal(load_checkpoint(path)["w"], torch.zeros(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
