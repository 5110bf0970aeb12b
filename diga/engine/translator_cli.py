"""The translator trainer's command line (``diga translate``, ``examples/train_translator.py``):
its data flags, the run flags every trainer shares, and the run under the work dir's lock."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diga.engine.distributed import DistInfo, cleanup_distributed, setup_distributed
from diga.engine.guards import work_dir_lock
from diga.engine.preflight import check_outputs, check_same_run, input_paths, integer
from diga.engine.trainer_cli import (
    MAY_DIFFER_ON_RESUME,
    OneLineParser,
    add_run_args,
    check_work_dir,
    parse_with_config,
    recorded_settings,
    resolve_workers,
)
from diga.engine.translator_training import TranslatorConfig, train_translator

__all__ = ["add_translator_args", "build_datasets", "main", "parse_args", "run_translator"]

PAPER = TranslatorConfig.preset("paper")
TINY = TranslatorConfig.preset("tiny")


def add_translator_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The translator trainer's flags; help texts give each default and the paper's value."""
    d = p.add_argument_group("data")
    d.add_argument("--source", choices=("gta5", "synthia", "folder"), default="gta5",
                   help="source dataset layout (default: gta5; paper: gta5)")
    d.add_argument("--source-root", type=Path, required=True, help="source dataset folder (required)")
    d.add_argument("--target", choices=("cityscapes", "folder"), default="cityscapes",
                   help="target dataset layout (default: cityscapes; paper: cityscapes, train split)")
    d.add_argument("--target-root", type=Path, required=True, help="target dataset folder (required)")
    add_run_args(p, work_dir="runs/translator", what="checkpoints/, log.jsonl and images/",
                 preset_help="settings preset: 'paper' (the released script) or 'tiny' (a CPU smoke run) "
                             "(default: paper)")
    t = p.add_argument_group("training")
    t.add_argument("--steps", type=integer(low=1), default=None,
                   help=f"training steps (default: preset, {PAPER.steps} / {TINY.steps}; paper: {PAPER.steps})")
    t.add_argument("--crop-size", type=integer(low=4), nargs=2, metavar=("H", "W"), default=None,
                   help=f"training crop, divisible by 4 (default: preset, {PAPER.crop_size[0]} "
                        f"{PAPER.crop_size[1]} / {TINY.crop_size[0]} {TINY.crop_size[1]}; paper: 512 896)")
    t.add_argument("--batch-size", type=integer(low=1), default=None,
                   help=f"images per domain, per GPU and step (default: preset, {PAPER.batch_size} / "
                        f"{TINY.batch_size}; paper: 2, one low- and one full-resolution image)")
    t.add_argument("--perceptual-weights", type=Path, default=None, metavar="PATH",
                   help="local torchvision VGG19 weight file (vgg19-dcbb9e9d.pth) for the perceptual loss; "
                        "nothing is downloaded (default: none, perceptual loss off; paper: ImageNet VGG19, "
                        f"weight {PAPER.perceptual_weight})")
    t.add_argument("--log-every", type=integer(low=0), default=50,
                   help="log interval in steps, 0 = never (default: 50; paper: 50)")
    t.add_argument("--checkpoint-every", type=integer(low=0), default=2000,
                   help="checkpoint interval in steps, 0 = at the end only (default: 2000; paper: 2000)")
    t.add_argument("--image-every", type=integer(low=0), default=1000,
                   help="source|translated|target grid interval in steps, 0 = never (default: 1000; paper: 1000)")
    return p


def parse_args(argv: Sequence[str] | None = None, *, description: str | None = None) -> argparse.Namespace:
    """The translator trainer's flags (and ``--config``) as a namespace."""
    p = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Defaults marked 'preset' come from --preset (paper / tiny values shown).")
    return parse_with_config(add_translator_args(p), argv)


def build_datasets(args: argparse.Namespace, cfg: TranslatorConfig):
    """The source (labelled) and target datasets of ``--source`` / ``--target``, cropped and flipped."""
    from diga.data import (
        GTA5,
        Cityscapes,
        PairedCompose,
        RandomHorizontalFlip,
        RandomScaleCrop,
        SegmentationFolder,
        Synthia,
    )

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


def run_translator(args: argparse.Namespace) -> dict[str, Any]:
    """Train the translator as ``args`` say: the work dir checked against the inputs, processes, the work
    dir's lock, a resumed run's settings against the recorded ones, datasets, the run."""
    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                   ("crop_size", args.crop_size)) if v is not None}
    cfg = TranslatorConfig.preset(args.preset, **overrides)
    work_dir = Path(args.work_dir)
    check_outputs({"--work-dir": work_dir}, input_paths(args))
    info = setup_distributed(args.device)
    try:
        with work_dir_lock(work_dir, enabled=info.is_main):  # one run per work dir
            check_work_dir(work_dir, args.resume)
            if args.resume:
                check_same_run(recorded_settings(work_dir / "translator_config.json", "run_config", "settings"),
                               _settings(args, cfg, info.world_size), work_dir=work_dir)
            result = _train(args, cfg, info, work_dir)
        if info.is_main:
            print(f"translator written to {result['final']}")
    finally:
        cleanup_distributed()
    return result


def _settings(args: argparse.Namespace, cfg: TranslatorConfig, world_size: int) -> dict[str, Any]:
    """What defines a translator run (every flag but the logging / speed ones, paths absolute, the config)."""
    import os

    settings: dict[str, Any] = {"processes (torchrun)": world_size}
    for dest, value in sorted(vars(args).items()):
        if dest in MAY_DIFFER_ON_RESUME or dest in ("steps", "batch_size", "crop_size") or callable(value):
            continue
        settings["--" + dest.replace("_", "-")] = os.path.abspath(value) if isinstance(value, Path) else value
    names = {"steps": "--steps", "batch_size": "--batch-size", "crop_size": "--crop-size"}
    for key, value in sorted(cfg.to_dict().items(), key=lambda kv: (kv[0] not in names, kv[0])):
        settings[names.get(key, f"the preset's {key}")] = value
    return settings


def _train(args: argparse.Namespace, cfg: TranslatorConfig, info: DistInfo, work_dir: Path) -> dict:
    """Datasets, the optional perceptual network, and the training run (under the work dir's lock)."""
    from diga.translation import vgg19_features

    source, target = build_datasets(args, cfg)
    perceptual = vgg19_features(args.perceptual_weights) if args.perceptual_weights else None
    return train_translator(
        source, target, work_dir=work_dir, config=cfg, perceptual_net=perceptual, seed=args.seed,
        dist=info, amp=args.amp, num_workers=resolve_workers(args.num_workers),
        log_every=args.log_every, checkpoint_every=args.checkpoint_every, image_every=args.image_every,
        resume=args.resume, show_progress=not args.no_progress,
        run_config={**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if not callable(v)},
                    "settings": _settings(args, cfg, info.world_size)},
    )


def main(argv: Sequence[str] | None = None, *, description: str | None = None) -> int:
    """Parse the flags and train; exit status 0."""
    run_translator(parse_args(argv, description=description))
    return 0

