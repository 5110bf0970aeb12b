"""The ``diga`` command line: adapt, predict, evaluate, export, translate, demo, and a data maker.

    diga adapt --source-images S/img --source-labels S/lbl --target-images T/img \\
        --target-val-images V/img --target-val-labels V/lbl --num-classes 8 --work-dir runs/mine
    diga predict runs/mine/model.safetensors photos/ --out predictions/ --overlay
    diga evaluate runs/mine/model.safetensors --images V/img --labels V/lbl
    diga translate --source folder --source-root S --target folder --target-root T/img --work-dir runs/tr
    diga demo

A user error (a missing or bad file, a bad flag value) ends with one line on
stderr and exit status 2; a run that had to stop (a diverging loss, a full
disk) with one line and status 1. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from diga._ops import class_argmax
from diga.engine.preflight import device_flag, integer, real
from diga.engine.trainer_cli import OneLineParser

__all__ = ["SAFETY_CASES", "cli_markdown", "main", "make_parser", "run", "script_main"]


def _scales(p) -> None:
    p.add_argument("--scales", type=real(low=0, low_open=True, high=8), nargs="+", default=[1.0, 0.5],
                   help="multi-scale max fusion factors, each in (0, 8] (default: 1.0 0.5, as the paper)")


# ---------------------------------------------------------------------------------------- adapt
def _add_adapt(sub) -> None:
    from diga.engine.recipes import get_recipe
    from diga.engine.trainer_cli import add_trainer_args

    p = sub.add_parser(
        "adapt", help="adapt a model from a labelled source to an unlabelled target (the full DiGA pipeline)",
        description="Warm-up, pseudo-labels, centroids, self-training rounds and evaluation, as the reference "
                    "trainers, on any two folders (or the named datasets). Writes <work-dir>/model.safetensors "
                    "for `diga predict` (weights and metadata, no code: safe to share). One run per work dir "
                    "at a time; a killed run continues with --resume.",
        epilog="Files in --work-dir: model.safetensors (safe to share: raw tensors and JSON, nothing runs when "
               "read); results.json, config.json, log.jsonl, miou.png, images/ (results, resolved flags, log, "
               "plots); pseudo_round<r>/ (pseudo-label PNGs); checkpoints/*.pt (what --resume continues from, "
               "read as plain data only: weights_only); .diga.lock (held while the run lives). Every file is "
               "written to a temp name and renamed, so a killed run leaves each whole: rerun the same command "
               "with --resume and it ends as an uninterrupted run would (--resume refuses another setting, "
               "naming it; logging and speed flags may differ). Before training: --work-dir must lie outside "
               "every input, and every label file is checked (size, channels, values).",
    )
    p.add_argument("--setting", choices=("uda", "ssl"), default="uda", help="'uda': a labelled source and an "
                   "unlabelled target; 'ssl' (semi-supervised): the labelled target images as --source-images/"
                   "--source-labels, the unlabelled ones as --target-images, the semi-supervised scripts' recipe "
                   "(HRNet-W48 + OCR, no translator, one round) (default: %(default)s)")
    d = p.add_argument_group("data (folders)")
    d.add_argument("--source-images", help="folder of source images (nested folders are fine)")
    d.add_argument("--source-labels", help="folder of source label PNGs, matched to images by file stem")
    d.add_argument("--target-images", help="folder of unlabelled target images")
    d.add_argument("--target-val-images", help="folder of labelled target images for evaluation (optional)")
    d.add_argument("--target-val-labels", help="their labels (optional)")
    d.add_argument("--num-classes", type=integer(low=1, high=255), help="number of classes C, 1 to 255 "
                   "(label PNGs are 8-bit with 255 = ignore; required for folders)")
    d.add_argument("--classes", help="class names: comma-separated, or a text file with one per line")
    d.add_argument("--source-label-map", help="JSON/YAML file mapping raw source label values to class ids")
    d.add_argument("--target-label-map", help="JSON/YAML file mapping raw validation label values to ids")
    d.add_argument("--crop-size", type=integer(low=1), nargs=2, metavar=("H", "W"),
                   help="training crop; smaller images are padded to it (image with zeros, label with 255) "
                        "(default: the preset's: 512 896 paper, 64 96 tiny)")
    n = p.add_argument_group("data (named datasets)")
    n.add_argument("--source", choices=("folder", "gta5", "synthia"), default="folder",
                   help="source dataset kind (default: %(default)s)")
    n.add_argument("--source-root", help="GTA5 or SYNTHIA root, with --source gta5/synthia")
    n.add_argument("--target-root", help="Cityscapes root, with --source gta5/synthia")
    add_trainer_args(p, paper=get_recipe("gta5", "paper"))
    p.set_defaults(func=_run_adapt)


def _class_names(spec: str | None, num_classes: int) -> list[str]:
    """``--classes``: a text file with one name a line, or comma-separated names; distinct, one per class."""
    if spec is None:
        return [f"class{i}" for i in range(num_classes)]
    path = Path(spec)
    if path.is_file():
        try:
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"--classes {spec}: cannot read it as a text file of class names ({err})") from err
    elif path.suffix.lower() in (".txt", ".names", ".csv") or "/" in spec:
        raise FileNotFoundError(f"--classes file not found: {spec} (expected a text file, one name a line, or "
                                "comma-separated names)")
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
    if len(names) != num_classes:
        raise ValueError(f"--classes must name {num_classes} classes (--num-classes), got {len(names)}: {names}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"--classes names {repeated[0]!r} more than once; expected {num_classes} distinct names "
                         "(results are keyed by name)")
    return names


def _folder_pairs(images: Sequence[str] | None, labels: Sequence[str] | None, images_flag: str,
                  labels_flag: str) -> list[tuple[str, str]]:
    """Repeated ``images_flag`` / ``labels_flag`` folders, paired in order (as many of each)."""
    images, labels = list(images or []), list(labels or [])
    if len(images) != len(labels):
        raise ValueError(f"{images_flag} and {labels_flag} must come in pairs (one labels folder per images "
                         f"folder, in the same order), got {len(images)} {images_flag} and {len(labels)} "
                         f"{labels_flag}")
    return list(zip(images, labels, strict=True))


def target_names(folders: Sequence[str]) -> list[str]:
    """A short, distinct name per evaluation folder: its name, or its parent's for ``.../images``.

    Example:
        >>> target_names(["data/A/images", "data/B/images", "val"])
        ['A', 'B', 'val']
        >>> target_names(["x/images", "y/x/images"])
        ['x', 'x_2']
    """
    names: list[str] = []
    for folder in folders:
        path = Path(folder).resolve()
        base = path.parent.name if path.name.lower() in ("images", "img", "imgs", "image") else path.name
        name, k = base or "target", 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _folder_data(args: argparse.Namespace, recipe):
    from diga.data import SegmentationFolder
    from diga.engine.data_specs import train_transform
    from diga.engine.pipeline import DataSpec
    from diga.engine.plots import _LINE_COLOURS

    names = _class_names(args.classes, args.num_classes)
    palette = [_LINE_COLOURS[i % len(_LINE_COLOURS)] for i in range(args.num_classes)]

    def folder(images, labels=None, label_map=None, transform=None, seed=None, pseudo=None):
        return SegmentationFolder(images, labels, label_map=label_map, classes=names, palette=palette,
                                  transform=transform, seed=seed, pseudo_label_dir=pseudo)

    def source(scale, stage):
        return folder(args.source_images, args.source_labels, args.source_label_map,
                      train_transform(recipe, low_size=None, rescale=stage.source_rescale), args.seed)

    def target(scale, stage, pseudo_dir):
        return folder(args.target_images, transform=train_transform(recipe, low_size=None,
                                                                   rescale=stage.target_rescale),
                      seed=args.seed + 1, pseudo=pseudo_dir)

    val = None
    if args.target_val_images is not None:
        def val():
            return folder(args.target_val_images, args.target_val_labels, args.target_label_map)

    return DataSpec(
        source=source, target=target, target_full=lambda: folder(args.target_images),
        target_centroid=lambda: folder(args.target_images),
        val=val, classes=names, palette=palette,
    )


def _folder_recipe(recipe, args: argparse.Namespace):
    """A preset's recipe for own folders: ``--num-classes``, images at their own size (no low-scale resize),
    ``--crop-size``."""
    from dataclasses import replace

    recipe = replace(recipe, num_classes=args.num_classes, source_low_size=None, target_low_size=None,
                     centroid_size=None, eval_size=None)
    return replace(recipe, crop_size=tuple(args.crop_size)) if args.crop_size else recipe


def _run_adapt(args: argparse.Namespace) -> dict[str, Any]:

    from diga.engine import trainer_cli
    from diga.engine.data_specs import benchmark_data

    if args.source in ("gta5", "synthia"):
        if args.setting != "uda":
            raise ValueError(f"--setting {args.setting} takes folders (--source-images ...), not --source "
                             f"{args.source}; the semi-supervised Cityscapes trainer is "
                             "examples/cityscapes_semi_supervised.py")
        if args.source_root is None or args.target_root is None:
            raise SystemExit(f"--source {args.source} needs --source-root and --target-root (Cityscapes)")
        return trainer_cli.run_trainer(args, benchmark=args.source, make_data=lambda a, recipe: benchmark_data(
            a.source, recipe, source_root=a.source_root, target_root=a.target_root, seed=a.seed,
            rare_class_sampling=a.rare_class_sampling, work_dir=a.work_dir))

    missing = [f for f in ("source_images", "source_labels", "target_images", "num_classes")
               if getattr(args, f) is None]
    if missing:
        raise SystemExit("diga adapt with folders needs " + ", ".join("--" + m.replace("_", "-") for m in missing))
    if (args.target_val_images is None) != (args.target_val_labels is None):
        raise SystemExit("--target-val-images and --target-val-labels go together")

    def make_data(a, recipe):
        return _folder_data(a, recipe)

    def adjust(recipe):
        return _folder_recipe(recipe, args)

    _class_names(args.classes, args.num_classes)  # checked now, before the work dir is touched
    flags = {"source": ("--source-images", "--source-labels"), "target": ("--target-images", "--target-images"),
             "val": ("--target-val-images", "--target-val-labels")}
    benchmark = "gta5" if args.setting == "uda" else "cityscapes_ssl"
    return trainer_cli.run_trainer(args, benchmark=benchmark, make_data=make_data, adjust_recipe=adjust,
                                   data_flags=flags)


# ----------------------------------------------------------------------------------- generalize
def _add_generalize(sub) -> None:
    from diga.engine.recipes import get_recipe
    from diga.engine.trainer_cli import add_trainer_args

    p = sub.add_parser(
        "generalize", help="domain generalisation: train on a labelled source alone (DiGA's warm-up), evaluate on "
                           "unseen domains",
        description="DiGA's domain generalisation (the warm-up alone: CE on the clean view + 0.5 x symmetric KD "
                    "over a strongly augmented view; no target image, no translator) on your folders; the final "
                    "model is evaluated on every --val-images/--val-labels pair, one row each and their mean in "
                    "<work-dir>/results.json. Writes <work-dir>/model.safetensors for `diga predict`. One run per "
                    "work dir at a time; a killed run continues with --resume.",
        epilog="Files in --work-dir: as `diga adapt` (no pseudo-labels or centroids). Before training: --work-dir "
               "must lie outside every input, and every label file is checked (size, channels, values).",
    )
    d = p.add_argument_group("data (folders)")
    d.add_argument("--source-images", required=True, help="folder of source images (nested folders are fine)")
    d.add_argument("--source-labels", required=True, help="folder of source label PNGs, matched by file stem")
    d.add_argument("--val-images", action="append", help="folder of labelled images of an unseen domain, to "
                   "evaluate on; repeat --val-images / --val-labels for several (optional)")
    d.add_argument("--val-labels", action="append", help="their labels, one per --val-images, in the same order")
    d.add_argument("--num-classes", type=integer(low=1, high=255), required=True, help="number of classes C, 1 to "
                   "255 (label PNGs are 8-bit with 255 = ignore)")
    d.add_argument("--classes", help="class names: comma-separated, or a text file with one per line")
    d.add_argument("--source-label-map", help="JSON/YAML file mapping raw source label values to class ids")
    d.add_argument("--val-label-map", help="JSON/YAML file mapping raw evaluation label values to ids (every "
                   "--val-labels)")
    d.add_argument("--crop-size", type=integer(low=1), nargs=2, metavar=("H", "W"),
                   help="training crop; smaller images are padded to it (image with zeros, label with 255) "
                        "(default: the preset's: 512 896 paper, 64 96 tiny)")
    add_trainer_args(p, paper=get_recipe("gta5_dg", "paper"), benchmark="gta5_dg")
    p.set_defaults(func=_run_generalize)


def _run_generalize(args: argparse.Namespace) -> dict[str, Any]:
    from diga.data import SegmentationFolder
    from diga.engine import trainer_cli
    from diga.engine.data_specs import train_transform
    from diga.engine.pipeline import DataSpec
    from diga.engine.plots import _LINE_COLOURS
    from diga.engine.targets import EvalTarget

    pairs = _folder_pairs(args.val_images, args.val_labels, "--val-images", "--val-labels")
    names = _class_names(args.classes, args.num_classes)  # checked now, before the work dir is touched
    palette = [_LINE_COLOURS[i % len(_LINE_COLOURS)] for i in range(args.num_classes)]
    targets = target_names([i for i, _ in pairs])

    def make_data(a, recipe):
        def source(scale, stage):
            return SegmentationFolder(a.source_images, a.source_labels, label_map=a.source_label_map, classes=names,
                                      palette=palette, seed=a.seed,
                                      transform=train_transform(recipe, low_size=None, rescale=stage.source_rescale))

        evals = [EvalTarget(name, SegmentationFolder(images, labels, label_map=a.val_label_map, classes=names,
                                                     palette=palette), scales=recipe.scales)
                 for name, (images, labels) in zip(targets, pairs, strict=True)]
        return DataSpec(source=source, target=None, target_full=None, target_centroid=None, val=None,
                        classes=names, palette=palette, eval_targets=(lambda: evals) if evals else None)

    flags = {"source": ("--source-images", "--source-labels"),
             **{f"val:{name}": ("--val-images", "--val-labels") for name in targets}}
    return trainer_cli.run_trainer(args, benchmark="gta5_dg", make_data=make_data,
                                   adjust_recipe=lambda recipe: _folder_recipe(recipe, args), data_flags=flags)


# -------------------------------------------------------------------------------------- predict
def _add_predict(sub) -> None:
    from diga.engine.trainer_cli import add_sliding_args

    p = sub.add_parser("predict", help="label images with a trained model (label PNGs, optional overlays)",
                       description="Writes <out>/<relative path>.png (class ids, palette PNG) for every image "
                                   "given or found under the folders given. --out must lie outside the model "
                                   "and the images, and two inputs may not share an output name (a.png and "
                                   "a.jpg): both are refused before anything is read.")
    p.add_argument("model", help="a model file written by training (<work-dir>/model.safetensors) or diga export")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    _scales(p)
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png: image and colours "
                   "blended half and half")
    p.add_argument("--batch-size", type=integer(low=1), default=4, help="images per forward, among same-size "
                   "images; windows per forward with --slide (default: %(default)s)")
    _add_device(p)
    add_sliding_args(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_allow_pickle(p)
    p.set_defaults(func=_run_predict)


def _add_device(p) -> None:
    p.add_argument("--device", type=device_flag, default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N', "
                   "checked before anything is read (default: %(default)s)")


def _add_allow_pickle(p) -> None:
    p.add_argument("--allow-pickle", action="store_true", help="also read a diga 0.1 .pt model file: that "
                   "reads a pickle, so only for a file you trust (torch's weights-only unpickler, which refuses "
                   "function calls); better convert it once with `diga export`")


def _writable_dir(path: str | Path, flag: str) -> Path:
    """Check files can be made in folder ``path`` (or in the folder that will hold it), creating nothing,
    or a ValueError naming ``flag``."""
    import os

    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    problem = None
    if probe == path and not path.is_dir():
        problem = "it is a file"
    elif not probe.is_dir():
        problem = f"{probe} is a file"
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = f"no permission to write in {probe}"
    if problem:
        raise ValueError(f"{flag} {path} is not writable: {problem}; expected a folder diga can create files in")
    return path


def _gather_images(paths: Sequence[str]) -> list[tuple[Path, Path]]:
    """(file, name relative to the folder it was found in) for every image given or found."""
    from diga.data.io import IMAGE_SUFFIXES

    found = []
    for spec in paths:
        path = Path(spec)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(path).parts))
            if not files:
                raise SystemExit(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {path}")
            found += [(f, f.relative_to(path)) for f in files]
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise SystemExit(f"not found: {path}")
    return found


def _image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from the file's header, or a ValueError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image file {str(path)!r}: corrupt or not an image ({err})") from err


def _window_note(sizes: Sequence[tuple[int, int]], args: argparse.Namespace) -> tuple[Any, Any]:
    """``(window, stride)`` of ``--slide``/``--stride``; without them, say once when big images will slide."""
    import math

    from diga.engine.trainer_cli import sliding_window
    from diga.inference import HRDA_WINDOW, WHOLE_IMAGE_MAX_PIXELS

    window, stride = sliding_window(args)
    if window is None:
        big = sum(h * w > WHOLE_IMAGE_MAX_PIXELS for h, w in sizes)
        if big:
            (wh, ww), (sh, sw) = HRDA_WINDOW
            side = math.isqrt(WHOLE_IMAGE_MAX_PIXELS)
            square = f" ({side} x {side})" if side * side == WHOLE_IMAGE_MAX_PIXELS else ""
            print(f"diga: note: {big} image(s) above {WHOLE_IMAGE_MAX_PIXELS} pixels{square} are predicted in "
                  f"{wh} x {ww} windows, stride {sh} x {sw} (HRDA's); --slide H W chooses the window",
                  file=sys.stderr)
    return window, stride


def _run_predict(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from diga.data.io import load_image, save_label
    from diga.engine.distributed import resolve_device
    from diga.engine.log import progress
    from diga.engine.plots import colorize, image_grid, save_png
    from diga.engine.preflight import check_outputs, check_unique_outputs
    from diga.inference import load_model, predict_logits, resolve_window

    # Everything a user gave is checked before the model is read or a file written.
    if not Path(args.model).is_file():
        raise FileNotFoundError(f"model file not found: {args.model}")
    files = _gather_images(args.images)
    out = Path(args.out)
    targets = [(f, out / rel.with_suffix(".png")) for f, rel in files]
    overlays = [(f, t.with_name(t.stem + "_overlay.png")) for f, t in targets] if args.overlay else []
    check_unique_outputs([*targets, *overlays])
    check_outputs({"--out": out}, {"model": [Path(args.model)], "images": [Path(i) for i in args.images]})
    _writable_dir(out, "--out")
    sizes = [_image_size(f) for f, _ in files]
    window, stride = _window_note(sizes, args)
    device = resolve_device(args.device)
    model, meta = load_model(args.model, device=device, allow_pickle=args.allow_pickle)
    palette = meta.get("palette")
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        by_size.setdefault(size, []).append(i)
    written = 0
    bar = progress(total=len(files), desc="predict", enabled=not args.no_progress)
    for size, indices in by_size.items():
        win, step = resolve_window(size, window, stride)
        per = 1 if win is not None else args.batch_size  # sliding: batch the windows, one image at a time
        for start in range(0, len(indices), per):
            chunk = indices[start : start + per]
            images = torch.stack([load_image(files[i][0]) for i in chunk]).to(device)  # read as needed
            logits = predict_logits(model, images, args.scales, window=win, stride=step, batch_size=args.batch_size)
            labels = class_argmax(logits).cpu()
            del logits
            for i, image, label in zip(chunk, images, labels, strict=True):
                save_label(targets[i][1], label.to(torch.uint8), palette=palette)
                if args.overlay and palette is not None:
                    blend = 0.5 * image.cpu() + 0.5 * colorize(label, palette)
                    save_png(image_grid({"overlay": blend[None]}, pad=0), overlays[i][1])
                written += 1
            bar.update(len(chunk))
    bar.close()
    print(f"wrote {written} label maps to {out}")
    return {"written": written, "out": str(out)}


# ------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> None:
    from diga.engine.trainer_cli import add_sliding_args

    p = sub.add_parser("evaluate", help="per-class IoU and mIoU of a trained model on labelled images (one or "
                                        "several folders: one row each and their mean)")
    p.add_argument("model", help="a model file written by training (<work-dir>/model.safetensors) or diga export")
    p.add_argument("--images", required=True, action="append", help="folder of images; repeat --images / --labels "
                   "for several evaluation sets (each at its own image size; one row each and their mean)")
    p.add_argument("--labels", required=True, action="append", help="folder of label PNGs matched by file stem, "
                   "one per --images, in the same order")
    p.add_argument("--label-map", help="JSON/YAML file mapping raw label values to class ids (every folder)")
    _scales(p)
    p.add_argument("--json", help="also write the result as JSON to this file (a class no image shows has IoU "
                   "null); it must not be one of the inputs or lie among them")
    p.add_argument("--batch-size", type=integer(low=1), default=4, help="windows per forward with --slide "
                   "(default: %(default)s)")
    _add_device(p)
    add_sliding_args(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_allow_pickle(p)
    p.set_defaults(func=_run_evaluate)


def format_iou_table(classes: Sequence[str], iou: Sequence[float], miou: float) -> str:
    """A plain-text per-class IoU table with the mIoU last (``-`` where undefined).

    Example:
        >>> print(format_iou_table(["road", "sky"], [0.5, float("nan")], 0.5))
        class  IoU (%)
        road      50.0
        sky          -
        mIoU      50.0
    """
    def shown(value: float) -> str:
        return "-" if value != value else f"{100 * value:.1f}"

    width = max(len("class"), len("mIoU"), *(len(c) for c in classes))
    lines = [f"{'class':<{width}}  IoU (%)"]
    for name, value in zip(classes, iou, strict=True):
        lines.append(f"{name:<{width}}  {shown(value):>7}")
    lines.append(f"{'mIoU':<{width}}  {shown(miou):>7}")
    return "\n".join(lines)


def _run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from diga.data import SegmentationFolder
    from diga.engine.checkpoint import atomic_write_json
    from diga.engine.distributed import resolve_device
    from diga.engine.log import progress
    from diga.engine.preflight import check_outputs
    from diga.engine.trainer_cli import sliding_window
    from diga.inference import load_model, predict_logits, resolve_window
    from diga.metrics import ConfusionMatrix

    pairs = _folder_pairs(args.images, args.labels, "--images", "--labels")
    reads = {"model": [Path(args.model)], "--images": [Path(i) for i, _ in pairs],
             "--labels": [Path(lbl) for _, lbl in pairs]}
    if args.label_map:
        reads["--label-map"] = [Path(args.label_map)]
    if args.json:
        check_outputs({"--json": Path(args.json)}, reads)
        if Path(args.json).is_dir():
            raise ValueError(f"--json {args.json} is a folder; expected the JSON file to write")
        _writable_dir(Path(args.json).parent, "--json")
    sliding_window(args)  # checked before the model is read
    device = resolve_device(args.device)
    model, meta = load_model(args.model, device=device, allow_pickle=args.allow_pickle)
    num_classes = int(meta["config"]["num_classes"])
    classes = meta.get("classes") or [f"class{i}" for i in range(num_classes)]
    sets = {name: SegmentationFolder(images, labels, label_map=args.label_map, classes=classes)
            for name, (images, labels) in zip(target_names([i for i, _ in pairs]), pairs, strict=True)}
    rows = {}
    for name, data in sets.items():
        window, stride = _window_note([_image_size(s.image) for s in data.samples], args)
        cm = ConfusionMatrix(num_classes, ignore_index=meta.get("ignore_index", 255)).to(device)
        desc = "evaluate" if len(sets) == 1 else f"evaluate {name}"
        for i in progress(range(len(data)), desc=desc, enabled=not args.no_progress):
            item = data[i]
            image = item["image"][None].to(device)
            win, step = resolve_window(image.shape[-2:], window, stride)
            logits = predict_logits(model, image, args.scales, window=win, stride=step, batch_size=args.batch_size)
            cm.update(class_argmax(logits), item["label"][None].to(device))
        out = cm.compute()
        iou = out["iou"].tolist()
        rows[name] = {"miou": float(out["miou"]), "iou": dict(zip(classes, iou, strict=True)), "images": len(data)}
        if len(sets) > 1:
            print(f"== {name}")
        print(format_iou_table(classes, iou, rows[name]["miou"]))
    if len(rows) == 1:
        result = {**next(iter(rows.values())), "model": str(args.model)}
    else:
        mean = sum(r["miou"] for r in rows.values()) / len(rows)
        result = {"targets": rows, "mean_miou": mean, "model": str(args.model)}
        width = max(len(n) for n in rows)
        print("\n".join([f"{'target':<{width}}  mIoU (%)"] + [f"{n:<{width}}  {100 * r['miou']:>8.1f}"
                                                               for n, r in rows.items()]
                         + [f"{'mean':<{width}}  {100 * mean:>8.1f}"]))
    if args.json:
        atomic_write_json(args.json, result)  # strict JSON: an undefined IoU is null
    return result


# --------------------------------------------------------------------------------------- export
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="rewrite a model file as .safetensors (converts diga 0.1 .pt files)",
                       description="Reads a model file and writes it again as safetensors with its metadata "
                                   "(architecture, classes, palette, normalisation): the format `diga predict` "
                                   "reads by default, and safe to share. A diga 0.1 .pt model file needs "
                                   "--allow-pickle, since reading it unpickles it: only for files you trust.")
    p.add_argument("model", help="a model file: .safetensors, or a diga 0.1 model.pt with --allow-pickle")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    _add_allow_pickle(p)
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> dict[str, Any]:
    from diga.engine.preflight import check_outputs
    from diga.inference import export_model, load_model

    out = Path(args.out)
    check_outputs({"--out": out}, {"model": [Path(args.model)]})
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; expected the .safetensors file to write")
    model, meta = load_model(args.model, allow_pickle=args.allow_pickle)
    _writable_dir(out.parent, "--out")
    export_model(model, out, classes=meta["classes"], palette=meta["palette"], ignore_index=meta["ignore_index"],
                 extra=meta["extra"])
    print(f"wrote {out}")
    return {"out": str(out)}


# ------------------------------------------------------------------------------------- translate
def _add_translate(sub) -> None:
    from diga.engine.translator_cli import add_translator_args

    p = sub.add_parser("translate", help="train DiGA's learned source -> target image translator (stage 0); "
                                         "its translator_final.pt is `diga adapt --translator`'s input",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="Defaults marked 'preset' come from --preset (paper / tiny values shown).")
    add_translator_args(p)
    p.set_defaults(func=_run_translate)


def _run_translate(args: argparse.Namespace) -> dict[str, Any]:
    from diga.engine.translator_cli import run_translator

    result = run_translator(args)
    return {k: str(v) if isinstance(v, Path) else v for k, v in result.items()}


# ----------------------------------------------------------------------------------- demo, data
def _add_demo(sub) -> None:
    from diga.demo import add_demo_args

    p = sub.add_parser("demo", help="source-only vs DiGA warm-up vs DiGA self-training on the built-in "
                                    "domain shift (one seed: about 4 minutes on a 2-core CPU)")
    add_demo_args(p)
    checked = {"seeds": integer(low=1, high=100), "device": device_flag}  # the same parse-time checks
    for action in p._actions:
        action.type = checked.get(action.dest, action.type)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> dict[str, Any]:
    from diga import demo

    argv = ["--work-dir", args.work_dir, "--seeds", str(args.seeds), "--device", args.device]
    argv += ["--quick"] * args.quick + ["--no-progress"] * args.no_progress
    return demo.main(argv)


def _add_make_shift(sub) -> None:
    p = sub.add_parser("make-shift", help="write the built-in domain shift as PNG folders (for trying "
                                          "`diga adapt` on files)")
    p.add_argument("--out", required=True, help="output folder: source/{images,labels}, target/images, "
                                                "val/{images,labels}, classes.txt")
    p.add_argument("--source-items", type=integer(low=1), default=400, help="(default: %(default)s)")
    p.add_argument("--target-items", type=integer(low=1), default=200, help="(default: %(default)s)")
    p.add_argument("--val-items", type=integer(low=1), default=50, help="(default: %(default)s)")
    p.add_argument("--size", type=integer(low=16, high=4096), nargs=2, metavar=("H", "W"), default=[64, 96],
                   help="image size, 16 to 4096 a side (default: 64 96)")
    p.add_argument("--seed", type=integer(low=0), default=0, help="(default: %(default)s)")
    p.set_defaults(func=_run_make_shift)


def _run_make_shift(args: argparse.Namespace) -> dict[str, Any]:
    from diga.data.shift_files import write_shift_folders

    root = write_shift_folders(args.out, source_items=args.source_items, target_items=args.target_items,
                               val_items=args.val_items, size=tuple(args.size), seed=args.seed)
    print(f"wrote the built-in domain shift to {root}")
    return {"out": str(root)}


# ----------------------------------------------------------------------------------------- main
def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="diga", description="DiGA domain adaptation for semantic segmentation.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 done; 2 a user error (one line naming the flag or file, what was seen and what\n"
               "was expected); 1 a run that had to stop (a NaN loss, a full disk: the last checkpoint is\n"
               "intact, continue with --resume); 130 interrupted. --debug shows the traceback instead.",
    )
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback instead "
                        "of one line (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_adapt(sub)
    _add_generalize(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_translate(sub)
    _add_demo(sub)
    _add_make_shift(sub)
    return parser


def cli_markdown() -> str:
    """docs/cli.md, generated from the parsers' own help (a test checks the file matches)."""
    import os

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix it so the file is stable
    try:
        return _cli_markdown()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


