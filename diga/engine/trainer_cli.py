"""Flags every reference trainer shares, and the wiring from flags to :func:`run_pipeline`."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from diga.adapter import AblationOptions
from diga.engine.data_specs import benchmark_data, dg_data, ssl_data
from diga.engine.distributed import DistInfo, cleanup_distributed, setup_distributed
from diga.engine.guards import work_dir_lock
from diga.engine.optim import LR_SCHEDULES
from diga.engine.pipeline import DataSpec, run_pipeline
from diga.engine.preflight import (
    Number,
    check_outputs,
    check_same_run,
    device_flag,
    input_paths,
    integer,
    real,
    scan_labels,
)
from diga.engine.recipes import Recipe, get_recipe, list_presets, recipe_model

__all__ = [
    "OneLineParser",
    "MAY_DIFFER_ON_RESUME",
    "add_run_args",
    "add_sliding_args",
    "add_trainer_args",
    "benchmark_parser",
    "build_model",
    "build_translator",
    "check_work_dir",
    "generalization_parser",
    "config_defaults",
    "load_config_file",
    "parse_with_config",
    "recorded_settings",
    "resolve_workers",
    "run_benchmark_trainer",
    "run_generalization_trainer",
    "run_semi_supervised_trainer",
    "run_settings",
    "run_trainer",
    "semi_supervised_parser",
    "sliding_window",
]

_SOURCES = {  # benchmark: (--source-root help, name in --source-list's help)
    "gta5": ("GTA5 folder with images/ and labels/", "GTA5"),
    "synthia": ("SYNTHIA-RAND-CITYSCAPES folder with RGB/ and GT/LABELS/", "SYNTHIA"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad flag ending in one line (``<prog>: error: ...``, exit status 2, through
    :func:`diga.cli.script_main`) instead of the usage text."""

    def error(self, message: str):  # type: ignore[override]
        raise SystemExit(f"{message} (see `{self.prog} --help`)")


def add_run_args(parser: argparse.ArgumentParser, *, work_dir: str, what: str,
                 preset_help: str, presets: Sequence[str] = ("paper", "tiny")) -> argparse._ArgumentGroup:
    """The "run" flags every trainer shares (DiGA's and the translator's): ``--work-dir``,
    ``--preset`` (one of ``presets``), ``--resume``, ``--device``, ``--seed``, ``--amp``, ``--num-workers``,
    ``--no-progress`` and ``--config``; ``what`` says what goes into the work dir."""
    g = parser.add_argument_group("run")
    g.add_argument("--work-dir", default=work_dir, help=f"where {what} go (default: %(default)s)")
    g.add_argument("--preset", choices=tuple(presets), default="paper", help=preset_help)
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --work-dir: finished stages are skipped, the interrupted one "
                        "resumes at its last checkpoint with the same data order (default: off; without it an "
                        "existing run in --work-dir is an error)")
    g.add_argument("--device", type=device_flag, default="auto", help="'auto' (CUDA when available), 'cpu', "
                   "'cuda' or 'cuda:N' (default: %(default)s; paper: one GPU)")
    g.add_argument("--seed", type=integer(low=0), default=0, help="seed of data order, augmentation, masks and model "
                   "init (default: %(default)s; the paper's scripts are unseeded)")
    g.add_argument("--amp", action="store_true", help="mixed precision: bf16 where supported, else fp16 with "
                   "gradient scaling (default: off; paper: fp32)")
    g.add_argument("--num-workers", type=integer(low=0), default=None, help="data-loading workers per loader and "
                   "process (default: min(4, CPU count); paper: 1)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")
    g.add_argument("--config", default=None, help="YAML or JSON file whose keys set any of these flags "
                   "(command-line flags win); the resolved config is written to the work dir")
    return g


