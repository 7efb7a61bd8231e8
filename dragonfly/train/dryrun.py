"""A stage without weights: the model on the meta device from the backbones' configs, the
stage's data, and what one optimiser step costs (FLOPs, memory per GPU, time on N GPUs).

FLOPs are counted as torch's FLOP counter counts a training step with eager attention
(2 × multiply-adds of every matmul and convolution; attention as full S × S products,
padding included): `benchmarks/bench_step_flops.py` checks `step_flops` against it.
Backward costs 2 × forward for a layer whose weights train (weight and input gradients),
1 × for a frozen layer that gradients must pass through (input gradients only), 0 for a
frozen layer with nothing trainable before it; attention has no weights, so its backward
is 2 × forward wherever gradients pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

H100_BF16_FLOPS = 989e12  # dense bf16 peak of an H100 SXM (NVIDIA datasheet)
H100_MEMORY = 80e9


def backbone_config(name: str) -> dict:
    """The config.json of a hub backbone: a local checkpoint's own, else the shipped copy."""
    local = Path(name) / "config.json"
    if local.is_file():
        return json.loads(local.read_text())
    shipped = resources.files("dragonfly.train") / "backbone_configs" / f"{name.replace('/', '--')}.json"
    if not shipped.is_file():
        from dragonfly.config import ConfigError

        raise ConfigError(f"no config for backbone {name!r}: not a local checkpoint, and none is shipped")
    return {k: v for k, v in json.loads(shipped.read_text()).items() if not k.startswith("_")}


def meta_model(section):
    """The profile's model on the meta device (no memory, no weights), and its config."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig

    from dragonfly.build import build_tiny, dragonfly_config

    if section.source == "tiny":
        with torch.device("meta"):
            model, _ = build_tiny(section.tiny, section.layout, section.seed)
        return model
    vision = backbone_config(section.vision)
    vision_cfg = CLIPVisionConfig(**vision.get("vision_config", vision))
    text_cfg = LlamaConfig(**backbone_config(section.llm))
    config = dragonfly_config(vision_cfg, text_cfg, text_cfg.vocab_size, section.layout)  # <image>: one added token
    from dragonfly.model.modeling import DragonflyForConditionalGeneration

    with torch.device("meta"):
        return DragonflyForConditionalGeneration(config)


@dataclass(frozen=True)
class Shapes:
    """The sizes the FLOP count needs, read from a Dragonfly config."""

    dv: int  # vision width
    ffv: int
    lv: int
    lv_used: int  # layers up to the feature layer: the later ones run forward only (no gradient reaches them)
    patch: int
    patches: int  # per tile
    cls: int  # 1 when the tower has a CLS token
    tokens_per_tile: int
    d: int  # LLM width
    d_kv: int
    ff: int
    layers: int
    vocab: int
    mlp_projector: bool
    base_tiles: int  # low + medium
    high_tiles: int  # encoded
    kept_high: int
    select: bool
    recompute: bool

    @classmethod
    def of(cls, config) -> Shapes:
        v, t = config.vision_config, config.text_config
        heads = t.num_attention_heads
        kv = getattr(t, "num_key_value_heads", None) or heads
        return cls(
            dv=v.hidden_size,
            ffv=v.intermediate_size,
            lv=v.num_hidden_layers,
            lv_used=_layers_used(v.num_hidden_layers, config.vision_feature_layer),
            patch=v.patch_size,
            patches=(config.tile_size // v.patch_size) ** 2,
            cls=int(config.has_cls),
            tokens_per_tile=config.tokens_per_tile,
            d=t.hidden_size,
            d_kv=t.hidden_size // heads * kv,
            ff=t.intermediate_size,
            layers=t.num_hidden_layers,
            vocab=t.vocab_size,
            mlp_projector=config.projector_type != "linear",
            base_tiles=1 + config.tiling.num_medium,
            high_tiles=config.tiling.num_high,
            kept_high=config.num_kept_high,
            select=config.strategy != "none",
            recompute=config.strategy != "none" and config.recompute_kept_tiles,
        )


def _layers_used(layers: int, feature_layer: int) -> int:
    """Tower layers whose output reaches the features (hidden_states[0] is the embeddings)."""
    return layers + 1 + feature_layer if feature_layer < 0 else feature_layer


def _passes(trains: bool, grads_arrive: bool) -> int:
    """Forward + backward passes of a layer, in units of its forward cost."""
    return 1 + (2 if trains else 1 if grads_arrive else 0)


def vision_flops(s: Shapes, tiles: int) -> tuple[float, float]:
    """(weights, attention) forward FLOPs of the tower on `tiles` tiles."""
    p = s.patches + s.cls
    embed = 2 * s.patches * 3 * s.patch**2 * s.dv
    layer = 2 * p * (4 * s.dv**2 + 2 * s.dv * s.ffv)
    return tiles * (embed + s.lv * layer), tiles * s.lv * 4 * p**2 * s.dv


def projector_flops(s: Shapes, tiles: int) -> float:
    per_token = 2 * s.dv * s.d + (2 * s.d * s.d if s.mlp_projector else 0)
    return tiles * s.tokens_per_tile * per_token


def llm_flops(s: Shapes, length: int) -> tuple[float, float]:
    """(weights, attention) forward FLOPs of the LLM on one sequence of `length` positions."""
    per_token = 2 * (2 * s.d * s.d + 2 * s.d * s.d_kv) + 2 * 3 * s.d * s.ff
    weights = length * (s.layers * per_token + 2 * s.d * s.vocab)
    return weights, s.layers * 4 * length**2 * s.d


def sample_flops(s: Shapes, trains: set[str], length: int, images: int) -> float:
    """FLOPs of forward + backward for one sample padded to `length` with `images` images."""
    vision, projector, llm = "vision" in trains, "projector" in trains, "llm" in trains
    weights, attention = llm_flops(s, length)
    total = weights * _passes(llm, vision or projector) + attention * (1 + 2 * (vision or projector))
    if not images:
        return total
    recompute = s.recompute and vision and s.high_tiles > 0
    # Tiles whose activations take gradients, and tiles encoded once without (dropped ones).
    graded = s.base_tiles + (s.kept_high if recompute else s.high_tiles)
    free = s.high_tiles if recompute else 0
    v_w, v_a = vision_flops(s, images * graded)
    total += v_w + v_a
    if vision:  # backward through the used layers; the patch convolution gets its weight gradient only
        embed = images * graded * 2 * s.patches * 3 * s.patch**2 * s.dv
        share = s.lv_used / s.lv
        total += 2 * (v_w - embed) * share + embed + 2 * v_a * share
    total += sum(vision_flops(s, images * free))
    # The projector sees every encoded tile; its weight gradient covers them all (a dropped
    # tile's gradient is zero, but the matmul runs) unless the kept ones are re-encoded.
    total += projector_flops(s, images * graded) * _passes(projector, vision) + projector_flops(s, images * free)
    return total


def step_flops(s: Shapes, trains: set[str], micro_batches: Sequence[Sequence[tuple[int, int]]]) -> float:
    """FLOPs of one optimiser step: micro-batches of (sequence length, images) samples,
    each padded to its micro-batch's longest."""
    total = 0.0
    for batch in micro_batches:
        longest = max(length for length, _ in batch)
        total += sum(sample_flops(s, trains, longest, images) for _, images in batch)
    return total


