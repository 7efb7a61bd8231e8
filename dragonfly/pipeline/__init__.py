"""The pipeline steps as plain functions with explicit arguments. The CLI, the Prefect flow
(`flows/`) and `dvc.yaml` call these and nothing else; none of them re-implements a step.

    prepare_data     synthetic benchmarks + every mixture            (steps.py)
    pretrain_vision  the tiny vision tower (CLIP's stand-in)         (steps.py)
    init_model       a model built from a profile, saved             (steps.py)
    train            one stage                                       (steps.py)
    evaluate         a model on benchmarks                           (steps.py)
    register         an evaluated model into the MLflow registry     (steps.py)
    ablate           the paper's ablation tables                     (ablate.py)

Each step is skipped when its output records the fingerprint it would record
(`dragonfly.fingerprint`): the one skip rule.
"""

from dragonfly.pipeline.ablate import run_ablation as ablate
from dragonfly.pipeline.steps import (
    FINGERPRINT_TAG,
    EvalOptions,
    Settings,
    StagePlan,
    data_config,
    evaluate,
    evaluation_fingerprint,
    init_model,
    load_settings,
    model_fingerprint,
    plan_stage,
    prepare_data,
    pretrain_vision,
    register,
    train,
)

__all__ = [
    "EvalOptions",
    "FINGERPRINT_TAG",
    "Settings",
    "StagePlan",
    "ablate",
    "data_config",
    "evaluate",
    "evaluation_fingerprint",
    "init_model",
    "load_settings",
    "model_fingerprint",
    "plan_stage",
    "prepare_data",
    "pretrain_vision",
    "register",
    "train",
]