def add_trainer_args(parser: argparse.ArgumentParser, *, paper: Recipe, benchmark: str = "gta5"
                     ) -> argparse.ArgumentParser:
    """Add the flags every DiGA trainer shares; help texts give each default and the paper's value.

    ``benchmark`` names the recipes (``--preset`` offers its presets); flags the paper recipe's
    setting has no use for are left out (``"dg"``: the translator, self-training and target flags;
    ``"ssl"``: the translator and the target leak)."""
    setting = paper.setting
    presets = list_presets(benchmark)
    add_run_args(parser, work_dir="runs/diga", what="checkpoints, logs, pseudo-labels and results",
                 presets=presets,
                 preset_help="'paper': the paper's recipe; 'tiny': every stage for a few steps at small crops, "
                             "to check a pipeline on CPU in minutes"
                             + ("; 'dinov2' / 'dinov2_tiny': the foundation-model preset (docs/recipes.md)"
                                if "dinov2" in presets else "") + " (default: %(default)s)")

    m = parser.add_argument_group("model")
    m.add_argument("--model", default=None, help="any name of diga.list_models(): smp architectures, "
                   "'deeplabv2', 'hrnet_ocr', 'daformer', 'timm' (default: the preset's; paper: "
                   f"{paper.model})")
    m.add_argument("--encoder-name", "--encoder", dest="encoder_name", default=None, help="encoder / backbone "
                   "name (create_model's encoder_name), e.g. resnet101, hrnet_w48, mit_b5, or a timm "
                   "model for --model timm such as vit_small_patch14_dinov2 (default: the preset's with its "
                   "model, else the model's own; paper: " + paper.encoder + ")")
    m.add_argument("--pretrained", action="store_true", help="load ImageNet weights for the encoder (needs them "
                   "downloadable or cached; default: off; paper: on)")
    m.add_argument("--sync-bn", action="store_true", help="synchronised batch norm across ranks under "
                   "torchrun (default: off)")
    m.add_argument("--channels-last", action="store_true", help="channels_last memory format on CUDA "
                   "(default: off)")

    r = parser.add_argument_group("recipe overrides")
    if setting == "uda":
        r.add_argument("--translator", default=None, help="'fourier' (zero-training FDA), 'none', or the "
                       "path of a learned translator checkpoint from `diga translate` "
                       "(default: 'fourier' in UDA, 'none' in the semi-supervised setting; paper: learned)")
        r.add_argument("--fourier-beta", type=real(low=0, high=0.5), default=paper.fourier_beta, help="FDA band, "
                       f"in [0, 0.5] (default: %(default)s; paper: {paper.fourier_beta})")
    r.add_argument("--warmup-steps", type=integer(low=1), default=None,
                   help=f"warm-up iterations (default: the preset's; paper: {paper.warmup.steps})")
    r.add_argument("--warmup-lr-schedule", choices=LR_SCHEDULES, default=None,
                   help="the warm-up's learning-rate schedule: 'poly' decay or a linear 'rise' over the whole "
                   f"stage (default: the preset's; paper script: {paper.warmup.lr_schedule})")
    if setting != "dg":
        r.add_argument("--self-training-steps", type=integer(low=1), default=None, help="iterations per "
                       f"self-training round (default: the preset's; paper: {paper.self_training.steps})")
        r.add_argument("--rounds", type=integer(low=0), default=None, help="self-training rounds, 0 for the "
                       f"warm-up alone (default: the preset's; paper: {paper.rounds})")
    r.add_argument("--lr", type=real(low=0, low_open=True), default=None,
                   help=f"base learning rate, head at {paper.optim.head_lr_mult:g}x (default: the preset's; paper: "
                   f"{paper.optim.lr})")
    r.add_argument("--eval-every", type=integer(low=0), default=0, help="also evaluate every N steps and keep the best "
                   "checkpoint, reported as best-by-validation (default: 0 = at stage ends only)")
    r.add_argument("--rare-class-sampling", action="store_true",
                   help="DAFormer's rare-class sampling of source crops (default: off, as the paper)")
    if setting == "uda":
        r.add_argument("--target-bn-leak", action="store_true", help="reproduce the paper script's warm-up leak "
                       "of target batch-norm statistics (default: off; paper script: on)")
    r.add_argument("--teacher-train-mode", action="store_true",
                   help="keep the teacher in train mode as the paper's script (default: off)")
    r.add_argument("--teacher-ramp", type=real(low=0, low_open=True), default=None,
                   help="warm-up teacher's averaging window as a fraction of the steps so far (default: the "
                   "preset's, the paper's true average 1.0; 0.1 for runs of a few thousand steps or less)")
    if setting != "dg":
        r.add_argument("--select-with", choices=("teacher", "labeller"), default=None,
                       help="whose features the dynamic selection reads: the EMA teacher's at every step (the "
                       "paper's) or the frozen stage-start model's, against the centroid pass's centroids: a "
                       "selection fixed for each round (default: the preset's, the paper's 'teacher', as the "
                       "Adapter's; docs/findings.md has what each did on the built-in shifts)")
    r.add_argument("--mixed-view-ce", action=argparse.BooleanOptionalAction, default=None,
                   help="warm-up CE on the second (mixed or augmented) view too, not only on the clean one "
                   "(default: the preset's, the paper's loss: off; the Adapter's default in UDA: on; "
                   "docs/findings.md has what each did on the built-in shifts)")
    if setting != "dg":
        r.add_argument("--stop-on-collapse", action="store_true",
                       help="stop self-training when the collapse watch fires (default: warn and log it)")
    add_sliding_args(parser.add_argument_group("evaluation and pseudo-labels"))
    return parser


