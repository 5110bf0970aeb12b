"""What every trainer shares: stages, checkpoints and resume, run guards, distributed set-up, logging, plots."""

from diga.engine.checkpoint import (
    WriteError,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    get_rng_state,
    load_checkpoint,
    set_rng_state,
)
from diga.engine.distributed import (
    DistInfo,
    cleanup_distributed,
    resolve_device,
    setup_distributed,
    step_generator,
    unused_parameters,
    wrap_ddp,
)
from diga.engine.guards import DivergenceGuard, TrainingDiverged, WorkDirBusy, work_dir_lock
from diga.engine.log import JsonlLogger, progress, scalars
from diga.engine.plots import colorize, image_grid, line_plot, save_png
from diga.engine.sampling import StepSampler, VirtualIndex, infinite_loader
from diga.engine.stages import (
    CollapseError,
    CollapseWarning,
    OptimConfig,
    as_batch,
    autocast_context,
    evaluate,
    generate_pseudo_labels,
    make_optimizer,
    stage_checkpoint,
    train_stage,
)
from diga.engine.translator_training import TranslatorConfig, train_translator

__all__ = [
    "CollapseError",
    "CollapseWarning",
    "DistInfo",
    "DivergenceGuard",
    "JsonlLogger",
    "OptimConfig",
    "StepSampler",
    "TrainingDiverged",
    "TranslatorConfig",
    "VirtualIndex",
    "WorkDirBusy",
    "WriteError",
    "as_batch",
    "atomic_save",
    "atomic_write_json",
    "atomic_write_text",
    "autocast_context",
    "cleanup_distributed",
    "colorize",
    "evaluate",
    "generate_pseudo_labels",
    "get_rng_state",
    "image_grid",
    "infinite_loader",
    "line_plot",
    "load_checkpoint",
    "make_optimizer",
    "progress",
    "resolve_device",
    "save_png",
    "scalars",
    "set_rng_state",
    "setup_distributed",
    "stage_checkpoint",
    "step_generator",
    "train_stage",
    "train_translator",
    "unused_parameters",
    "work_dir_lock",
    "wrap_ddp",
]
