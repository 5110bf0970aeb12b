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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diga._ops import class_argmax

__all__ = ["cli_markdown", "main", "make_parser", "run"]


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
               "with --resume and it ends as an uninterrupted run would.",
    )
    d = p.add_argument_group("data (folders)")
    d.add_argument("--source-images", help="folder of source images (nested folders are fine)")
    d.add_argument("--source-labels", help="folder of source label PNGs, matched to images by file stem")
    d.add_argument("--target-images", help="folder of unlabelled target images")
    d.add_argument("--target-val-images", help="folder of labelled target images for evaluation (optional)")
    d.add_argument("--target-val-labels", help="their labels (optional)")
    d.add_argument("--num-classes", type=int, help="number of classes C (required for folders)")
    d.add_argument("--classes", help="class names: comma-separated, or a text file with one per line")
    d.add_argument("--source-label-map", help="JSON/YAML file mapping raw source label values to class ids")
    d.add_argument("--target-label-map", help="JSON/YAML file mapping raw validation label values to ids")
    d.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"),
                   help="training crop (default: the preset's: 512 896 paper, 64 96 tiny)")
    n = p.add_argument_group("data (named datasets)")
    n.add_argument("--source", choices=("folder", "gta5", "synthia"), default="folder",
                   help="source dataset kind (default: %(default)s)")
    n.add_argument("--source-root", help="GTA5 or SYNTHIA root, with --source gta5/synthia")
    n.add_argument("--target-root", help="Cityscapes root, with --source gta5/synthia")
    add_trainer_args(p, paper=get_recipe("gta5", "paper"))
    p.set_defaults(func=_run_adapt)


def _class_names(spec: str | None, num_classes: int) -> list[str]:
    if spec is None:
        return [f"class{i}" for i in range(num_classes)]
    path = Path(spec)
    names = path.read_text().split() if path.is_file() else [s.strip() for s in spec.split(",") if s.strip()]
    if len(names) != num_classes:
        raise SystemExit(f"--classes must name {num_classes} classes (--num-classes), got {len(names)}: {names}")
    return names


def _check_folders(args: argparse.Namespace, recipe, names: Sequence[str]) -> None:
    """Read every folder's file list now (pairing, empty folders) and check the crop fits the images."""
    from PIL import Image

    from diga.data import SegmentationFolder

    kinds = [("--source-images", args.source_images, args.source_labels, args.source_label_map),
             ("--target-images", args.target_images, None, None)]
    if args.target_val_images is not None:
        kinds.append(("--target-val-images", args.target_val_images, args.target_val_labels, args.target_label_map))
    crop = tuple(recipe.crop_size)
    for flag, images, labels, label_map in kinds:
        folder = SegmentationFolder(images, labels, label_map=label_map, classes=names)
        if flag == "--target-val-images":
            continue
        for sample in folder.samples:
            try:
                with Image.open(sample.image) as img:
                    w, h = img.size
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read image file {str(sample.image)!r}: corrupt or not an image "
                                 f"({err})") from err
            if h < crop[0] or w < crop[1]:
                raise ValueError(
                    f"--crop-size {crop[0]} {crop[1]} is larger than {flag} image {str(sample.image)!r} "
                    f"({h} x {w}); expected a crop no larger than every training image"
                )


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