def add_sliding_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--slide H W`` and ``--stride H W``: sliding-window inference (:func:`sliding_window` reads them)."""
    parser.add_argument("--slide", type=integer(low=1), nargs=2, metavar=("H", "W"), default=None,
                        help="predict in H x W windows (logits averaged where they overlap; every scale slides) "
                             "instead of whole images; HRDA's setting: --slide 1024 1024 --stride 512 512 "
                             "(default: whole images, and HRDA's windows for an image above 4096 x 4096 pixels)")
    parser.add_argument("--stride", type=integer(low=1), nargs=2, metavar=("H", "W"), default=None,
                        help="step between windows, at most the window (default: half the window)")


def sliding_window(args: argparse.Namespace) -> tuple[tuple[int, int], tuple[int, int]] | tuple[None, None]:
    """``(window, stride)`` from ``--slide`` / ``--stride``, checked; ``(None, None)`` without ``--slide``.

    Raises:
        ValueError: ``--stride`` without ``--slide``, or a stride larger than the window.
    """
    from diga.inference import check_window

    slide, stride = getattr(args, "slide", None), getattr(args, "stride", None)
    if slide is None:
        if stride is not None:
            raise ValueError(f"--stride {stride[0]} {stride[1]} needs --slide H W (the window it steps)")
        return None, None
    window, step = check_window(tuple(slide), None if stride is None else tuple(stride))
    if step[0] > window[0] or step[1] > window[1]:  # pragma: no cover - check_window refuses first
        raise ValueError("--stride must be at most --slide")
    return window, step


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Flag values from a YAML (when PyYAML is installed) or JSON file; keys may use - or _."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"--config {path} is not a text file (JSON or YAML expected): {err}") from err
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as err:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); or use JSON") from err
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"--config {path} is not valid YAML: {' '.join(str(err).split())}") from err
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--config {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a mapping of flag names to values, got {type(data).__name__}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def config_defaults(path: str | os.PathLike, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The ``--config`` file's values for ``parser``'s flags, converted and checked as the command line would.

    Raises:
        ValueError: a key that is no flag of ``parser`` (the valid ones are named), or a value
            of the wrong type or out of the flag's choices (the key and value are named).
    """
    values = load_config_file(path)
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config", "func")}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ValueError(f"--config {path}: unknown keys {unknown}; valid keys are the flag names "
                         "(with - or _), such as 'warmup_steps'")
    return {key: _config_value(actions[key], value, path) for key, value in values.items()}


