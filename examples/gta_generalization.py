"""DiGA domain generalisation, GTA5 -> {Cityscapes, BDD100k, Mapillary}: the warm-up alone, on GTA5 alone.

    python examples/gta_generalization.py --source-root data/GTA5 --cityscapes-root data/Cityscapes \\
        --bdd-root data/bdd100k --mapillary-root data/mapillary --work-dir runs/dg [--preset tiny] [--resume]
    torchrun --nproc_per_node=4 examples/gta_generalization.py ...      # DDP

No target image is seen in training. The final model is evaluated on every target given, each at the
scripts' size (Cityscapes 1024 x 2048, BDD100k 720 x 1280, Mapillary resized to 1080 x 1920; full and half
scale, max of logits): one row per target and their mean in <work-dir>/results.json. Every default is
the DG script's (docs/recipes.md); ``--help`` lists each flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diga.cli import script_main
from diga.engine.trainer_cli import run_generalization_trainer


def main(argv: list[str] | None = None) -> dict:
    return run_generalization_trainer(argv, description=__doc__)


if __name__ == "__main__":  # one line and exit status 2 on a bad flag or file, as `diga`
    sys.exit(script_main(main, prog=Path(__file__).name))
