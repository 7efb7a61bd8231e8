"""Ground truth per patch of a synthetic scene: which shape and colour each patch of each
tile shows. The tiny vision tower's pretraining learns it (``train.backbone``) and the
zoom-recall measurement counts kept glyph tiles with it (``eval.zoom_recall``)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from dragonfly.data.synth import PALETTES, SHAPES, Scene, coverage_mask
from dragonfly.model.constants import IGNORE_INDEX

COLORS: tuple[str, ...] = tuple(sorted({c for palette in PALETTES.values() for c in palette}))
COLOR_MIN = 0.03  # coverage below this is anti-aliasing fringe, not a glyph
SHAPE_MIN = 0.15  # a patch must hold a real part of the glyph to be asked its shape


def patch_labels(
    scene: Scene, glyph_area: float, grids: list[tuple[int, int]], tile: int, patch: int
) -> tuple[np.ndarray, np.ndarray]:
    """(shape, colour) label per patch of every tile, ``[T, (tile/patch)²]`` each.

    ``grids`` are the (cols, rows) grids of the tiling in order (low, medium, high), in
    the processor's ``stretch`` geometry: each grid maps the whole image onto its canvas.
    Shape 0 / colour 0 mean background; ``IGNORE_INDEX`` leaves a patch out of that loss.
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
    shape = np.where(amount > COLOR_MIN, IGNORE_INDEX, 0)
    shape = np.where((amount > SHAPE_MIN) & readable, shape_of[best], shape)
    return shape.astype(np.int64), colour.astype(np.int64)


def tile_labels(shape: np.ndarray) -> np.ndarray:
    """One shape label per tile, for the CLS token: the shape most of its readable patches
    show, background when it holds no glyph, ``IGNORE_INDEX`` when the glyph there is unreadable."""
    out = np.zeros(len(shape), np.int64)
    for t, row in enumerate(shape):
        readable = row[row > 0]
        if len(readable):
            out[t] = np.bincount(readable).argmax()
        elif (row == IGNORE_INDEX).any():
            out[t] = IGNORE_INDEX
    return out