#: The hostile and mistaken inputs tried (tests/test_cli_errors.py, tests/test_cli.py and tests/engine run each
#: through diga's entry point) and what each gets: docs/cli.md's safety section.
SAFETY_CASES: tuple[tuple[str, str], ...] = (
    (
        "model file missing, empty, truncated, text, a foreign `.safetensors`, one without diga "
        "config",
        "exit 2 naming the file and what was expected",
    ),
    (
        "a `.pt` pickle (a diga 0.1 file, a foreign one, one whose unpickling runs code)",
        "exit 2: refused without `--allow-pickle`; with it, torch's weights-only unpickler refuses "
        "any call and the line names the function; no code runs",
    ),
    (
        "a model file with NaN or infinite weights",
        "exit 2 naming the tensor (it would predict class 0 everywhere)",
    ),
    (
        "a model file whose config carries kwargs outside the architecture's allow-list "
        "(`checkpoint_path`, `pretrained_cfg_overlay`, `cache_dir`, ...) or an encoder named "
        "`hf-hub:...`, `local-dir:...` or a path",
        "exit 2 naming the key (`diga.models.registry.MODEL_FILE_KWARGS`)",
    ),
    (
        "a model file asking for `encoder_weights`",
        "ignored: the weights come from the file; loading never opens a network connection",
    ),
    (
        "a model file whose class names repeat, or do not match its class count or palette",
        "exit 2 naming the file",
    ),
    (
        "an image that is not an image, corrupt, a truncated PNG or JPEG, a decompression bomb",
        "exit 2 naming the file (a file whose header reads but whose data is cut is found when "
        "decoded; labels written before it are whole)",
    ),
    (
        "an empty image folder, images and labels that do not pair, two image files with one stem in "
        "a training folder",
        "exit 2 naming the folders and the first unmatched names",
    ),
    (
        "label files in colour (RGB), of another size than their images, with a value outside the "
        "classes or the label map (source or validation)",
        "exit 2 before training, naming the flag and the file (a threaded pre-scan of every label, "
        "with a progress bar)",
    ),
    (
        "validation labels that are all ignore",
        "`diga evaluate` prints `-` and writes `null` (never `NaN`) in `--json`; every JSON diga "
        "writes is strict",
    ),
    (
        "images smaller than the training crop (64 x 64 folders, 64 x 96 or 512 x 896 crops)",
        "trained: crops are padded (image with zeros, label with 255, never trained on), said once on"
        " stderr",
    ),
    (
        "an image above 4096 x 4096 pixels (a 9000 x 9000 photo) without `--slide`",
        "predicted in HRDA's 1024 x 1024 windows, stride 512, said once; `--slide H W --stride H W` "
        "chooses",
    ),
    (
        "a numeric flag that is not a number, NaN, infinite or out of range (`--warmup-steps 0`, "
        "`--rounds -2`, `--eval-every -1`, `--lr inf`, `--lr nan`, `--batch-size -3`, `--scales 0`, "
        "`--slide 0 64`, `--fourier-beta 0.7`, `--num-classes 300`, `--seed -1`, `make-shift --size 4"
        " 4`, `demo --seeds 0`, ...), in a flag or a `--config` file",
        "exit 2 at parse time naming the flag, the value and the range",
    ),
    (
        "`--stride` without `--slide`, or larger than it",
        "exit 2 naming both",
    ),
    (
        "`--device cuda` / `cuda:0` without a GPU, `cuda:5` past the GPUs there are, `mps` without "
        "MPS, `meta`, `gpu`",
        "exit 2 at parse time, before any file is read",
    ),
    (
        "`--classes` with a repeated name, the wrong count, or a missing file",
        "exit 2 naming it",
    ),
    (
        "a `--config` file that is missing, not JSON/YAML, not a mapping, with an unknown key or a "
        "value of the wrong type or range",
        "exit 2 naming the file and the key",
    ),
    (
        "`predict --out` onto, inside or around the images or the model; `evaluate --json` onto the "
        "model or a label; `export --out` onto the model",
        "exit 2 naming both paths, before anything is read or written",
    ),
    (
        "`--work-dir` that is, holds or lies inside a data folder (the source images, the target "
        "images, the validation labels) or holds an input file",
        "exit 2 naming both (`diga adapt`, `diga translate`, the example trainers)",
    ),
    (
        "two inputs that would write one output (`a.png` and `a.jpg`; `a/x.png` and `b/x.png`)",
        "exit 2 naming both inputs and the output",
    ),
    (
        "an unwritable `--out` or `--work-dir`",
        "exit 2 naming it",
    ),
    (
        "a second run on a work dir a live run holds",
        "exit 2 naming the holder's pid, at once",
    ),
    (
        "a work dir with a run, without `--resume`",
        "exit 2",
    ),
    (
        "`--resume` with another setting (`--rounds`, steps, `--model`, `--encoder`, `--seed`, "
        "`--amp`, `--crop-size`, `--slide`, a data folder, the preset, ...)",
        "exit 2 naming the setting and both values; nothing rewritten. `--no-progress`, "
        "`--num-workers`, `--device`, `--channels-last`, `--eval-every`, `--stop-on-collapse` and the"
        " `--config` path may differ",
    ),
    (
        "`--resume` from a truncated checkpoint",
        "exit 2 naming it",
    ),
    (
        "Ctrl-C",
        "exit 130; `--resume` continues",
    ),
    (
        "SIGKILL at any point (warm-up, pseudo-labels, centroids, a checkpoint write, evaluation, "
        "self-training)",
        "`--resume` ends with the same weights and results as an uninterrupted run (CPU)",
    ),
    (
        "a loss that becomes NaN",
        "exit 1 naming the stage and step; the last checkpoint intact",
    ),
    (
        "a full disk (or a file-size limit) while writing a checkpoint, a label PNG, a JSON or an "
        "image grid",
        "exit 1: `diga: stopped: cannot write FILE: No space left on device (the previous file is "
        "intact)`; no temp file left",
    ),
)

