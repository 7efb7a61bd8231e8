"""Multi-resolution tiling: grid choice, resizing, tile cutting and region maps.

Conventions (the whole project): grids are ``(columns, rows)`` and image sizes are
``(width, height)``. ``transformers`` uses ``(height, width)``; the conversion happens in
the tests that compare against it, nowhere else.

The geometry helpers are pure functions; :class:`TilingSpec` bundles the configuration
and :func:`tile_image` turns one PIL image into the tile tensor the model consumes:
``[1 + Nm + Nh, 3, R, R]`` = the low tile, the medium tiles (row-major), the high tiles
(row-major).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from dragonfly.model.constants import CLIP_MEAN, CLIP_STD, PAPER_HIGH, PAPER_MEDIUM

Grid = tuple[int, int]  # (columns, rows)

RESIZE_MODES = ("stretch", "pad")
REGION_RULES = ("spatial", "index_block")


def select_grid(size: tuple[int, int], grids: Sequence[Grid], tile_size: int = 224) -> Grid:
    """Choose the grid for an image of ``size=(width, height)`` by LLaVA-NeXT's rule.

    Each grid ``(c, r)`` is the canvas ``(c * tile_size, r * tile_size)``. The image is
    scaled to fit the canvas; the grid that keeps the most of the image's pixels
    (capped at the original pixel count) wins, ties go to the one wasting the least
    canvas area, then to the earlier grid. This is ``select_best_resolution`` of
    ``transformers`` with the axes in this project's order.
    """
    if not grids:
        raise ValueError("select_grid needs at least one candidate grid")
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got (width, height)={size}")
    best, best_effective, best_waste = None, 0, float("inf")
    for cols, rows in grids:
        canvas_w, canvas_h = cols * tile_size, rows * tile_size
        scale = min(canvas_w / width, canvas_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = canvas_w * canvas_h - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (cols, rows), effective, waste
    if best is None:  # every candidate rounds the image to zero pixels
        best = tuple(grids[0])
    return best


def refines(high: Grid, medium: Grid) -> bool:
    """True when every medium tile covers a whole block of high tiles."""
    return high[0] % medium[0] == 0 and high[1] % medium[1] == 0


def region_map(medium: Grid, high: Grid, rule: str = "spatial") -> torch.Tensor:
    """For each medium tile (row-major), the row-major indices of its candidate high tiles:
    the high tiles inside it (``spatial``), or the i-th block of ``s`` consecutive ones
    (``index_block``, the released code; the true region only when the high grid's rows
    are whole blocks of it, e.g. never for a (2, 2) medium grid).

    Returns a ``[Nm, s]`` long tensor, each row sorted ascending, ``s = Nh / Nm``.
    """
    if rule == "index_block":
        num_medium, num_high = medium[0] * medium[1], high[0] * high[1]
        size = num_high // num_medium
        return torch.arange(num_medium * size, dtype=torch.long).view(num_medium, size)
    if rule != "spatial":
        raise ValueError(f"region_rule must be one of {REGION_RULES}, got {rule!r}")
    if not refines(high, medium):
        raise ValueError(f"high grid {high} does not refine medium grid {medium}")
    (mc, mr), (hc, hr) = medium, high
    fc, fr = hc // mc, hr // mr
    rows = []
    for mi in range(mc * mr):
        col0, row0 = (mi % mc) * fc, (mi // mc) * fr
        rows.append([(row0 + dr) * hc + col0 + dc for dr in range(fr) for dc in range(fc)])
    return torch.tensor(rows, dtype=torch.long)


def grid_tiles(grids: Sequence[Grid]) -> int:
    """Tile count shared by every grid of a set (static shapes need one count)."""
    counts = {c * r for c, r in grids}
    if len(counts) != 1:
        raise ValueError(f"all grids of a resolution must have the same tile count, got {list(grids)}")
    return counts.pop()


@dataclass(frozen=True)
class TilingSpec:
    """Everything that decides how an image becomes tiles."""

    tile_size: int = 224
    medium_grids: tuple[Grid, ...] = PAPER_MEDIUM
    high_grids: tuple[Grid, ...] = PAPER_HIGH
    resize_mode: str = "stretch"
    region_rule: str = "spatial"
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    # Resize a smaller resolution from a larger one already made (faster, < 1 grey level
    # off, :func:`_resized_sources`); False resizes each from the image itself, as the
    # released processor does (converted checkpoints see their training pixels exactly).
    reuse_resized: bool = True

    def __post_init__(self):
        object.__setattr__(self, "medium_grids", tuple(tuple(g) for g in self.medium_grids))
        object.__setattr__(self, "high_grids", tuple(tuple(g) for g in self.high_grids))
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.region_rule not in REGION_RULES:
            raise ValueError(f"region_rule must be one of {REGION_RULES}, got {self.region_rule!r}")
        if self.tile_size <= 0:
            raise ValueError(f"tile_size must be positive, got {self.tile_size}")
        if not self.medium_grids:
            raise ValueError("medium_grids must not be empty")
        grid_tiles(self.medium_grids)
        if self.high_grids:
            grid_tiles(self.high_grids)
            for medium in self.medium_grids if self.region_rule == "spatial" else ():
                if not any(refines(h, medium) for h in self.high_grids):
                    raise ValueError(
                        f"no high grid in {list(self.high_grids)} refines medium grid {medium}: "
                        "each medium tile must map to whole high tiles"
                    )

    @property
    def num_medium(self) -> int:
        return grid_tiles(self.medium_grids)

    @property
    def num_high(self) -> int:
        return grid_tiles(self.high_grids) if self.high_grids else 0

    @property
    def region_size(self) -> int:
        """s: high tiles per medium tile."""
        return self.num_high // self.num_medium

    @property
    def num_tiles(self) -> int:
        return 1 + self.num_medium + self.num_high

    def choose_grids(self, size: tuple[int, int]) -> tuple[Grid, Grid | None]:
        """Medium grid by the best-resolution rule, then the best high grid refining it
        (``spatial``) or the best of all (``index_block``: the released code's choice)."""
        medium = select_grid(size, self.medium_grids, self.tile_size)
        if not self.high_grids:
            return medium, None
        candidates = [g for g in self.high_grids if self.region_rule != "spatial" or refines(g, medium)]
        return medium, select_grid(size, candidates, self.tile_size)


def letterbox_box(size: tuple[int, int], aspect: float) -> tuple[int, int, int, int]:
    """The canvas :func:`letterbox` makes for an image of ``size`` (width, height), in the
    image's own pixel coordinates: ``(x0, y0, x1, y1)``, ``(0, 0, width, height)`` when the
    aspect already matches, else reaching past the image on two opposite sides."""
    width, height = size
    if abs(width / height - aspect) < 1e-6:
        return 0, 0, width, height
    if width / height < aspect:
        new_w, new_h = round(height * aspect), height
    else:
        new_w, new_h = width, round(width / aspect)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return -left, -top, new_w - left, new_h - top


def letterbox(image: Image.Image, aspect: float, fill: tuple[int, int, int]) -> Image.Image:
    """Pad ``image`` (centred) to the width/height ratio ``aspect`` without scaling it."""
    x0, y0, x1, y1 = letterbox_box(image.size, aspect)
    if (x0, y0, x1, y1) == (0, 0, *image.size):
        return image
    canvas = Image.new("RGB", (x1 - x0, y1 - y0), fill)
    canvas.paste(image, (-x0, -y0))
    return canvas


def _resized_sources(image: Image.Image, sizes: list[tuple[int, int]], reuse: bool = True) -> list[Image.Image]:
    """Resize ``image`` to each size, largest first, each from the smallest image made so
    far that still covers the target in both axes.

    A downscale from an intermediate that is itself a bicubic downscale of the source
    differs from the direct one by well under one grey level (measured ≤ 0.6/255 on the
    benchmark photos) and halves the time on large photos, whose full-size resample
    dominates the processor's cost. In ``stretch`` geometry every resolution maps the whole
    image onto the whole canvas, so the content mapping is unchanged. ``reuse=False``
    resizes each from ``image``.
    """
    if not reuse:
        return [image.resize(size, Image.Resampling.BICUBIC) for size in sizes]
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i][0] * sizes[i][1])
    made: list[Image.Image] = [image]
    out: list[Image.Image | None] = [None] * len(sizes)
    for i in order:
        width, height = sizes[i]
        covering = [m for m in made if m.width >= width and m.height >= height]
        source = min(covering, key=lambda m: m.width * m.height) if covering else image
        out[i] = source.resize((width, height), Image.Resampling.BICUBIC)
        made.append(out[i])
    return out


