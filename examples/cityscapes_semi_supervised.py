"""DiGA semi-supervised segmentation on Cityscapes: a labelled fraction plays the source, the rest the target.

    python examples/cityscapes_semi_supervised.py --root data/Cityscapes --split 1/16 --work-dir runs/ssl
    python examples/cityscapes_semi_supervised.py --root data/Cityscapes --labelled-list train_image_labeled_1-16.txt
    torchrun --nproc_per_node=4 examples/cityscapes_semi_supervised.py ...      # DDP

The split goes to <work-dir>/split/{labelled,unlabelled}.txt; then the warm-up on the labelled images
(HRNet-W48 + OCR by default, its auxiliary head weighted 0.1), pseudo-labels for the unlabelled ones,
centroids over every training image, one self-training round and evaluation on Cityscapes val. Every
default is the semi-supervised scripts' (docs/recipes.md); ``--help`` lists each flag.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diga.cli import script_main
from diga.engine.trainer_cli import run_semi_supervised_trainer


def main(argv: list[str] | None = None) -> dict:
    return run_semi_supervised_trainer(argv, description=__doc__)


if __name__ == "__main__":  # one line and exit status 2 on a bad flag or file, as `diga`
    sys.exit(script_main(main, prog=Path(__file__).name))
