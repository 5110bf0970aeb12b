"""Run a diga command in this process and SIGKILL it at one named point (for the kill-and-resume tests).

    python tests/engine/_kill_worker.py POINT -- diga ARGV...
    python tests/engine/_kill_worker.py POINT -- translator ARGV...   (examples/train_translator.py)

POINT is one of:
    after-checkpoint:FILE   the next training step after the checkpoint FILE was written
    pseudo-label:N          the N-th pseudo-label file, left half-written at its final name
    centroids:N             after N batches of the centroid pass
    evaluate:N              at the N-th evaluated batch
    checkpoint-write:FILE   FILE's temp file written in full, before the rename

The process kills itself (``SIGKILL``: no handler, no cleanup, as the OOM killer
or a pulled plug would), so the exit status is -9 exactly when the point was reached.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    kind, _, arg = point.partition(":")
    if kind == "after-checkpoint":
        import diga.engine.loop as loop
        import diga.engine.stages as stages
        import diga.engine.translator_training as translator

        armed = []

        def saving(obj, path, _save=loop.atomic_save):  # the one loop writes every last checkpoint
            out = _save(obj, path)
            if Path(path).name == arg:
                armed.append(path)
            return out
        loop.atomic_save = saving

        def guarded(function):
            def call(*args, **kwargs):
                if armed:
                    die()
                return function(*args, **kwargs)
            return call

        stages.run_step = guarded(stages.run_step)
        translator._check_batch = guarded(translator._check_batch)
    elif kind == "pseudo-label":
        import diga.data.io as io

        save, count = io.save_label, [0]

        def half_written(path, label, **kwargs):
            count[0] += 1
            out = save(path, label, **kwargs)
            if count[0] == int(arg):
                data = Path(path).read_bytes()
                Path(path).write_bytes(data[: len(data) // 2])
                die()
            return out

        io.save_label = half_written
    elif kind == "centroids":
        from diga.adapter import Adapter

        init = Adapter.init_centroids

        def killed_after(self, batches, **kwargs):
            def batches_then_kill():
                for i, batch in enumerate(batches):
                    if i == int(arg):
                        die()
                    yield batch
            return init(self, batches_then_kill(), **kwargs)

        Adapter.init_centroids = killed_after
    elif kind == "evaluate":
        from diga.metrics import ConfusionMatrix

        update, count = ConfusionMatrix.update, [0]

        def counted(self, *args, **kwargs):
            count[0] += 1
            if count[0] == int(arg):
                die()
            return update(self, *args, **kwargs)

        ConfusionMatrix.update = counted
    elif kind == "checkpoint-write":
        replace = os.replace

        def rename(src, dst, *args, **kwargs):
            if Path(dst).name == arg:
                die()
            return replace(src, dst, *args, **kwargs)

        os.replace = rename
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main(argv: list[str]) -> int:
    point, sep, program, *rest = argv
    if sep != "--" or program not in ("diga", "translator"):
        raise SystemExit(__doc__)
    arm(point)
    if program == "diga":
        from diga.cli import main as diga_main

        return diga_main(rest)
    sys.argv = [str(ROOT / "examples" / "train_translator.py"), *rest]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