def tile_grids(medium: tuple[int, int], high: tuple[int, int] | None) -> list[tuple[int, int]]:
    """The (cols, rows) grids of one image's tiles, in tile order: low, medium, high
    (``high`` None or ``(0, 0)``: none)."""
    return [(1, 1), tuple(medium), *([tuple(high)] if high and high[0] else [])]


def canvas(image: Image.Image, spec: TilingSpec, medium: tuple[int, int], high: tuple[int, int] | None) -> Image.Image:
    """The picture the tiles are cut from: ``image`` itself (``stretch``), or letterboxed with
    the mean colour to the high (else medium) grid's aspect (``pad``)."""
    if spec.resize_mode != "pad":
        return image
    target = high or medium
    return letterbox(image.convert("RGB"), target[0] / target[1], tuple(round(255 * m) for m in spec.image_mean))


def canvas_box(
    size: tuple[int, int], spec: TilingSpec, medium: tuple[int, int], high: tuple[int, int] | None
) -> tuple[int, int, int, int]:
    """Where :func:`canvas` lies in the original image's coordinates: the image itself
    (``stretch``) or its letterbox (``pad``, :func:`letterbox_box`)."""
    if spec.resize_mode != "pad":
        return 0, 0, *size
    target = high or medium
    return letterbox_box(size, target[0] / target[1])


