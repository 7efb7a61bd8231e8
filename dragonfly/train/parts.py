"""Where a stage starts from and which parts of the model it trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from dragonfly.build import build_model, dragonfly_config, make_processor
from dragonfly.config import ConfigError, Profile, from_dict
from dragonfly.inference import CheckpointError, load
from dragonfly.train.config import StageConfig, stage_dir
from dragonfly.train.data import split_texts

# Names of parameters AdamW does not decay: as the released training.py (no norms, no token
# embeddings, no lm_head), plus biases, the separators and the vision embeddings.
NO_DECAY = ("bias", "norm", "separator", "embedding", "embed_tokens", "lm_head")


def part_modules(model) -> dict[str, torch.nn.Module]:
    return {"projector": model.projector, "vision": model.vision_tower, "llm": model.language_model}


def start_model(profile: Profile, stage: StageConfig, dataset_dir: str | Path | None = None):
    """(model, processor) a stage starts from: a fresh build or an earlier stage's output.
    A fresh tiny model's tokenizer also learns the words of ``dataset_dir``'s training split
    (``model.tiny.tokenizer_from_data``)."""
    if stage.init_from == "init":
        section = profile.model
        tiny = section.source == "tiny" and section.tiny.tokenizer_from_data
        corpus = split_texts(dataset_dir, stage.data.split) if tiny and dataset_dir is not None else ()
        if stage.layout:
            section = dataclasses.replace(section, layout=stage_layout(profile, stage))
        return build_model(section, corpus)
    source = Path(stage.init_from)
    if not source.exists():
        source = stage_dir(profile, stage.init_from) / "final"
    if not (source / "config.json").is_file():
        raise CheckpointError(
            f"stage {stage.name} starts from {stage.init_from!r}, but {source} holds no saved model",
            hint=f"run stage {stage.init_from!r} first",
        )
    model, processor = load(source)
    if stage.layout:
        model, processor = apply_layout(model, processor, stage.layout, f"stages.{stage.name}.layout.")
    return model.train(), processor


def stage_layout(profile: Profile, stage: StageConfig):
    """The layout ``stage`` trains with: the profile's, the stage's keys over it, typed."""
    section = profile.model.layout
    return from_dict(type(section), {**dataclasses.asdict(section), **stage.layout}, f"stages.{stage.name}.layout.")


def check_layout(profile: Profile, stage: StageConfig) -> None:
    """Refuse a layout no model can have (the model's own rule, run on a config alone), so
    an ablation variant's typo fails before any variant trains."""
    dragonfly_config(None, None, 0, stage_layout(profile, stage))


def apply_layout(model, processor, layout: dict, where: str = "layout."):
    """Change the tiling/selection of a loaded model (ablations); parameters are untouched.
    ``layout`` holds only `Layout` keys (``StageConfig.validate`` checks), so a stage cannot
    overwrite e.g. ``image_token_id``."""
    if "projector_type" in layout and layout["projector_type"] != model.config.projector_type:
        raise ConfigError(f"{where}projector_type cannot change after initialisation (it changes the parameters)")
    for key, value in layout.items():
        setattr(model.config, key, value)
    try:
        model.config.validate_layout()
    except ValueError as err:
        raise ConfigError(f"{where.rstrip('.')}: {err}") from None
    image = processor.image_processor
    return model, make_processor(model.config, processor.tokenizer, image.image_mean, image.image_std)


def unreachable_vision_params(model) -> set[str]:
    """Vision parameters no gradient can reach: layers after ``vision_feature_layer``, the
    final norm, pooling heads. Found by one backward pass through a blank tile, which works
    for any tower; they stay frozen so DDP does not wait for their gradients."""
    tower = model.vision_tower
    saved = {n: p.requires_grad for n, p in tower.named_parameters()}
    tower.requires_grad_(True)
    tile = torch.zeros(1, 3, model.config.tile_size, model.config.tile_size)
    with torch.enable_grad():
        model.encode_tiles(tile).float().square().mean().backward()
    unreachable = {n for n, p in tower.named_parameters() if p.grad is None}
    for n, p in tower.named_parameters():
        p.grad, p.requires_grad = None, saved[n]
    model.projector.zero_grad(set_to_none=True)
    return unreachable


def set_trainable(model, parts: list[str]) -> dict[str, list[tuple[str, torch.nn.Parameter]]]:
    """Freeze everything but ``parts``; returns the trainable named parameters per part."""
    unreachable = unreachable_vision_params(model) if "vision" in parts else set()
    trainable = {}
    for part, module in part_modules(model).items():
        module.requires_grad_(part in parts)
        if part == "vision":
            for name, param in module.named_parameters():
                if name in unreachable:
                    param.requires_grad_(False)
        if part in parts:
            trainable[part] = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if not any(trainable.values()):
        raise ConfigError(f"stage trains {parts} but that selects no parameters")
    return trainable


def param_groups(trainable: dict, stage: StageConfig) -> list[dict]:
    """AdamW groups: per-part learning rate, no weight decay on biases, norms and embeddings."""
    groups = []
    for part, named in trainable.items():
        lr = stage.lr_per_part.get(part, stage.lr)
        decay = [p for n, p in named if not any(k in n.lower() for k in NO_DECAY) and p.ndim > 1]
        other = [p for n, p in named if any(k in n.lower() for k in NO_DECAY) or p.ndim <= 1]
        for params, wd in ((decay, stage.weight_decay), (other, 0.0)):
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": wd, "part": part})
    return groups