def _run_adapt(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import replace

    from diga.engine import trainer_cli
    from diga.engine.data_specs import benchmark_data

    if args.source in ("gta5", "synthia"):
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
    if args.num_classes < 1:
        raise SystemExit(f"--num-classes must be at least 1, got {args.num_classes}")

    def make_data(a, recipe):
        return _folder_data(a, recipe)

    def adjust(recipe):
        recipe = replace(recipe, num_classes=args.num_classes, source_low_size=None, target_low_size=None,
                         centroid_size=None)
        if args.crop_size:
            recipe = replace(recipe, crop_size=tuple(args.crop_size))
        return recipe

    names = _class_names(args.classes, args.num_classes)
    _check_folders(args, adjust(trainer_cli.resolve_recipe(args, "gta5")), names)
    return trainer_cli.run_trainer(args, benchmark="gta5", make_data=make_data, adjust_recipe=adjust)


# -------------------------------------------------------------------------------------- predict
def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="label images with a trained model (label PNGs, optional overlays)",
                       description="Writes <out>/<relative path>.png (class ids, palette PNG) for every image "
                                   "given or found under the folders given.")
    p.add_argument("model", help="a model file written by training (<work-dir>/model.safetensors) or diga export")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5],
                   help="multi-scale max fusion factors (default: 1.0 0.5, as the paper)")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png: image and colours "
                   "blended half and half")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward, among same-size images "
                   "(default: %(default)s)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_allow_pickle(p)
    p.set_defaults(func=_run_predict)


def _add_allow_pickle(p) -> None:
    p.add_argument("--allow-pickle", action="store_true", help="also read a diga 0.1 .pt model file: that "
                   "reads a pickle, so only for a file you trust (torch's weights-only unpickler, which refuses "
                   "function calls); better convert it once with `diga export`")


def _writable_dir(path: str | Path, flag: str) -> Path:
    """Create ``path`` and check a file can be made in it, or a ValueError naming ``flag``."""
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {path} is not writable: {err.strerror or err}; expected a folder diga can "
                         "create files in") from err
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


def _run_predict(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from diga.data.io import load_image, save_label
    from diga.engine.distributed import resolve_device
    from diga.engine.log import progress
    from diga.engine.plots import colorize, image_grid, save_png
    from diga.inference import load_model, predict_logits

    device = resolve_device(args.device)
    model, meta = load_model(args.model, device=device, allow_pickle=args.allow_pickle)
    palette = meta.get("palette")
    files = _gather_images(args.images)
    out = _writable_dir(args.out, "--out")
    by_size: dict[tuple[int, ...], list] = {}
    for f, rel in files:
        image = load_image(f)
        by_size.setdefault(tuple(image.shape), []).append((image, rel))
    written = 0
    bar = progress(total=len(files), desc="predict", enabled=not args.no_progress)
    for group in by_size.values():
        for start in range(0, len(group), args.batch_size):
            chunk = group[start : start + args.batch_size]
            images = torch.stack([img for img, _ in chunk]).to(device)
            labels = class_argmax(predict_logits(model, images, args.scales)).cpu()
            for (image, rel), label in zip(chunk, labels, strict=True):
                target = out / rel.with_suffix(".png")
                save_label(target, label.to(torch.uint8), palette=palette)
                if args.overlay and palette is not None:
                    blend = 0.5 * image + 0.5 * colorize(label, palette)
                    save_png(image_grid({"overlay": blend[None]}, pad=0),
                             target.with_name(target.stem + "_overlay.png"))
                written += 1
            bar.update(len(chunk))
    bar.close()
    print(f"wrote {written} label maps to {out}")
    return {"written": written, "out": str(out)}


# ------------------------------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="per-class IoU and mIoU of a trained model on labelled images")
    p.add_argument("model", help="a model file written by training (<work-dir>/model.safetensors) or diga export")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--labels", required=True, help="folder of label PNGs matched by file stem")
    p.add_argument("--label-map", help="JSON/YAML file mapping raw label values to class ids")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5],
                   help="multi-scale max fusion factors (default: 1.0 0.5)")
    p.add_argument("--json", help="also write the result as JSON to this file")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_allow_pickle(p)
    p.set_defaults(func=_run_evaluate)