def parameters(model) -> dict[str, int]:
    """Parameters per part (meta tensors count like real ones)."""
    parts = {"vision": model.vision_tower, "projector": model.projector, "llm": model.language_model}
    return {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}


def memory_per_gpu(
    params: dict[str, int], trains: set[str], gpus: int, s: Shapes, micro: int, length: int, checkpointing: bool
) -> dict[str, float]:
    """Bytes per GPU under ZeRO-1 with bf16 weights: weights and gradients whole on every GPU
    (2 B each), fp32 master weights + Adam moments (12 B per trainable parameter) split over
    the GPUs, and LLM activations after Korthikanti et al. 2022 (16-bit, per layer
    S·b·d·(34 + 5·a·S/d) bytes; with checkpointing 2·S·b·d per layer plus one whole layer)."""
    trainable = sum(n for part, n in params.items() if part in trains)
    heads = max(1, s.d // 128)
    per_layer = length * micro * s.d * (34 + 5 * heads * length / s.d)
    activations = (
        s.layers * 2 * length * micro * s.d + per_layer if checkpointing else s.layers * per_layer
    ) + 4 * length * micro * s.vocab  # fp32 logits for the loss
    return {
        "weights": 2.0 * sum(params.values()),
        "gradients": 2.0 * trainable,
        "optimizer": 12.0 * trainable / gpus,
        "activations": float(activations),
    }


def stage_hours(flops_per_step: float, steps: int, gpus: int, mfu: float) -> float:
    return flops_per_step * steps / (gpus * H100_BF16_FLOPS * mfu) / 3600


def length_batches(lengths: Sequence[tuple[int, int]], micro: int, group: bool) -> list[list[tuple[int, int]]]:
    """Micro-batches as the trainer forms them: sorted by length when it groups by length
    (within its shuffled mega-batches; sorting everything is the close bound), else in order."""
    order = sorted(lengths) if group else list(lengths)
    return [order[i : i + micro] for i in range(0, len(order), micro)]


def padding_share(batches: Sequence[Sequence[tuple[int, int]]]) -> float:
    real = sum(length for batch in batches for length, _ in batch)
    padded = sum(max(length for length, _ in batch) * len(batch) for batch in batches)
    return 1 - real / padded if padded else 0.0


def human(value: float, unit: str = "") -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)
