"""A run's guards: one run per work dir, a stop on a diverging loss, a failed checkpoint write."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import diga.engine.checkpoint as checkpoint_module
import diga.engine.stages as stages
from diga.cli import main
from diga.data.shift_files import write_shift_folders
from diga.engine.checkpoint import WriteError, atomic_save, load_checkpoint
from diga.engine.guards import DivergenceGuard, TrainingDiverged, WorkDirBusy, work_dir_lock
from tests.test_cli import adapt_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shift(tmp_path_factory):
    return write_shift_folders(tmp_path_factory.mktemp("shift"), source_items=3, target_items=2, val_items=2,
                               size=(48, 64))


def adapt(shift: Path, work: Path, *extra: str) -> list[str]:
    return adapt_args(shift, work, "--warmup-steps", "4", "--rounds", "1", *extra)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


class TestWorkDirLock:
    def test_a_second_lock_on_a_held_dir_fails_and_frees_on_exit(self, tmp_path):
        with work_dir_lock(tmp_path):
            with pytest.raises(WorkDirBusy, match=f"--work-dir {tmp_path} is in use .*pid {os.getpid()}"):
                with work_dir_lock(tmp_path):
                    pass
        with work_dir_lock(tmp_path):  # released: taken again at once
            pass
        with work_dir_lock(tmp_path, enabled=False) as lock:
            assert lock is None

    def test_a_live_run_stops_a_second_one_and_a_killed_one_leaves_nothing_stuck(self, shift, tmp_path, capsys):
        work = tmp_path / "run"
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; from diga.engine.guards import work_dir_lock\n"
             f"with work_dir_lock({str(work)!r}):\n    print('held', flush=True); time.sleep(120)"],
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            start = time.monotonic()
            assert main(adapt(shift, work)) == 2
            assert time.monotonic() - start < 10  # at once: before any model is built
            line = one_error_line(capsys)
            assert f"--work-dir {work} is in use by another live diga run (pid {holder.pid})" in line, line
            assert not (work / "config.json").exists() and not (work / "checkpoints").exists()
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
        with work_dir_lock(work):  # the killed holder's lock went with it
            pass


class TestDivergenceGuard:
    def test_finite_losses_pass_and_a_non_finite_one_stops(self):
        guard = DivergenceGuard("self_training_2")
        guard.check(1, torch.tensor(1.5))
        for bad in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(TrainingDiverged, match=r"stage 'self_training_2' diverged at step 7: the loss is"):
                guard.check(7, torch.tensor(bad))

    def test_under_a_scaler_only_a_run_of_skipped_steps_stops(self):
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        guard = DivergenceGuard("warmup", scaler=scaler, max_skipped=3)

        def step(n: int, overflow: bool) -> None:
            loss = model(torch.ones(1, 2)).sum() * (float("inf") if overflow else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
            guard.check(n, loss)

        for n, overflow in enumerate([True, True, False, True, True], start=1):  # never 3 in a row
            step(n, overflow)
        assert guard.skipped == 2 and guard.skipped_total == 4
        with pytest.raises(TrainingDiverged, match=r"stage 'warmup' diverged at step 6: .*skipped the last 3 steps"):
            step(6, True)
        assert all(torch.isfinite(p).all() for p in model.parameters())  # the scaler never applied them

    def test_bad_setting(self):
        with pytest.raises(ValueError, match="max_skipped"):
            DivergenceGuard("warmup", max_skipped=0)


def test_a_nan_loss_stops_the_run_naming_stage_and_step_and_keeps_the_last_checkpoint(shift, tmp_path, capsys,
                                                                                      monkeypatch):
    run_step, calls = stages.run_step, []

    def nan_at_step_3(*args, **kwargs):
        out = run_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(stages, "run_step", nan_at_step_3)
    work = tmp_path / "run"
    assert main(adapt(shift, work)) == 1
    line = one_error_line(capsys)
    assert line.startswith("diga: stopped: stage 'warmup' diverged at step 3: the loss is nan"), line
    last = load_checkpoint(work / "checkpoints" / "warmup_last.pt")
    assert last["step"] == 2 and not (work / "checkpoints" / "warmup_final.pt").exists()
    weights = [v for k, v in last["adapter"].items() if k.startswith("student.") and torch.is_tensor(v)]
    assert weights and all(torch.isfinite(v).all() for v in weights if v.is_floating_point())


def test_a_full_disk_in_a_checkpoint_keeps_the_previous_one_and_says_why(shift, tmp_path, capsys, monkeypatch):
    """The disk fills while torch.save writes the second checkpoint: torch's zip writer swallows the OSError
    (it raises "RuntimeError: unexpected pos"); the run still ends in the one documented line, status 1."""
    import diga._io as private_io
    from tests.engine.test_checkpoint import full_disk_after

    real, seen = private_io._open_temp, []

    def open_temp(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        seen.append(name)
        if ".warmup_last.pt." in name and sum(".warmup_last.pt." in n for n in seen) == 2:
            return full_disk_after(4096)(fd)
        return real(fd)

    monkeypatch.setattr(private_io, "_open_temp", open_temp)
    work = tmp_path / "run"
    assert main(adapt(shift, work)) == 1
    line = one_error_line(capsys)
    last = work / "checkpoints" / "warmup_last.pt"
    assert line == f"diga: stopped: cannot write {last}: No space left on device (the previous file is intact)"
    assert load_checkpoint(last)["step"] == 2  # the step-2 checkpoint, readable
    assert sorted(p.name for p in last.parent.iterdir()) == ["warmup_last.pt"]  # no temp file left


def test_a_real_write_limit_stops_the_console_script_in_one_line(shift, tmp_path):
    """The kernel refuses the write (a file-size limit: EFBIG, as ENOSPC would): ``python -m diga`` ends in one
    line, status 1, nothing half-written."""
    work = tmp_path / "run"
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); from diga.cli import main; "
            f"sys.exit(main({adapt(shift, work, '--warmup-steps', '2')!r}))")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT),
                          "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    last = work / "checkpoints" / "warmup_last.pt"
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [f"diga: stopped: cannot write {last}: File too large (nothing was "
                                                "written)"], proc.stderr[-2000:]
    assert not any(p.name.endswith(".tmp") for p in work.rglob("*")) and not last.exists()


def test_atomic_save_failure_on_a_new_file(tmp_path, monkeypatch):
    def fail(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.torch, "save", fail)
    with pytest.raises(WriteError, match=r"cannot write .*new.pt: No space left on device \(nothing was written\)"):
        atomic_save({"a": 1}, tmp_path / "new.pt")
    assert list(tmp_path.iterdir()) == []