def format_iou_table(classes: Sequence[str], iou: Sequence[float], miou: float) -> str:
    """A plain-text per-class IoU table with the mIoU last.

    Example:
        >>> print(format_iou_table(["road", "sky"], [0.5, float("nan")], 0.5))
        class  IoU (%)
        road      50.0
        sky          -
        mIoU      50.0
    """
    width = max(len("class"), len("mIoU"), *(len(c) for c in classes))
    lines = [f"{'class':<{width}}  IoU (%)"]
    for name, value in zip(classes, iou, strict=True):
        shown = "-" if value != value else f"{100 * value:.1f}"
        lines.append(f"{name:<{width}}  {shown:>7}")
    lines.append(f"{'mIoU':<{width}}  {100 * miou:>7.1f}")
    return "\n".join(lines)


def _run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from diga.data import SegmentationFolder
    from diga.engine.checkpoint import atomic_write_json
    from diga.engine.distributed import resolve_device
    from diga.engine.log import progress
    from diga.inference import load_model, predict_logits
    from diga.metrics import ConfusionMatrix

    device = resolve_device(args.device)
    model, meta = load_model(args.model, device=device, allow_pickle=args.allow_pickle)
    classes = meta.get("classes")
    num_classes = int(meta["config"]["num_classes"])
    classes = classes or [f"class{i}" for i in range(num_classes)]
    data = SegmentationFolder(args.images, args.labels, label_map=args.label_map, classes=classes)
    cm = ConfusionMatrix(num_classes, ignore_index=meta.get("ignore_index", 255)).to(device)
    for i in progress(range(len(data)), desc="evaluate", enabled=not args.no_progress):
        item = data[i]
        logits = predict_logits(model, item["image"][None].to(device), args.scales)
        cm.update(class_argmax(logits), item["label"][None].to(device))
    out = cm.compute()
    iou = out["iou"].tolist()
    result = {"miou": float(out["miou"]), "iou": dict(zip(classes, iou, strict=True)),
              "images": len(data), "model": str(args.model)}
    print(format_iou_table(classes, iou, result["miou"]))
    if args.json:
        atomic_write_json(args.json, result)
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
    from diga.inference import export_model, load_model

    model, meta = load_model(args.model, allow_pickle=args.allow_pickle)
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; expected the .safetensors file to write")
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
    p.add_argument("--source-items", type=int, default=400, help="(default: %(default)s)")
    p.add_argument("--target-items", type=int, default=200, help="(default: %(default)s)")
    p.add_argument("--val-items", type=int, default=50, help="(default: %(default)s)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[64, 96],
                   help="image size (default: 64 96)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.set_defaults(func=_run_make_shift)


def _run_make_shift(args: argparse.Namespace) -> dict[str, Any]:
    from diga.data.shift_files import write_shift_folders

    root = write_shift_folders(args.out, source_items=args.source_items, target_items=args.target_items,
                               val_items=args.val_items, size=tuple(args.size), seed=args.seed)
    print(f"wrote the built-in domain shift to {root}")
    return {"out": str(root)}


# ----------------------------------------------------------------------------------------- main
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def _cli_markdown() -> str:
    parser = make_parser()
    parts = ["# Command line\n", "Generated from `diga --help` and each command's `--help` by "
             "`python -m diga cli-docs`; do not edit by hand.\n", "```text", parser.format_help().rstrip(), "```\n"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        parts += [f"## diga {name}\n", "```text", p.format_help().rstrip(), "```\n"]
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


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command; exit status 0 on success, 2 on a user error (one line on
    stderr naming the flag or file), 1 when a run had to stop (diverged, disk full), 130 on Ctrl-C.
    ``--debug`` (anywhere) re-raises instead, with the traceback."""
    from diga.engine.guards import TrainingDiverged, WorkDirBusy

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        run(argv)
    except SystemExit as err:
        if debug or err.code is None or isinstance(err.code, int):
            raise
        print(f"diga: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("diga: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130
    except (*_USER_ERRORS, WorkDirBusy) as err:
        if debug:
            raise
        print(f"diga: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (TrainingDiverged, OSError) as err:
        if debug:
            raise
        print(f"diga: stopped: {_one_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
