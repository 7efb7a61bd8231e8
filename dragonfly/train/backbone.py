"""Pretrain the tiny profile's vision tower: a stand-in for the pretrained CLIP the paper
starts from, which the tiny profile cannot download.

A randomly initialised tower gives the LLM almost nothing to read: two renders that differ
only in a glyph's shape move the answer logits by 3e-4 (docs/ablations.md), and the
five-stage recipe never learns to look. So before general stage 1 the tiny tower learns
what CLIP already knows at full size: per patch, which shape and which colour it sees.
The scenes come from the synthetic generator with their own seed, so no benchmark image
is ever seen here. The result is saved as a vision-only CLIP checkpoint in the hub layout
(``config.json``, ``model.safetensors``, ``preprocessor_config.json``), which the tiny
profile then loads exactly as the paper profile loads ``openai/clip-vit-base-patch32``.

Labels are per patch, derived from each glyph's coverage at the tile's own scale:
- colour: the glyph covering most of the patch, when it covers more than ``COLOR_MIN``;
- shape: only where the glyph spans at least one patch at that scale; in coarser tiles the
  shape is unreadable (the benchmark's point), so those patches are left out of the loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from transformers import CLIPImageProcessorPil, CLIPVisionModel, get_scheduler

from dragonfly.data.labels import COLORS, patch_labels, tile_labels
from dragonfly.data.synth import (
    PALETTES,
    SHAPES,
    SynthConfig,
    make_scene,
    render,
)
from dragonfly.model.constants import CLIP_MEAN, CLIP_STD, IGNORE_INDEX
from dragonfly.model.processing import TilingSpec, tile_grids, tile_image
from dragonfly.model.specs import TinySpec
from dragonfly.model.tiny import vision_config
from dragonfly.train.config import BackbonePretrainConfig
from dragonfly.weights import hf_bars, unprobed


def tile_dataset(
    cfg: BackbonePretrainConfig, spec: TilingSpec, patch: int, variants: tuple[str, ...] = tuple(PALETTES)
) -> dict[str, torch.Tensor]:
    """Tiles of ``cfg.images`` fresh scenes (alternating variants) with their patch labels."""
    pixels, shapes, colours = [], [], []
    for i in range(cfg.images):
        synth = SynthConfig(variant=variants[i % len(variants)], glyph_area=cfg.glyph_area)
        scene = make_scene(synth, np.random.default_rng([cfg.seed, i]))
        tiles = tile_image(render(scene, synth), spec)
        shape, colour = patch_labels(
            scene, cfg.glyph_area, tile_grids(tiles["medium_grid"], tiles["high_grid"]), spec.tile_size, patch
        )
        pixels.append(tiles["pixel_values"])
        shapes.append(torch.from_numpy(shape))
        colours.append(torch.from_numpy(colour))
    shape = torch.cat(shapes)
    return {
        "pixel_values": torch.cat(pixels),
        "shape": shape,
        "colour": torch.cat(colours),
        "tile_shape": torch.from_numpy(tile_labels(shape.numpy())),
        "image": torch.cat([torch.full((len(s),), i) for i, s in enumerate(shapes)]),
    }


class PatchHeads(torch.nn.Module):
    """Linear classifiers on the tower's feature layer: shape and colour per patch token,
    and the tile's shape on CLS (CLIP's summary token, which the model passes on too)."""

    def __init__(self, tower: CLIPVisionModel, feature_layer: int):
        super().__init__()
        self.tower, self.feature_layer = tower, feature_layer
        hidden = tower.config.hidden_size
        self.shape = torch.nn.Linear(hidden, 1 + len(SHAPES))
        self.colour = torch.nn.Linear(hidden, 1 + len(COLORS))
        self.tile_shape = torch.nn.Linear(hidden, 1 + len(SHAPES))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states[self.feature_layer]
        patches = features[:, 1:]
        return self.shape(patches), self.colour(patches), self.tile_shape(features[:, 0])


def accuracy(model: PatchHeads, data: dict[str, torch.Tensor], batch: int = 512) -> dict[str, float]:
    """Held-out patch accuracies: shape where readable, colour on glyphs, background."""
    shape_pred, colour_pred, tile_pred = [], [], []
    with torch.no_grad():
        for start in range(0, len(data["pixel_values"]), batch):
            s, c, t = model(data["pixel_values"][start : start + batch])
            shape_pred.append(s.argmax(-1))
            colour_pred.append(c.argmax(-1))
            tile_pred.append(t.argmax(-1))
    shape_pred, colour_pred, tile_pred = torch.cat(shape_pred), torch.cat(colour_pred), torch.cat(tile_pred)
    readable, glyph, tiles = data["shape"] > 0, data["colour"] > 0, data["tile_shape"] > 0
    return {
        "shape_accuracy": (shape_pred[readable] == data["shape"][readable]).float().mean().item(),
        "tile_shape_accuracy": (tile_pred[tiles] == data["tile_shape"][tiles]).float().mean().item(),
        "colour_accuracy": (colour_pred[glyph] == data["colour"][glyph]).float().mean().item(),
        "background_accuracy": (colour_pred[~glyph] == 0).float().mean().item(),
        "readable_patches": int(readable.sum()),
    }


def pretrain(
    spec: TinySpec, tiling: TilingSpec, cfg: BackbonePretrainConfig, feature_layer: int = -2, progress: bool = True
) -> tuple[CLIPVisionModel, dict]:
    """Train a fresh tiny tower on patch labels; returns it and held-out metrics."""
    torch.manual_seed(cfg.seed)
    tower = CLIPVisionModel(vision_config(spec))
    model = PatchHeads(tower, feature_layer)
    data = tile_dataset(cfg, tiling, spec.patch_size)
    # Split by image, not by tile, so held-out tiles never share a scene with training ones.
    held = data["image"] < max(1, round(cfg.images * cfg.held_out))
    test = {k: v[held] for k, v in data.items()}
    train = {k: v[~held] for k, v in data.items()}
    glyph_tiles = (train["colour"] > 0).any(1).nonzero()[:, 0]
    n_glyph = round(cfg.batch_tiles * cfg.glyph_fraction) if len(glyph_tiles) else 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    schedule = get_scheduler(
        cfg.schedule, optimizer, num_warmup_steps=min(cfg.warmup_steps, cfg.steps), num_training_steps=max(cfg.steps, 1)
    )
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    generator = torch.Generator().manual_seed(cfg.seed)
    history = []
    # A redirected log gets no bar (rich would print its last frame there): a line every tenth instead.
    lines = progress and not Console().is_terminal
    with Progress(disable=not progress or lines) as bar:
        task = bar.add_task("vision pretrain", total=cfg.steps)
        for step in range(cfg.steps):
            index = torch.cat(
                [
                    glyph_tiles[torch.randint(len(glyph_tiles), (n_glyph,), generator=generator)],
                    torch.randint(len(train["shape"]), (cfg.batch_tiles - n_glyph,), generator=generator),
                ]
            )
            shape_logits, colour_logits, tile_logits = model(train["pixel_values"][index])
            loss = (
                loss_fn(shape_logits.flatten(0, 1), train["shape"][index].flatten())
                + loss_fn(colour_logits.flatten(0, 1), train["colour"][index].flatten())
                + loss_fn(tile_logits, train["tile_shape"][index])
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(loss.item())
            bar.update(task, advance=1, description=f"vision pretrain loss {loss.item():.3f}")
            if lines and ((step + 1) % max(1, cfg.steps // 10) == 0 or step + 1 == cfg.steps):
                print(f"vision pretrain step {step + 1}/{cfg.steps}  loss {loss.item():.3f}", flush=True)
    model.eval()
    metrics = {
        **accuracy(model, test),
        "train_tiles": len(train["shape"]),
        "held_out_tiles": len(test["shape"]),
        "final_loss": float(np.mean(history[-20:])) if history else float("nan"),
    }
    return tower, metrics


def save_backbone(tower: CLIPVisionModel, out: Path, metrics: dict, config: dict) -> Path:
    """Write the tower as a vision-only CLIP checkpoint, in the layout the hub uses."""
    out.mkdir(parents=True, exist_ok=True)
    # save_pretrained would import DeepSpeed only to rule it out, and draw a bar for one shard.
    with unprobed(), hf_bars(False):
        tower.save_pretrained(out)
    size = tower.config.image_size
    CLIPImageProcessorPil(
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
    ).save_pretrained(out)
    (out / "pretrain.json").write_text(json.dumps({"config": config, "metrics": metrics}, indent=2))
    return out