def _config_value(action: argparse.Action, value: Any, origin: str) -> Any:
    """A config file's value for ``action``, converted as the command line would, or a ValueError."""
    where = f"--config {origin}: key {action.dest!r}"
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if value is None:
        return None
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    items = value if many and isinstance(value, (list, tuple)) else [value]
    if many and not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} must be a list, got {value!r}")
    if isinstance(action.nargs, int) and len(items) != action.nargs:
        raise ValueError(f"{where} must be a list of {action.nargs} values, got {value!r}")
    out = []
    for item in items:
        if isinstance(action.type, Number) or action.type is device_flag:
            try:
                item = action.type(item)
            except argparse.ArgumentTypeError as err:
                raise ValueError(f"{where}: {err}") from None
            out.append(item)
            continue
        bad = (not isinstance(item, str)) if action.type is None else (
            isinstance(item, bool) or not isinstance(item, (str, int, float))
            or (action.type is int and isinstance(item, float)))
        try:
            item = item if bad or action.type is None else action.type(item)
        except (TypeError, ValueError):
            bad = True
        if bad:
            raise ValueError(f"{where} must be {_type_name(action)}, got {item!r}")
        if action.choices is not None and item not in action.choices:
            raise ValueError(f"{where} must be one of {list(action.choices)}, got {item!r}")
        out.append(item)
    return out if many else out[0]


def _type_name(action: argparse.Action) -> str:
    if isinstance(action.type, Number):
        return action.type.expected
    return {int: "an integer", float: "a number"}.get(action.type, "a string")


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse flags, with a ``--config`` file's values as the flags' defaults: a typed flag always wins.

    The file's values go through ``parser.set_defaults`` (of the chosen sub-command's parser,
    when ``parser`` has sub-commands) and the command line is parsed again over them, so a
    flag given on the command line wins even when it equals the flag's own default.

    Example:
        >>> import json, tempfile, pathlib
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--config"); _ = p.add_argument("--steps", type=int, default=10)
        >>> cfg = pathlib.Path(tempfile.mkdtemp()) / "c.json"
        >>> _ = cfg.write_text(json.dumps({"steps": 5}))
        >>> parse_with_config(p, ["--config", str(cfg)]).steps
        5
        >>> parse_with_config(p, ["--config", str(cfg), "--steps", "10"]).steps  # typed, equal to the default
        10
    """
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        target = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                target = action.choices[getattr(args, action.dest)]
        target.set_defaults(**config_defaults(args.config, target))
        args = parser.parse_args(argv)
    return args


def resolve_recipe(args: argparse.Namespace, benchmark: str) -> Recipe:
    """The preset's recipe with every recipe flag given applied (``--slide``/``--stride`` become its
    evaluation window, which wins over the preset's)."""
    if args.preset not in list_presets(benchmark):
        raise ValueError(f"--preset {args.preset} has no {benchmark} recipe; expected one of "
                         f"{list(list_presets(benchmark))}")
    recipe = get_recipe(benchmark, args.preset)
    recipe = recipe.with_steps(args.warmup_steps, getattr(args, "self_training_steps", None))
    if getattr(args, "rounds", None) is not None:
        if recipe.setting == "dg" and args.rounds:
            raise ValueError(f"--rounds must be 0 for domain generalisation (the warm-up alone), got {args.rounds}")
        recipe = replace(recipe, rounds=args.rounds)
    if getattr(args, "warmup_lr_schedule", None) is not None:
        recipe = replace(recipe, warmup=replace(recipe.warmup, lr_schedule=args.warmup_lr_schedule))
    window, stride = sliding_window(args)
    if window is not None:
        recipe = replace(recipe, eval_window=window, eval_stride=stride)
    if args.lr is not None:
        recipe = replace(recipe, optim=replace(recipe.optim, lr=args.lr))
    if args.teacher_ramp is not None:
        recipe = replace(recipe, teacher_ramp=args.teacher_ramp)
    if getattr(args, "select_with", None) is not None:
        recipe = replace(recipe, select_with=args.select_with)
    if args.mixed_view_ce is not None:
        recipe = replace(recipe, mixed_view_ce=args.mixed_view_ce)
    return replace(recipe, fourier_beta=getattr(args, "fourier_beta", recipe.fourier_beta), eval_every=args.eval_every)


