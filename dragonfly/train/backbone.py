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
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import Progress
from transformers import CLIPImageProcessorPil, CLIPVisionModel, get_scheduler

from dragonfly.data.synth import (
    PALETTES,
    SHAPES,
    Scene,
    SynthConfig,
    coverage_mask,
    make_scene,
    render,
)
from dragonfly.processing import CLIP_MEAN, CLIP_STD, TilingSpec, tile_image
from dragonfly.tiny import TinySpec, vision_config
from dragonfly.train.config import BackbonePretrainConfig

COLORS: tuple[str, ...] = tuple(sorted({c for palette in PALETTES.values() for c in palette}))
COLOR_MIN = 0.03  # coverage below this is anti-aliasing fringe, not a glyph
SHAPE_MIN = 0.15  # a patch must hold a real part of the glyph to be asked its shape
IGNORE = -100


def patch_labels(scene: Scene, glyph_area: float, grids: list[tuple[int, int]], tile: int,
                 patch: int) -> tuple[np.ndarray, np.ndarray]:
    """(shape, colour) label per patch of every tile, ``[T, (tile/patch)²]`` each.

    ``grids`` are the (cols, rows) grids of the tiling in order (low, medium, high), in
    the processor's ``stretch`` geometry: each grid maps the whole image onto its canvas.
    Shape 0 / colour 0 mean background; ``IGNORE`` leaves a patch out of that loss.
    """
    width, height = scene.size
    per_side = tile // patch
    covers, scales = [], []
    for cols, rows in grids:
        scales += [min(cols * tile / width, rows * tile / height)] * (cols * rows)
    for glyph in scene.glyphs:
        mask = coverage_mask(scene.size, glyph, glyph_area)
        per_grid = []
        for cols, rows in grids:
            canvas = np.asarray(mask.resize((cols * tile, rows * tile), Image.Resampling.BOX), np.float32) / 255
            pooled = canvas.reshape(rows, per_side, patch, cols, per_side, patch).mean((2, 5))
            per_grid.append(pooled.transpose(0, 2, 1, 3).reshape(rows * cols, per_side * per_side))
        covers.append(np.concatenate(per_grid))
    cover = np.stack(covers)  # [G, T, P]
    best, amount = cover.argmax(0), cover.max(0)
    shape_of = np.array([1 + SHAPES.index(g.shape) for g in scene.glyphs])
    color_of = np.array([1 + COLORS.index(g.color) for g in scene.glyphs])
    readable = (math.sqrt(glyph_area) * np.array(scales) >= patch)[:, None]
    colour = np.where(amount > COLOR_MIN, color_of[best], 0)
    shape = np.where(amount > COLOR_MIN, IGNORE, 0)
    shape = np.where((amount > SHAPE_MIN) & readable, shape_of[best], shape)
    return shape.astype(np.int64), colour.astype(np.int64)


def tile_labels(shape: np.ndarray) -> np.ndarray:
    """One shape label per tile, for the CLS token: the shape most of its readable patches
    show, background when it holds no glyph, ``IGNORE`` when the glyph there is unreadable."""
    out = np.zeros(len(shape), np.int64)
    for t, row in enumerate(shape):
        readable = row[row > 0]
        if len(readable):
            out[t] = np.bincount(readable).argmax()
        elif (row == IGNORE).any():
            out[t] = IGNORE
    return out


def tiled_grids(tiles: dict) -> list[tuple[int, int]]:
    """The (cols, rows) grids of a ``tile_image`` result, in tile order: low, medium, high."""
    high = [tuple(tiles["high_grid"])] if tiles["high_grid"][0] else []
    return [(1, 1), tuple(tiles["medium_grid"]), *high]


def tile_dataset(cfg: BackbonePretrainConfig, spec: TilingSpec, patch: int,
                 variants: tuple[str, ...] = tuple(PALETTES)) -> dict[str, torch.Tensor]:
    """Tiles of ``cfg.images`` fresh scenes (alternating variants) with their patch labels."""
    pixels, shapes, colours = [], [], []
    for i in range(cfg.images):
        synth = SynthConfig(variant=variants[i % len(variants)], glyph_area=cfg.glyph_area)
        scene = make_scene(synth, np.random.default_rng([cfg.seed, i]))
        tiles = tile_image(render(scene, synth), spec)
        shape, colour = patch_labels(scene, cfg.glyph_area, tiled_grids(tiles), spec.tile_size, patch)
        pixels.append(tiles["pixel_values"])
        shapes.append(torch.from_numpy(shape))
        colours.append(torch.from_numpy(colour))
    shape = torch.cat(shapes)
    return {"pixel_values": torch.cat(pixels), "shape": shape, "colour": torch.cat(colours),
            "tile_shape": torch.from_numpy(tile_labels(shape.numpy())),
            "image": torch.cat([torch.full((len(s),), i) for i, s in enumerate(shapes)])}


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


def pretrain(spec: TinySpec, tiling: TilingSpec, cfg: BackbonePretrainConfig, feature_layer: int = -2,
             progress: bool = True) -> tuple[CLIPVisionModel, dict]:
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
    schedule = get_scheduler(cfg.schedule, optimizer, num_warmup_steps=min(cfg.warmup_steps, cfg.steps),
                             num_training_steps=max(cfg.steps, 1))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    generator = torch.Generator().manual_seed(cfg.seed)
    history = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task("vision pretrain", total=cfg.steps)
        for _ in range(cfg.steps):
            index = torch.cat([glyph_tiles[torch.randint(len(glyph_tiles), (n_glyph,), generator=generator)],
                               torch.randint(len(train["shape"]), (cfg.batch_tiles - n_glyph,), generator=generator)])
            shape_logits, colour_logits, tile_logits = model(train["pixel_values"][index])
            loss = (loss_fn(shape_logits.flatten(0, 1), train["shape"][index].flatten())
                    + loss_fn(colour_logits.flatten(0, 1), train["colour"][index].flatten())
                    + loss_fn(tile_logits, train["tile_shape"][index]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(loss.item())
            bar.update(task, advance=1, description=f"vision pretrain loss {loss.item():.3f}")
    model.eval()
    metrics = {**accuracy(model, test), "train_tiles": len(train["shape"]), "held_out_tiles": len(test["shape"]),
               "final_loss": float(np.mean(history[-20:])) if history else float("nan")}
    return tower, metrics


def save_backbone(tower: CLIPVisionModel, out: Path, metrics: dict, config: dict) -> Path:
    """Write the tower as a vision-only CLIP checkpoint, in the layout the hub uses."""
    out.mkdir(parents=True, exist_ok=True)
    tower.save_pretrained(out)
    size = tower.config.image_size
    CLIPImageProcessorPil(image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), size={"shortest_edge": size},
                       crop_size={"height": size, "width": size}).save_pretrained(out)
    (out / "pretrain.json").write_text(json.dumps({"config": config, "metrics": metrics}, indent=2))
    return out
