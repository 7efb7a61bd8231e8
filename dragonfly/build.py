"""Assemble a Dragonfly model + processor: from the tiny profile, or from pretrained
vision and LLM backbones (the paper profile: CLIP ViT-B/32 + Llama-3-8B-Instruct).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from dragonfly.config import ConfigError, Layout, ModelSection
from dragonfly.model.constants import CLIP_MEAN, CLIP_STD, IMAGE_TOKEN
from dragonfly.model.modeling import DragonflyConfig, DragonflyForConditionalGeneration
from dragonfly.model.processor import DragonflyImageProcessor, DragonflyProcessor
from dragonfly.model.specs import TinySpec
from dragonfly.model.tiny import build_tokenizer, text_config, vision_config
from dragonfly.weights import DUAL_ENCODER_UNUSED, load_strict


def dragonfly_config(vision_cfg, text_cfg, image_token_id: int, layout: Layout) -> DragonflyConfig:
    try:
        return DragonflyConfig(
            vision_config=vision_cfg, text_config=text_cfg, image_token_id=image_token_id, **asdict(layout)
        )
    except ValueError as err:  # the model core validates the layout; name it as the config key
        raise ConfigError(f"model.layout: {err}") from None


def make_processor(
    config: DragonflyConfig,
    tokenizer,
    image_mean=CLIP_MEAN,
    image_std=CLIP_STD,
    *,
    reuse_resized: bool = True,
    image_position: str = "inline",
) -> DragonflyProcessor:
    """The processor that matches ``config``: same tiling, same image sequence length."""
    image_processor = DragonflyImageProcessor(
        reuse_resized=reuse_resized,
        tile_size=config.tile_size,
        medium_grids=config.medium_grids,
        high_grids=config.high_grids,
        resize_mode=config.resize_mode,
        region_rule=config.region_rule,
        image_mean=image_mean,
        image_std=image_std,
    )
    return DragonflyProcessor(
        image_processor, tokenizer, image_seq_length=config.image_seq_length, image_position=image_position
    )


def build_tiny(spec: TinySpec | None = None, layout: Layout | None = None, seed: int = 0, corpus: Sequence[str] = ()):
    """A tiny model and its processor; seconds on a CPU, no download. ``corpus`` (texts)
    trains the tokenizer beside its base word list when ``spec.tokenizer_from_data``.

    The LLM and projector are random. The vision tower is random too, unless
    ``spec.vision_from`` names a pretrained tiny tower (``dragonfly pretrain-vision``),
    which is then loaded like any hub vision backbone.
    """
    spec, layout = spec or TinySpec(), layout or Layout()
    tokenizer = build_tokenizer(spec.vocab_size, corpus=corpus if spec.tokenizer_from_data else ())
    tower, vision_cfg, mean, std = None, vision_config(spec), CLIP_MEAN, CLIP_STD
    if spec.vision_from:
        if not (Path(spec.vision_from) / "config.json").is_file():
            raise ConfigError(
                f"model.tiny.vision_from={spec.vision_from!r} holds no vision checkpoint",
                hint="write it with `dragonfly pretrain-vision` (or set model.tiny.vision_from=null)",
            )
        tower, vision_cfg, mean, std = _vision_backbone(spec.vision_from, torch.float32)
        if (vision_cfg.image_size, vision_cfg.patch_size) != (spec.tile_size, spec.patch_size):
            raise ConfigError(
                f"{spec.vision_from} has tile/patch {vision_cfg.image_size}/{vision_cfg.patch_size}, "
                f"the profile asks for {spec.tile_size}/{spec.patch_size}"
            )
    config = dragonfly_config(
        vision_cfg, text_config(spec, tokenizer), tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), layout
    )
    torch.manual_seed(seed)
    model = DragonflyForConditionalGeneration(config, vision_tower=tower)
    return model, make_processor(config, tokenizer, mean, std)


def _vision_backbone(path: str, dtype: torch.dtype):
    """Load a vision tower from a vision-only or a dual-encoder (CLIP/SigLIP) checkpoint."""
    cfg = AutoConfig.from_pretrained(path)
    vision_cfg = getattr(cfg, "vision_config", cfg)
    tower = load_strict(AutoModel, path, DUAL_ENCODER_UNUSED, config=vision_cfg, dtype=dtype)
    return tower, vision_cfg, *pixel_stats(path)


def pixel_stats(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a vision checkpoint's image processor; CLIP's when it has none."""
    mean, std = CLIP_MEAN, CLIP_STD
    preprocessor = Path(path) / "preprocessor_config.json"
    if preprocessor.is_file():  # a hub id resolves through the cache; local dirs are read directly
        meta = json.loads(preprocessor.read_text())
        mean, std = tuple(meta.get("image_mean", mean)), tuple(meta.get("image_std", std))
    return mean, std


def build_from_backbones(vision: str, llm: str, layout: Layout | None = None, dtype: str = "float32", seed: int = 0):
    """Pretrained vision encoder + pretrained causal LLM + a fresh projector.

    The ``<image>`` token is added to the tokenizer as a special token; the model never
    embeds it (its positions are overwritten by image features), so the LLM's embedding
    table stays as released.
    """
    layout = layout or Layout()
    torch_dtype = getattr(torch, dtype)
    tower, vision_cfg, mean, std = _vision_backbone(vision, torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(llm)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    language_model = load_strict(AutoModelForCausalLM, llm, dtype=torch_dtype)
    config = dragonfly_config(vision_cfg, language_model.config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), layout)
    torch.manual_seed(seed)
    model = DragonflyForConditionalGeneration(config, vision_tower=tower, language_model=language_model)
    model.projector.to(torch_dtype)
    return model, make_processor(config, tokenizer, mean, std)


def build_model(section: ModelSection, corpus: Sequence[str] = ()):
    """Model + processor for a profile's ``model`` section; ``corpus`` goes to the tiny
    tokenizer (the backbones bring their own)."""
    if section.source == "tiny":
        return build_tiny(section.tiny, section.layout, section.seed, corpus)
    if section.source == "backbones":
        return build_from_backbones(section.vision, section.llm, section.layout, section.dtype, section.seed)
    raise ConfigError(f"model.source must be 'tiny' or 'backbones', got {section.source!r}")
