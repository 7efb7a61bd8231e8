"""Typed stage configuration: ``profiles.<name>.stages.<stage>`` in ``params.yaml``.

A stage is pure configuration: which parts train, on which data, with which optimiser
settings, starting from which earlier stage. ``defaults`` under ``stages`` apply to every
stage of the profile and each stage overrides what it needs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

from dragonfly.config import LAYOUT_KEYS, ConfigError, Profile, check_keys, from_dict, set_dotted
from dragonfly.errors import close_match

PARTS = ("projector", "vision", "llm")
SCHEDULES = ("cosine", "linear", "constant_with_warmup")
PRECISIONS = ("fp32", "bf16")
# auto: DeepSpeed ZeRO where CUDA is (the paper's 8×H100), plain accelerate elsewhere;
# deepspeed on a CPU runs ZeRO-1 on gloo (the tests do); plain is accelerate/DDP alone.
ENGINES = ("auto", "deepspeed", "plain")


@dataclass
class DataSpec:
    """A built mixture (``data.out_dir/<mixture>/dataset``) and the split to train on."""

    mixture: str = "tiny"
    split: str = "train"
    max_length: int = 2048


@dataclass
class StageConfig:
    name: str = ""
    init_from: str = "init"  # "init" = build from the profile's model section, else a stage name or a path
    train: list[str] = field(default_factory=lambda: ["projector"])
    data: DataSpec = field(default_factory=DataSpec)
    global_batch: int = 8
    micro_batch: int = 2
    lr: float = 2e-5
    lr_per_part: dict[str, float] = field(default_factory=dict)
    schedule: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    epochs: float = 1.0
    max_steps: int = 0  # >0 caps the optimiser steps
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    num_workers: int = 0
    seed: int = 0
    save_every: int = 50
    keep_last: int = 2
    log_every: int = 1
    layout: dict = field(default_factory=dict)  # overrides of the model layout (ablations)
    zero_stage: int = 1
    engine: str = "auto"  # one of ENGINES; dragonfly.train.deepspeed.engine_of resolves auto
    log_model_artifact: bool = True

    def validate(self) -> None:
        # Only layout keys: a stage must not overwrite e.g. the model's image_token_id.
        check_keys(self.layout, LAYOUT_KEYS, f"stages.{self.name}.layout.")
        unknown = sorted(set(self.train) - set(PARTS))
        if unknown or not self.train:
            raise ConfigError(f"stage {self.name}: train must list parts from {PARTS}, got {self.train}")
        for part in self.lr_per_part:
            if part not in PARTS:
                raise ConfigError(f"stage {self.name}: lr_per_part key {part!r} is not one of {PARTS}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"stage {self.name}: schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"stage {self.name}: precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"stage {self.name}: engine must be one of {ENGINES}, got {self.engine!r}")
        if self.global_batch <= 0 or self.micro_batch <= 0:
            raise ConfigError(f"stage {self.name}: global_batch and micro_batch must be positive")
        self._validate_numbers()

    def _validate_numbers(self) -> None:
        """The numbers a typo makes fail hours later (AdamW, a division, a silent no-op): here."""
        where = f"stage {self.name}"
        for key, value in (("lr", self.lr), *((f"lr_per_part.{k}", v) for k, v in self.lr_per_part.items())):
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{where}: {key} must be a positive number, got {value}")
        for key in ("save_every", "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{where}: {key} must be at least 1, got {getattr(self, key)}")
        if self.keep_last < 0:
            raise ConfigError(f"{where}: keep_last must be 0 (keep every checkpoint) or more, got {self.keep_last}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"{where}: warmup_ratio is a share of the steps, in [0, 1]; got {self.warmup_ratio}")
        for key in ("weight_decay", "grad_clip"):
            if not math.isfinite(getattr(self, key)) or getattr(self, key) < 0:
                raise ConfigError(f"{where}: {key} must be 0 or more, got {getattr(self, key)}")
        if self.epochs <= 0 or self.max_steps < 0 or self.data.max_length < 1 or self.num_workers < 0:
            raise ConfigError(
                f"{where}: epochs must be positive, and max_steps, num_workers, data.max_length not negative "
                f"(got {self.epochs}, {self.max_steps}, {self.num_workers}, {self.data.max_length})"
            )

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimiser step on each rank."""
        per_step = self.micro_batch * world_size
        if self.global_batch % per_step:
            raise ConfigError(
                f"stage {self.name}: global_batch {self.global_batch} is not a multiple of "
                f"micro_batch {self.micro_batch} × world size {world_size}"
            )
        return self.global_batch // per_step


@dataclass
class BackbonePretrainConfig:
    """``profiles.<p>.vision_pretrain`` in params.yaml; the output goes to ``model.tiny.vision_from``."""

    steps: int = 2000
    lr: float = 5.0e-4
    schedule: str = "constant_with_warmup"  # any transformers.get_scheduler name
    warmup_steps: int = 100
    batch_tiles: int = 256
    glyph_fraction: float = 0.75  # share of each batch drawn from tiles that hold a glyph
    images: int = 800
    held_out: float = 0.1
    seed: int = 1234
    glyph_area: float = 576.0  # px² at native resolution; match data.synth[*].glyph_area


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "layout":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def stage_names(profile: Profile) -> list[str]:
    return [name for name in profile.stages if name != "defaults"]


def load_stage(profile: Profile, name: str, overrides: list[str] | None = None) -> StageConfig:
    """The stage ``name`` of ``profile``: defaults, then the stage, then dotted overrides."""
    stages = profile.stages
    if name not in stages or name == "defaults":
        raise ConfigError(
            f"stage {name!r} not in profile {profile.name!r}{close_match(name, stage_names(profile))}; "
            f"stages: {', '.join(stage_names(profile)) or 'none'}"
        )
    tree = _merge(stages.get("defaults") or {}, stages[name] or {})
    for item in overrides or []:
        set_dotted(tree, item)
    stage = from_dict(StageConfig, tree, f"profiles.{profile.name}.stages.{name}.")
    stage.name = name
    stage.validate()
    return stage


def runs_dir(profile: Profile) -> Path:
    return Path(profile.runs_dir) / profile.name


def stage_dir(profile: Profile, name: str) -> Path:
    return runs_dir(profile) / name
