"""DiGA, SYNTHIA -> Cityscapes (16 classes; the 13-class mIoU is reported too): warm-up,
pseudo-labels, centroids, two self-training rounds, evaluation.

    python examples/synthia_to_cityscapes.py --source-root data/SYNTHIA-RAND-CITYSCAPES \\
        --target-root data/Cityscapes --work-dir runs/synthia [--preset tiny] [--resume] [--amp]
    torchrun --nproc_per_node=4 examples/synthia_to_cityscapes.py ...      # DDP

Every default is the paper's recipe (docs/recipes.md); ``--help`` lists each flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diga.cli import script_main
from diga.engine.trainer_cli import run_benchmark_trainer

BENCHMARK = "synthia"


def main(argv: list[str] | None = None) -> dict:
    return run_benchmark_trainer(BENCHMARK, argv, description=__doc__)


if __name__ == "__main__":  # one line and exit status 2 on a bad flag or file, as `diga`
    sys.exit(script_main(main, prog=Path(__file__).name))
