"""The trainers' entry points: the DiGA pipeline and its recipes, one training stage, evaluation (one
set, or several at their own resolutions) and pseudo-labels, the translator trainer, and the distributed
set-up they run under.

What the entry points share (checkpoints, loaders, logging, plots, guards) lives in the
submodules (``diga.engine.checkpoint``, ``.sampling``, ``.log``, ``.plots``, ``.guards``,
``.distributed``, ``.loop``, ``.optim``) and is imported from there.
"""

from diga.engine.distributed import DistInfo, cleanup_distributed, setup_distributed
from diga.engine.evaluation import evaluate, generate_pseudo_labels
from diga.engine.guards import TrainingDiverged, WorkDirBusy
from diga.engine.optim import OptimConfig
from diga.engine.pipeline import DataSpec, run_pipeline
from diga.engine.recipes import Recipe, StageRecipe, get_recipe
from diga.engine.stages import CollapseError, CollapseWarning, train_stage
from diga.engine.targets import PAPER_DG_SIZES, EvalTarget, evaluate_targets, paper_dg_targets
from diga.engine.translator_training import TranslatorConfig, train_translator

__all__ = [
    "PAPER_DG_SIZES",
    "CollapseError",
    "CollapseWarning",
    "DataSpec",
    "DistInfo",
    "EvalTarget",
    "OptimConfig",
    "Recipe",
    "StageRecipe",
    "TrainingDiverged",
    "TranslatorConfig",
    "WorkDirBusy",
    "cleanup_distributed",
    "evaluate",
    "evaluate_targets",
    "generate_pseudo_labels",
    "get_recipe",
    "paper_dg_targets",
    "run_pipeline",
    "setup_distributed",
    "train_stage",
    "train_translator",
]
