"""A CPU ``torchrun --nproc_per_node=2`` (gloo) self-training run: ranks agree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("_ddp_self_training.py")


def test_torchrun_two_ranks_agree(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parents[2])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(SCRIPT), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "ranks.pt")
    for key in ("centroids", "teacher", "student"):
        assert torch.equal(r0[key], r1[key]), key
    assert (tmp_path / "checkpoints" / "self_training_final.pt").exists()
