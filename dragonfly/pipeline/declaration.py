"""The pipeline's shape, declared once.

The Prefect flow's order, the stages of ``dvc.yaml`` and ``ablation/dvc.yaml`` and the chain of
``sky/pipeline.yaml`` are all derived from :data:`STEPS` (:mod:`dragonfly.pipeline.generate`
writes the files; a test fails on a stale copy and ``dragonfly pipeline-files`` rewrites
them). What a stage trains and starts from, and the mixture it reads, are configuration:
``params.yaml``'s ``profiles.<profile>.stages`` (``train``, ``init_from``, ``data.mixture``),
read through :func:`stage_inputs`.

The code a step runs (its fingerprint, and its ``deps:`` in ``dvc.yaml``) is the import
closure of the modules doing its work, computed from the import graph: an import added
anywhere below them is in it without anyone listing a file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

PACKAGE = Path(__file__).resolve().parents[1]

# The modules doing each kind of step's work; the code of a step is everything they import,
# directly or not (not the pipeline, CLI or report around them: an edit there retrains nothing).
WORKERS: dict[str, tuple[str, ...]] = {
    "prepare": ("dragonfly.data.mixture", "dragonfly.data.synth", "dragonfly.data.plan"),
    "tower": ("dragonfly.train.backbone",),
    "train": ("dragonfly.train.trainer",),
    "eval": ("dragonfly.eval.evaluator",),
    "ablate": ("dragonfly.pipeline.ablate",),
}

# The tiny tower's own sizes: what a pretrained tower depends on besides its training
# settings (``vision_pretrain``) and the tiling (the layout's grids and feature layer).
TOWER_SHAPE = ("tile_size", "patch_size", "vision_hidden", "vision_layers", "vision_heads")
TOWER_LAYOUT = ("vision_feature_layer", "medium_grids", "high_grids")


@dataclass(frozen=True)
class Step:
    """One step of the pipeline. ``track``: general or med (the paper's two models);
    ``evaluates``: for an evaluation, the stage whose final model it scores."""

    name: str
    kind: Literal["prepare", "tower", "train", "eval"]
    track: str | None = None
    evaluates: str | None = None
    benchmarks: tuple[str, ...] = ()
    about: str = ""


STEPS: tuple[Step, ...] = (
    Step("prepare", "prepare", about="synthetic benchmarks and every mixture"),
    Step("pretrain-vision", "tower", about="the tiny profile's vision tower (CLIP's stand-in)"),
    Step("general1", "train", "general", about="the projector, on image-caption pairs"),
    Step("general2", "train", "general", about="everything, on the general instruction mix"),
    Step("eval-general", "eval", "general", evaluates="general2", benchmarks=("synth_general",)),
    Step("med1", "train", "med", about="the tower and projector, on biomedical captions"),
    Step("med2", "train", "med", about="everything, on biomedical instructions"),
    Step("med3", "train", "med", about="everything, on the biomedical benchmarks' training splits"),
    Step("eval-med", "eval", "med", evaluates="med3", benchmarks=("synth_biomedical",)),
)


def step(name: str) -> Step:
    return next(s for s in STEPS if s.name == name)


def train_stages() -> tuple[str, ...]:
    """The training stages in pipeline order."""
    return tuple(s.name for s in STEPS if s.kind == "train")


def evaluation_after(stage: str) -> Step | None:
    """The evaluation that scores ``stage``'s model (general2 → eval-general), if any."""
    return next((s for s in STEPS if s.kind == "eval" and s.evaluates == stage), None)


def default_benchmarks() -> dict[str, list[str]]:
    """The benchmarks each track is scored on by default (the tiny profile's synthetic ones)."""
    return {s.track: list(s.benchmarks) for s in STEPS if s.kind == "eval"}


@dataclass(frozen=True)
class StageInputs:
    """What a training stage reads, from the profile's configuration."""

    starts_from: str  # "init", an earlier stage, or a model folder
    trains: tuple[str, ...]
    mixture: str


def stage_inputs(profile, name: str) -> StageInputs:
    from dragonfly.train.config import load_stage

    stage = load_stage(profile, name)
    return StageInputs(stage.init_from, tuple(stage.train), stage.data.mixture)


@functools.cache
def code(kind: str) -> tuple[str, ...]:
    """The package files (relative to ``dragonfly/``) a step of ``kind`` runs: the import
    closure of its :data:`WORKERS`, function-level imports included, from grimp's graph."""
    import grimp

    graph = grimp.build_graph("dragonfly", cache_dir=None)
    modules = set(WORKERS[kind])
    for worker in WORKERS[kind]:
        modules |= graph.find_upstream_modules(worker)
    return tuple(sorted(_module_file(m) for m in modules))


def _module_file(module: str) -> str:
    path = PACKAGE.joinpath(*module.split(".")[1:])
    return (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).relative_to(PACKAGE).as_posix()