def build_model(args: argparse.Namespace, recipe: Recipe) -> torch.nn.Module:
    """The preset's network (:func:`~diga.engine.recipes.recipe_model`) unless ``--model`` / ``--encoder-name``
    say otherwise: ``--encoder`` alone swaps the preset model's encoder; ``--model`` alone takes the preset's
    encoder when the model is the preset's, else :func:`~diga.create_model`'s own default encoder."""
    from diga.models import create_model

    model, encoder = _resolved_model(args, recipe)
    if model == recipe.model and encoder == recipe.encoder:
        return recipe_model(replace(recipe, num_classes=recipe.num_classes), pretrained=args.pretrained)
    return create_model(model, num_classes=recipe.num_classes, encoder_name=encoder, pretrained=args.pretrained)


def _resolved_model(args: argparse.Namespace, recipe: Recipe) -> tuple[str, str | None]:
    """``(model, encoder)`` a run builds: the flags where given, else the preset's."""
    model = args.model or recipe.model
    encoder = args.encoder_name
    if encoder is None and model == recipe.model:
        encoder = recipe.encoder
    return model, encoder


def build_translator(spec: str, fourier_beta: float):
    """``'fourier'``, ``'none'``, or a learned translator checkpoint path."""
    from diga.translation import FourierTranslator

    if spec == "none":
        return None
    if spec == "fourier":
        return FourierTranslator(beta=fourier_beta)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"--translator must be 'fourier', 'none' or a translator checkpoint; file not found: {path}"
        )
    from diga.translation import LearnedTranslator

    return LearnedTranslator.from_checkpoint(path)


def check_work_dir(work_dir: Path, resume: bool) -> None:
    """Without ``--resume``, a work dir that already holds checkpoints is an error (exit status 2)."""
    existing = (work_dir / "checkpoints").is_dir() and any((work_dir / "checkpoints").iterdir())
    if existing and not resume:
        raise SystemExit(
            f"{work_dir} already holds a run (checkpoints/). Pass --resume to continue it, "
            "or choose another --work-dir."
        )


#: Flags a ``--resume`` may change: they change logging, speed or the machine, not what is trained
#: (``--amp``, ``--seed``, the data, the model and every recipe value are the run's and must match).
MAY_DIFFER_ON_RESUME: frozenset[str] = frozenset({
    "resume", "no_progress", "num_workers", "device", "channels_last", "config", "work_dir", "eval_every",
    "stop_on_collapse", "debug", "command",
})
# Flags that only feed the recipe: compared through the resolved recipe (an explicit flag equal to
# the preset's value is the same run), named by their flag when they differ.
_RECIPE_FLAGS = {
    "num_classes": "--num-classes", "crop_size": "--crop-size", "warmup.steps": "--warmup-steps",
    "self_training.steps": "--self-training-steps", "rounds": "--rounds", "optim.lr": "--lr",
    "teacher_ramp": "--teacher-ramp", "select_with": "--select-with", "mixed_view_ce": "--mixed-view-ce",
    "fourier_beta": "--fourier-beta", "warmup.lr_schedule": "--warmup-lr-schedule", "eval_window": "--slide",
    "eval_stride": "--stride",
}
_RECIPE_DESTS = {"preset", "warmup_steps", "self_training_steps", "rounds", "lr", "teacher_ramp", "select_with",
                 "mixed_view_ce", "fourier_beta", "crop_size", "num_classes", "encoder_name", "model",
                 "warmup_lr_schedule", "slide", "stride"}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def run_settings(args: argparse.Namespace, recipe: Recipe, *, benchmark: str, world_size: int) -> dict[str, Any]:
    """What defines a run, named as the user would name it: every flag but :data:`MAY_DIFFER_ON_RESUME`
    (paths made absolute), the resolved encoder, the recipe's values and the number of processes.

    Written to ``config.json`` as ``"settings"``; :func:`check_same_run` compares a ``--resume`` with it.
    """
    from diga.engine.preflight import INPUT_FLAGS

    model, encoder = _resolved_model(args, recipe)
    settings: dict[str, Any] = {"benchmark": benchmark, "--preset": args.preset, "--model": model,
                                "--encoder": encoder, "processes (torchrun)": world_size}
    for dest, value in sorted(vars(args).items()):
        if dest in MAY_DIFFER_ON_RESUME or dest in _RECIPE_DESTS or callable(value):
            continue
        if dest in INPUT_FLAGS and value is not None and not (dest == "translator" and value in ("fourier", "none")):
            if dest != "classes" or Path(value).is_file():
                value = [os.path.abspath(v) for v in value] if isinstance(value, (list, tuple)) else \
                    os.path.abspath(value)
        settings["--" + dest.replace("_", "-")] = value
    recipe_values = {k: v for k, v in _flatten(recipe.to_dict()).items() if k not in ("eval_every", "name")}
    for key in sorted(recipe_values, key=lambda k: (k not in _RECIPE_FLAGS, _RECIPE_FLAGS.get(k, k))):
        settings[_RECIPE_FLAGS.get(key, f"the recipe's {key}")] = recipe_values[key]
    return settings


