"""Train DiGA's learned source -> target image translator (stage 0).

One process (the same as ``diga translate ...``)::

    python examples/train_translator.py --source gta5 --source-root data/GTA5 \\
        --target cityscapes --target-root data/Cityscapes --work-dir runs/translator

Several GPUs: ``torchrun --nproc_per_node=4 examples/train_translator.py ...``
(``--batch-size`` is per GPU). A killed run continues with ``--resume`` from
``<work-dir>/checkpoints/translator_last.pt``. The result,
``<work-dir>/checkpoints/translator_final.pt``, loads with
``diga.translation.LearnedTranslator.from_checkpoint`` and plugs into
DiGA as its ``translator``.

Folder datasets: ``--source folder`` reads ``<root>/images`` and
``<root>/labels`` (label files in training ids, paired by file stem);
``--target folder`` reads every image under ``<root>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diga.cli import script_main
from diga.engine import translator_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return translator_cli.parse_args(argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":  # one line and exit status 2 on a bad flag or file, as `diga`
    sys.exit(script_main(lambda argv: translator_cli.main(argv, description=__doc__.split("\n\n")[0]),
                         prog=Path(__file__).name))