def tile_image(image: Image.Image, spec: TilingSpec, out: torch.Tensor | None = None) -> dict:
    """One image → its tiles, normalised, with the chosen grids and the region map.

    ``out`` (``[T, 3, R, R]`` float32), when given, receives the tiles in place so a batch
    is written with a single copy per pixel. ``pad`` mode letterboxes the image once to the
    high (or medium) canvas aspect and then proceeds like ``stretch``, so every resolution
    shows the same content and the region map stays exact.
    """
    image = image.convert("RGB") if image.mode != "RGB" else image
    original_size = image.size
    medium, high = spec.choose_grids(original_size)
    image = canvas(image, spec, medium, high)
    tile = spec.tile_size
    grids = tile_grids(medium, high)
    if out is None:
        out = torch.empty(spec.num_tiles, 3, tile, tile)
    start = 0
    for resized, (cols, rows) in zip(
        _resized_sources(image, [(c * tile, r * tile) for c, r in grids], spec.reuse_resized), grids, strict=True
    ):
        # Per channel, [rows*R, cols*R] uint8 → [rows*cols, R, R] float: the tiles are cut
        # by a view and the copy into `out` does the cast. Splitting channels first keeps
        # the copy's inner loop contiguous (3× faster than permuting interleaved RGB).
        block = out[start : start + rows * cols]
        for channel, plane in enumerate(resized.split()):
            with warnings.catch_warnings():  # read-only view of Pillow's buffer; we only read it
                warnings.simplefilter("ignore", UserWarning)
                pixels = torch.from_numpy(np.asarray(plane)).view(rows, tile, cols, tile).transpose(1, 2)
            block[:, channel].view(rows, cols, tile, tile).copy_(pixels)
        start += rows * cols
    scale = torch.tensor([1 / (255.0 * s) for s in spec.image_std]).view(3, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(spec.image_mean, spec.image_std, strict=True)]).view(3, 1, 1)
    out.mul_(scale).add_(shift)  # (x / 255 - mean) / std, in place
    regions = region_map(medium, high, spec.region_rule) if high else torch.zeros(spec.num_medium, 0, dtype=torch.long)
    return {
        "pixel_values": out,
        "medium_grid": medium,
        "high_grid": high or (0, 0),
        "regions": regions,
        "image_size": original_size,
    }