SAFETY_INTRO = """## Safety: what a hostile or mistaken input gets

Every case below is a test that runs the command as a user would (`diga.cli.main`, a few as
`python -m diga` processes) and checks the exit status, that stderr is one line without a
traceback, and that no file the user gave changed. Exit 2 is a user error, named before
anything is written; exit 1 a run that had to stop, with the last checkpoint intact.
"""


def _safety_markdown() -> str:
    rows = "\n".join(f"| {tried} | {gets} |" for tried, gets in SAFETY_CASES)
    return f"{SAFETY_INTRO}\n| input tried | what it gets |\n| --- | --- |\n{rows}\n"

def _cli_markdown() -> str:
    parser = make_parser()
    parts = ["# Command line\n", "Generated from `diga --help` and each command's `--help` by "
             "`python -m diga cli-docs`; do not edit by hand.\n", "```text", parser.format_help().rstrip(), "```\n"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        parts += [f"## diga {name}\n", "```text", p.format_help().rstrip(), "```\n"]
    parts.append(_safety_markdown())
    return "\n".join(parts)


def run(argv: Sequence[str] | None = None) -> Any:
    """Run a ``diga`` command and return its result (a dict), for use from Python."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cli-docs"]:
        print(cli_markdown(), end="")
        return None
    from diga.engine.trainer_cli import parse_with_config

    args = parse_with_config(make_parser(), argv)
    return args.func(args)


#: Errors of what the user gave (files, flags): one line, exit status 2.
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def _one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a DataLoader worker's error: its last line, the original one)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if len(lines) > 1 and "Traceback" in lines[1]:
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].isidentifier() else last
    return " ".join(lines)


def _stopped_line(err: BaseException) -> str:
    """Why a run stopped, on one line; a bare OSError (a full disk met outside diga's atomic writes,
    such as a log line appended) says which file, when it knows, and that the checkpoints are kept."""
    from diga._io import WriteError

    if isinstance(err, OSError) and not isinstance(err, WriteError) and err.strerror:
        where = f" {err.filename}" if err.filename is not None else ""
        return f"cannot write{where}: {err.strerror} (the last checkpoint is intact: free space, then --resume)"
    return _one_line(err)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command; exit status 0 on success, 2 on a user error (one line on
    stderr naming the flag or file), 1 when a run had to stop (diverged, disk full), 130 on Ctrl-C.
    ``--debug`` (anywhere) re-raises instead, with the traceback."""
    return script_main(run, argv)


def script_main(fn: Callable[[list[str]], Any], argv: Sequence[str] | None = None, *, prog: str = "diga") -> int:
    """Run ``fn(argv)`` as a command: what :func:`main` does for ``diga``, for the example trainers too
    (``sys.exit(script_main(main, prog="gta_to_cityscapes.py"))``): one line on stderr prefixed
    ``<prog>: error:`` and exit status 2 for a user error, 1 for a run that had to stop, 130 on Ctrl-C."""
    from diga.engine.guards import TrainingDiverged, WorkDirBusy

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        fn(argv)
    except SystemExit as err:
        if debug or err.code is None or isinstance(err.code, int):
            raise
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130
    except (*_USER_ERRORS, WorkDirBusy) as err:
        if debug:
            raise
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (TrainingDiverged, OSError) as err:
        if debug:
            raise
        print(f"{prog}: stopped: {_stopped_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
