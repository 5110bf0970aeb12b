"""Train DiGA's learned source -> target image translator (stage 0).

One process::

    python examples/train_translator.py --source gta5 --source-root data/GTA5 \\
        --target cityscapes --target-root data/Cityscapes --work-dir runs/translator

Several GPUs: ``torchrun --nproc_per_node=4 examples/train_translator.py ...``
(``--batch-size`` is per GPU). A killed run continues from
``<work-dir>/checkpoints/translator_last.pt``. The result,
``<work-dir>/checkpoints/translator_final.pt``, loads with
``diga.models.translator.LearnedTranslator.from_checkpoint`` and plugs into
DiGA as its ``translator``.

Folder datasets: ``--source folder`` reads ``<root>/images`` and
``<root>/labels`` (label files in training ids, paired by file stem);
``--target folder`` reads every image under ``<root>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diga.data import (
    GTA5,
    Cityscapes,
    PairedCompose,
    RandomHorizontalFlip,
    RandomScaleCrop,
    SegmentationFolder,
    Synthia,
)
from diga.engine import cleanup_distributed, setup_distributed
from diga.engine.guards import work_dir_lock
from diga.engine.translator_training import TranslatorConfig, train_translator
from diga.losses.translator_losses import vgg19_features

PAPER = TranslatorConfig.preset("paper")
TINY = TranslatorConfig.preset("tiny")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Defaults marked 'preset' come from --preset (paper / tiny values shown).",
    )
    p.add_argument("--source", choices=("gta5", "synthia", "folder"), default="gta5",
                   help="source dataset layout (default: gta5; paper: gta5)")
    p.add_argument("--source-root", type=Path, required=True, help="source dataset folder (required)")
    p.add_argument("--target", choices=("cityscapes", "folder"), default="cityscapes",
                   help="target dataset layout (default: cityscapes; paper: cityscapes, train split)")
    p.add_argument("--target-root", type=Path, required=True, help="target dataset folder (required)")
    p.add_argument("--work-dir", type=Path, required=True,
                   help="run folder: checkpoints/, log.jsonl, images/ (required)")
    p.add_argument("--preset", choices=("paper", "tiny"), default="paper",
                   help="settings preset: 'paper' (the released script) or 'tiny' (a CPU smoke run) "
                        "(default: paper)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps (default: preset, {PAPER.steps} / {TINY.steps}; paper: {PAPER.steps})")
    p.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help=f"training crop, divisible by 4 (default: preset, {PAPER.crop_size[0]} "
                        f"{PAPER.crop_size[1]} / {TINY.crop_size[0]} {TINY.crop_size[1]}; paper: 512 896)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"images per domain, per GPU and step (default: preset, {PAPER.batch_size} / "
                        f"{TINY.batch_size}; paper: 2, one low- and one full-resolution image)")
    p.add_argument("--device", default="auto",
                   help="'auto' (CUDA when available), 'cpu' or 'cuda' (default: auto; paper: cuda)")
    p.add_argument("--seed", type=int, default=0, help="seeds sampling, augmentation and weights (default: 0)")
    p.add_argument("--amp", choices=("off", "bf16", "fp16"), default="off",
                   help="mixed precision (default: off; paper: off)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from <work-dir>/checkpoints/translator_last.pt if present (default: on)")
    p.add_argument("--perceptual-weights", type=Path, default=None, metavar="PATH",
                   help="local torchvision VGG19 weight file (vgg19-dcbb9e9d.pth) for the perceptual loss; "
                        "nothing is downloaded (default: none, perceptual loss off; paper: ImageNet VGG19, "
                        f"weight {PAPER.perceptual_weight})")
    p.add_argument("--num-workers", type=int, default=2, help="data-loader workers per process (default: 2)")
    p.add_argument("--log-every", type=int, default=50, help="log interval in steps (default: 50; paper: 50)")
    p.add_argument("--checkpoint-every", type=int, default=2000,
                   help="checkpoint interval in steps (default: 2000; paper: 2000)")
    p.add_argument("--image-every", type=int, default=1000,
                   help="source|translated|target grid interval in steps, 0 = never (default: 1000; paper: 1000)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def build_datasets(args: argparse.Namespace, cfg: TranslatorConfig):
    crop = tuple(cfg.crop_size)
    flip = RandomHorizontalFlip()
    src_t = PairedCompose([RandomScaleCrop(crop, scale=cfg.source_scale), flip])
    tgt_t = PairedCompose([RandomScaleCrop(crop, scale=cfg.target_scale), flip])
    if args.source == "gta5":
        source = GTA5(args.source_root, transform=src_t, seed=args.seed)
    elif args.source == "synthia":
        source = Synthia(args.source_root, transform=src_t, seed=args.seed)
    else:
        source = SegmentationFolder(args.source_root / "images", args.source_root / "labels",
                                    transform=src_t, seed=args.seed)
    if args.target == "cityscapes":
        target = Cityscapes(args.target_root, "train", labels=False, transform=tgt_t, seed=args.seed + 1)
    else:
        target = SegmentationFolder(args.target_root, transform=tgt_t, seed=args.seed + 1)
    return source, target


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                   ("crop_size", args.crop_size)) if v is not None}
    cfg = TranslatorConfig.preset(args.preset, **overrides)
    info = setup_distributed(args.device)
    try:
        with work_dir_lock(args.work_dir, enabled=info.is_main):  # one run per work dir
            result = _train(args, cfg, info)
        if info.is_main:
            print(f"translator written to {result['final']}")
    finally:
        cleanup_distributed()
    return 0


def _train(args: argparse.Namespace, cfg: TranslatorConfig, info) -> dict:
    """Datasets, the optional perceptual network, and the training run (under the work dir's lock)."""
    source, target = build_datasets(args, cfg)
    perceptual = vgg19_features(args.perceptual_weights) if args.perceptual_weights else None
    return train_translator(
        source, target, work_dir=args.work_dir, config=cfg, perceptual_net=perceptual, seed=args.seed,
        dist=info, amp=False if args.amp == "off" else args.amp, num_workers=args.num_workers,
        log_every=args.log_every, checkpoint_every=args.checkpoint_every, image_every=args.image_every,
        resume=args.resume, show_progress=not args.no_progress,
        run_config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    )


if __name__ == "__main__":
    sys.exit(main())