def recorded_settings(path: Path, *keys: str) -> dict[str, Any] | None:
    """The settings a run recorded in a JSON file (``config.json``: ``"settings"``), or None."""
    if not path.is_file():
        return None
    try:
        value: Any = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--resume: cannot read {path} ({err}); expected the JSON the run wrote") from err
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else None


def run_trainer(
    args: argparse.Namespace,
    *,
    benchmark: str,
    make_data: Callable[[argparse.Namespace, Recipe], DataSpec],
    adjust_recipe: Callable[[Recipe], Recipe] | None = None,
    data_flags: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Everything after argument parsing: checks, processes, model, translator, data, the pipeline.

    Before anything is built: ``--work-dir`` is checked against every input path
    (:func:`~diga.engine.preflight.check_outputs`), ``--slide`` / ``--stride``; under the work
    dir's lock, an existing run needs ``--resume`` and a resumed one the same settings
    (:func:`run_settings`); then every data file is pre-scanned
    (:func:`~diga.engine.preflight.scan_labels`). ``adjust_recipe`` edits the preset first
    (``diga adapt`` on folders sets the class count and crop size there); ``data_flags`` names
    the flags of the ``"source"``, ``"target"`` and ``"val"`` data as ``(images flag, labels flag)``.
    """
    recipe = resolve_recipe(args, benchmark)
    if adjust_recipe is not None:
        recipe = adjust_recipe(recipe)
    work_dir = Path(args.work_dir)
    check_outputs({"--work-dir": work_dir}, input_paths(args))
    dist = setup_distributed(args.device)
    try:
        with work_dir_lock(work_dir, enabled=dist.is_main):
            return _run_locked(args, benchmark, make_data, recipe, dist, work_dir, data_flags)
    finally:
        cleanup_distributed()


def _run_locked(args: argparse.Namespace, benchmark: str, make_data: Callable, recipe: Recipe, dist: DistInfo,
                work_dir: Path, data_flags: dict[str, tuple[str, str]] | None) -> dict[str, Any]:
    """What :func:`run_trainer` does while it holds the work dir's lock."""
    check_work_dir(work_dir, args.resume)
    settings = run_settings(args, recipe, benchmark=benchmark, world_size=dist.world_size)
    if args.resume:
        check_same_run(recorded_settings(work_dir / "config.json", "settings"), settings, work_dir=work_dir)
    data = make_data(args, recipe)
    if dist.is_main:
        _scan(data, recipe, data_flags or {}, show_progress=not args.no_progress)
    torch.manual_seed(args.seed)
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = build_model(args, recipe)
    if args.sync_bn and dist.world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if args.channels_last and dist.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    translator = build_translator(getattr(args, "translator", None) or ("fourier" if recipe.setting == "uda"
                                                                          else "none"), recipe.fourier_beta)
    if isinstance(translator, torch.nn.Module):
        translator = translator.to(dist.device).eval()
    config = {"benchmark": benchmark, "args": {k: v for k, v in vars(args).items() if not callable(v)},
              "settings": settings}
    return run_pipeline(
        recipe, data, model=model, work_dir=work_dir, translator=translator, dist=dist,
        seed=args.seed, amp=args.amp, num_workers=resolve_workers(args.num_workers), resume=args.resume,
        show_progress=not args.no_progress, config=config, stop_on_collapse=getattr(args, "stop_on_collapse", False),
        adapter_kwargs={"ablation": AblationOptions(target_bn_leak=getattr(args, "target_bn_leak", False),
                                                    teacher_train_mode=args.teacher_train_mode)},
    )


def _scan(data: DataSpec, recipe: Recipe, flags: dict[str, tuple[str, str]], *, show_progress: bool) -> None:
    """Pre-scan the source, target and validation files; say once when crops will be padded."""
    import sys

    default = {"source": ("--source-root", "--source-root"), "target": ("--target-root", "--target-root"),
               "val": ("--target-root", "--target-root")}
    crop = tuple(recipe.crop_size)
    small = []
    parts = [("source", data.source("high", recipe.warmup))]
    if data.target_full is not None:
        parts.append(("target", data.target_full()))
    if data.val is not None:
        parts.append(("val", data.val()))
    for target in data.eval_targets() if data.eval_targets is not None else ():
        parts.append((f"val:{target.name}", target.build()))
    for part, dataset in parts:
        image_flag, label_flag = flags.get(part, default.get(part.split(":")[0]))
        found = scan_labels(dataset, flag=image_flag, label_flag=label_flag, show_progress=show_progress,
                            crop=None if part.startswith("val") else crop)
        if found.smaller:
            small.append(f"{found.smaller} of {found.items} {image_flag} images")
    if small:
        print(f"diga: note: {' and '.join(small)} are smaller than the {crop[0]} x {crop[1]} training crop: their "
              "crops are padded (image with zeros, label with the ignore index 255, never trained on)",
              file=sys.stderr)


def resolve_workers(requested: int | None) -> int:
    """``--num-workers``, or min(4, CPU count) when not given (more only oversubscribes small machines)."""
    if requested is None:
        return min(4, os.cpu_count() or 1)
    if requested < 0:
        raise ValueError(f"--num-workers must be >= 0, got {requested}")
    return requested


def benchmark_parser(benchmark: str, description: str | None = None) -> argparse.ArgumentParser:
    """The parser of a reference trainer (``gta5`` or ``synthia`` -> Cityscapes): data flags + shared flags."""
    if benchmark not in _SOURCES:
        raise ValueError(f"`benchmark` must be one of {sorted(_SOURCES)}, got {benchmark!r}")
    source_help, source_name = _SOURCES[benchmark]
    parser = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--source-root", required=True, help=source_help)
    data.add_argument("--target-root", required=True, help="Cityscapes folder with leftImg8bit/ and gtFine/")
    data.add_argument("--source-list", default=None, help=f"optional list of {source_name} image names to use")
    data.add_argument("--target-list", default=None, help="optional list of Cityscapes train images")
    return add_trainer_args(parser, paper=get_recipe(benchmark, "paper"))


def run_benchmark_trainer(
    benchmark: str, argv: Sequence[str] | None = None, *, description: str | None = None
) -> dict[str, Any]:
    """Parse a reference trainer's flags (and ``--config``) and run every stage on its datasets."""
    args = parse_with_config(benchmark_parser(benchmark, description), argv)
    return run_trainer(args, benchmark=benchmark, make_data=lambda a, recipe: benchmark_data(
        benchmark, recipe, source_root=a.source_root, target_root=a.target_root, seed=a.seed,
        source_list=a.source_list, target_list=a.target_list,
        rare_class_sampling=a.rare_class_sampling, work_dir=a.work_dir,
    ))


# ------------------------------------------------------------------ the other two settings' trainers
_DG_TARGET_FLAGS = {"cityscapes": "--cityscapes-root", "bdd100k": "--bdd-root", "mapillary": "--mapillary-root"}


def generalization_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The parser of the GTA5 -> {Cityscapes, BDD100k, Mapillary} generalisation trainer (``gta5_dg``)."""
    parser = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data (the source trains; every target given is evaluated)")
    data.add_argument("--source-root", required=True, help=_SOURCES["gta5"][0])
    data.add_argument("--source-list", default=None, help="optional list of GTA5 image names to use (the scripts: "
                      "gta5_list/train_modified.txt, 18,111 of 24,966)")
    data.add_argument("--cityscapes-root", default=None, help="Cityscapes folder (val at 1024 x 2048)")
    data.add_argument("--bdd-root", default=None, help="BDD100k folder, any of its layouts (val at 720 x 1280)")
    data.add_argument("--mapillary-root", default=None, help="Mapillary Vistas folder, v1.2 labels (validation, "
                      "resized to 1080 x 1920, 66 classes grouped into 19)")
    return add_trainer_args(parser, paper=get_recipe("gta5_dg", "paper"), benchmark="gta5_dg")


def run_generalization_trainer(argv: Sequence[str] | None = None, *, description: str | None = None
                               ) -> dict[str, Any]:
    """Parse the generalisation trainer's flags and run it: the warm-up on GTA5 alone, then one row per
    target given (and their mean) in ``results.json``."""
    args = parse_with_config(generalization_parser(description), argv)
    roots = {name: getattr(args, flag[2:].replace("-", "_")) for name, flag in _DG_TARGET_FLAGS.items()}
    if all(root is None for root in roots.values()):
        raise ValueError("give at least one evaluation target: --cityscapes-root, --bdd-root or --mapillary-root")
    flags = {"source": ("--source-root", "--source-root"),
             **{f"val:{name}": (flag, flag) for name, flag in _DG_TARGET_FLAGS.items()}}
    return run_trainer(args, benchmark="gta5_dg", data_flags=flags, make_data=lambda a, recipe: dg_data(
        recipe, source_root=a.source_root, cityscapes_root=a.cityscapes_root, bdd_root=a.bdd_root,
        mapillary_root=a.mapillary_root, seed=a.seed, source_list=a.source_list,
        rare_class_sampling=a.rare_class_sampling, work_dir=a.work_dir))


def _fraction(value: str) -> str:
    """``--split``'s argparse type: a fraction in (0, 1) such as 1/16, kept as written."""
    from diga.data.splits import parse_fraction

    try:
        share = parse_fraction(value, "--split")
    except ValueError:
        share = None
    if share is None or share >= 1:
        raise argparse.ArgumentTypeError(f"expected a labelled fraction in (0, 1) such as 1/16 or 0.25, got {value!r}")
    return value


def semi_supervised_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The parser of the semi-supervised Cityscapes trainer (``cityscapes_ssl``)."""
    parser = OneLineParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--root", required=True, help="Cityscapes folder with leftImg8bit/ and gtFine/")
    split = data.add_mutually_exclusive_group()
    split.add_argument("--split", type=_fraction, default=None, help="labelled share of the 2975 training images, "
                       "a seeded draw: 1/16 (186), 1/8 (372), 1/4 (744) or 1/2 (1488), the paper's, or any fraction "
                       "below 1 (default: the preset's, 1/16)")
    split.add_argument("--labelled-list", default=None, help="a list of the labelled training images (e.g. the "
                       "scripts' train_image_labeled_1-16.txt); every other training image is unlabelled")
    return add_trainer_args(parser, paper=get_recipe("cityscapes_ssl", "paper"), benchmark="cityscapes_ssl")


def run_semi_supervised_trainer(argv: Sequence[str] | None = None, *, description: str | None = None
                                ) -> dict[str, Any]:
    """Parse the semi-supervised trainer's flags and run it: the split written to ``<work-dir>/split/``,
    the warm-up on the labelled images, pseudo-labels for the unlabelled ones, centroids over all, one
    self-training round, evaluation on Cityscapes val."""
    args = parse_with_config(semi_supervised_parser(description), argv)
    flags = {part: ("--root", "--root") for part in ("source", "target", "val")}
    return run_trainer(args, benchmark="cityscapes_ssl", data_flags=flags, make_data=lambda a, recipe: ssl_data(
        recipe, root=a.root, work_dir=a.work_dir, seed=a.seed, fraction=a.split, labelled_list=a.labelled_list))
