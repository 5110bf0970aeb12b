"""DiGA, GTA5 -> Cityscapes: warm-up, pseudo-labels, centroids, two self-training rounds, evaluation.

    python examples/gta_to_cityscapes.py --source-root data/GTA5 --target-root data/Cityscapes \\
        --work-dir runs/gta5 [--preset tiny] [--resume] [--amp]
    torchrun --nproc_per_node=4 examples/gta_to_cityscapes.py ...      # DDP

Every default is the paper's recipe (docs/recipes.md); ``--help`` lists each flag.
"""

from __future__ import annotations

import argparse

from diga.engine.data_specs import benchmark_data
from diga.engine.recipes import get_recipe
from diga.engine.trainer_cli import add_trainer_args, parse_with_config, run_trainer

BENCHMARK = "gta5"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--source-root", required=True, help="GTA5 folder with images/ and labels/")
    data.add_argument("--target-root", required=True, help="Cityscapes folder with leftImg8bit/ and gtFine/")
    data.add_argument("--source-list", default=None, help="optional list of GTA5 image names to use")
    data.add_argument("--target-list", default=None, help="optional list of Cityscapes train images")
    return add_trainer_args(parser, paper=get_recipe(BENCHMARK, "paper"))


def main(argv: list[str] | None = None) -> dict:
    args = parse_with_config(make_parser(), argv)
    return run_trainer(args, benchmark=BENCHMARK, make_data=lambda a, recipe: benchmark_data(
        BENCHMARK, recipe, source_root=a.source_root, target_root=a.target_root, seed=a.seed,
        source_list=a.source_list, target_list=a.target_list,
        rare_class_sampling=a.rare_class_sampling, work_dir=a.work_dir,
    ))


if __name__ == "__main__":
    main()
