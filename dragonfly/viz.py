"""Pictures of what the zoom did (``dragonfly predict --viz``, notebooks/01_zoom_selection).

:func:`zoom_view` asks the model which high tiles it keeps and how it scored each one;
:func:`draw_zoom` draws it readably: the original image with the medium grid, the kept high
tiles outlined and numbered by rank, the dropped ones dimmed, and beside it every high tile
as the model saw it with its score. Everything is drawn in the original image's pixel
coordinates; in ``pad`` mode the letterbox the tiles were cut from reaches past the image,
and that band is drawn hatched. Figures are ``matplotlib.figure.Figure`` objects made
without pyplot, so nothing here touches global plotting state.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from PIL import Image

from dragonfly.model.processing import canvas, canvas_box

Grid = tuple[int, int]  # (columns, rows)
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1)
KEPT, DROPPED, MEDIUM = "#00d8ff", "#000000", "#ffd400"


@dataclass(frozen=True)
class ZoomView:
    """One image's zoom selection, everything a picture needs.

    ``kept``: high-tile indices (row-major) the model keeps, None when it keeps all
    (no selection); ``scores``: one per high tile (NaN: in no region); ``extent``: the
    canvas the tiles were cut from, in original-image coordinates."""

    image: Image.Image
    medium: Grid
    high: Grid | None
    kept: tuple[int, ...] | None
    scores: tuple[float, ...]
    extent: tuple[int, int, int, int]
    strategy: str
    order: str
    k: int
    resize_mode: str
    tiles: Image.Image  # the canvas itself (the letterboxed image in pad mode)
    regions: tuple[tuple[int, ...], ...] = ()  # medium tile i's candidate high tiles

    @property
    def rule(self) -> str:
        if self.kept is None:
            return "no selection: every high tile is kept"
        if self.strategy == "random":
            return f"random selection (a control, no scores), {self.k} per medium tile"
        per = f"{self.k} per medium tile" if self.strategy == "region" else f"{len(self.kept)} over the whole grid"
        return f"{self.strategy} selection, {self.order.replace('_', ' ')}, {per}"

    def ranks(self) -> dict[int, int]:
        """Kept tile → its rank by score (1 = the first choice): within its medium tile's
        region for ``region`` selection (where the choice is made), overall for ``global``."""
        if not self.kept:
            return {}
        groups = [set(r) for r in self.regions] if self.strategy == "region" else [set(self.kept)]
        ranks = {}
        for group in groups:
            chosen = [i for i in self.kept if i in group]
            chosen.sort(key=lambda i: self.scores[i], reverse=self.order == "most_similar")
            ranks.update({index: rank for rank, index in enumerate(chosen, 1)})
        return ranks


def cell_box(extent: tuple[int, int, int, int], grid: Grid, index: int) -> Box:
    """Tile ``index`` (row-major) of a ``grid`` laid over ``extent``, in the same coordinates."""
    x0, y0, x1, y1 = extent
    cols, rows = grid
    col, row = index % cols, index // cols
    width, height = (x1 - x0) / cols, (y1 - y0) / rows
    return x0 + col * width, y0 + row * height, x0 + (col + 1) * width, y0 + (row + 1) * height


def zoom_view(model, processor, image: Image.Image) -> ZoomView:
    """Run the model's tile encoder and selection on ``image`` (no text needed)."""
    image = image.convert("RGB")
    spec = processor.image_processor.spec
    batch = processor.image_processor(images=[image])
    param = next(model.parameters())
    kept, scores = model.zoom_scores(batch["pixel_values"].to(param.device, param.dtype), batch["image_regions"])
    (medium, high) = [tuple(g) for g in batch["image_grids"][0].tolist()]
    high = high if high != (0, 0) else None
    cfg = model.config
    n_high = high[0] * high[1] if high else 0
    return ZoomView(
        image=image,
        medium=medium,
        high=high,
        kept=tuple(kept[0].tolist()) if kept is not None else None,
        scores=tuple(scores[0].tolist()) if scores is not None else (math.nan,) * n_high,
        extent=canvas_box(image.size, spec, medium, high),
        strategy=cfg.strategy,
        order=cfg.select_order,
        k=cfg.select_k,
        resize_mode=spec.resize_mode,
        tiles=canvas(image, spec, medium, high),
        regions=tuple(tuple(r) for r in batch["image_regions"][0].tolist()),
    )


def _box(ax, box: Box, **style) -> Rectangle:
    x0, y0, x1, y1 = box
    return ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, **style))


def draw_overview(ax, view: ZoomView, title: str | None = None) -> None:
    """The original image, its medium grid, the kept high tiles numbered by rank, on ``ax``.
    Every rectangle carries a gid (``kept-i``, ``dropped-i``, ``medium-i``) naming its tile."""
    width, height = view.image.size
    x0, y0, x1, y1 = view.extent
    if (x0, y0, x1, y1) != (0, 0, width, height):  # pad mode: the letterbox band
        _box(ax, view.extent, facecolor="#d9d9d9", hatch="//", edgecolor="#999999")
    ax.imshow(view.image, extent=(0, width, height, 0), zorder=1)
    ranks = view.ranks()
    if view.high:
        kept = set(range(view.high[0] * view.high[1])) if view.kept is None else set(view.kept)
        line = max(1.5, 3.0 - 0.05 * len(kept))
        for i in range(view.high[0] * view.high[1]):
            box = cell_box(view.extent, view.high, i)
            if i not in kept:
                _box(ax, box, facecolor=DROPPED, alpha=0.5, zorder=2, gid=f"dropped-{i}")
                continue
            _box(ax, box, fill=False, edgecolor=KEPT, linewidth=line, zorder=4, gid=f"kept-{i}")
            if i in ranks:
                ax.text(box[0], box[1], f"{ranks[i]}", color="black", fontsize=8, fontweight="bold", va="top",
                        ha="left", bbox={"facecolor": KEPT, "edgecolor": "none", "pad": 1.5}, zorder=5)  # fmt: skip
    for i in range(view.medium[0] * view.medium[1]):
        box = cell_box(view.extent, view.medium, i)
        _box(ax, box, fill=False, edgecolor=MEDIUM, linewidth=2.0, linestyle="--", zorder=3, gid=f"medium-{i}")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_title(title or f"original {width}×{height} px, {view.resize_mode} mode", fontsize=9)
    ax.tick_params(labelsize=7)


def _mosaic(ax, view: ZoomView) -> None:
    """Every high tile as the model saw it, with its score; kept outlined, dropped dimmed."""
    cols, rows = view.high
    kept = set(range(cols * rows)) if view.kept is None else set(view.kept)
    gap = 0.08
    for i in range(cols * rows):
        box = cell_box((0, 0, *view.tiles.size), view.high, i)
        tile = view.tiles.crop(tuple(round(v) for v in box))
        col, row = i % cols, i // cols
        left, top = col * (1 + gap), row * (1 + gap + 0.25)
        ax.imshow(tile, extent=(left, left + 1, top + 1, top), alpha=1.0 if i in kept else 0.35)
        if i in kept:
            _box(ax, (left, top, left + 1, top + 1), fill=False, edgecolor=KEPT, linewidth=2.0)
        score = view.scores[i]
        label = "–" if math.isnan(score) else f"{score:.2f}"
        ax.text(left + 0.5, top + 1.02, label, ha="center", va="top", fontsize=7,
                color="black" if i in kept else "#888888", fontweight="bold" if i in kept else "normal")  # fmt: skip
    if view.strategy in ("region", "random"):  # each medium tile's candidates, where its choice is made
        for region in view.regions:
            c = [i % cols for i in region]
            r = [i // cols for i in region]
            left, top = min(c) * (1 + gap) - gap / 2, min(r) * (1 + gap + 0.25) - gap / 2
            right, bottom = (max(c) + 1) * (1 + gap) - gap / 2, (max(r) + 1) * (1 + gap + 0.25) - gap / 2
            ax.add_patch(
                Rectangle(
                    (left, top), right - left, bottom - top, fill=False, edgecolor=MEDIUM, linestyle="--", linewidth=1.5
                )  # fmt: skip
            )
    ax.set_xlim(-gap, cols * (1 + gap))
    ax.set_ylim(rows * (1 + gap + 0.25), -gap)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"the {cols * rows} high tiles ({cols}×{rows}) and their scores", fontsize=9)


def draw_zoom(view: ZoomView, title: str | None = None, width: float = 12.0) -> Figure:
    """The figure of one :class:`ZoomView` (see the module docstring)."""
    fig = Figure(figsize=(width, width * 0.45), layout="constrained")
    axes = fig.subplots(1, 2, width_ratios=[1.2, 1]) if view.high else [fig.subplots(1, 1)]
    draw_overview(axes[0], view)
    if view.high:
        _mosaic(axes[1], view)
    high = f"{view.high[0]}×{view.high[1]}" if view.high else "none"
    n_high = view.high[0] * view.high[1] if view.high else 0
    kept = n_high if view.kept is None else len(view.kept)
    grids = f"low 1×1, medium {view.medium[0]}×{view.medium[1]}, high {high}"
    fig.suptitle(
        (title + "\n" if title else "") + f"{grids}: {kept} of {n_high} high tiles kept ({view.rule})", fontsize=10
    )
    handles = [
        Line2D([], [], color=MEDIUM, linestyle="--", linewidth=2, label="medium grid"),
        Patch(
            fill=False,
            edgecolor=KEPT,
            linewidth=2,
            label="kept high tile (number: its rank by score"
            + (" in its medium tile)" if view.strategy == "region" else ")"),
        ),
        Patch(facecolor=DROPPED, alpha=0.5, label="dropped high tile"),
    ]
    if view.resize_mode == "pad" and view.extent != (0, 0, *view.image.size):
        handles.append(Patch(facecolor="#d9d9d9", hatch="//", edgecolor="#999999", label="letterbox padding"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, facecolor="#f4f4f4")
    return fig


RULES = (
    ("region", "most_similar"),
    ("region", "least_similar"),
    ("global", "most_similar"),
    ("global", "least_similar"),
)


def views_by_rule(model, processor, images: dict[str, Image.Image], rules=RULES) -> dict[tuple[str, str], ZoomView]:
    """{(image name, "strategy / order"): view} for each image under each selection rule,
    on the same weights (the rule is read from the config at each call; restored after)."""
    cfg = model.config
    saved = cfg.strategy, cfg.select_order
    views = {}
    try:
        with torch.inference_mode():
            for strategy, order in rules:
                cfg.strategy, cfg.select_order = strategy, order
                for name, image in images.items():
                    views[(name, f"{strategy} / {order.replace('_', ' ')}")] = zoom_view(model, processor, image)
    finally:
        cfg.strategy, cfg.select_order = saved
    return views


def rules_figure(views: dict[tuple[str, str], ZoomView], title: str = "", cell: float = 3.2) -> Figure:
    """A grid of overviews: one row per image, one column per rule (from :func:`views_by_rule`)."""
    images = list(dict.fromkeys(name for name, _ in views))
    rules = list(dict.fromkeys(rule for _, rule in views))
    fig = Figure(figsize=(cell * len(rules), cell * len(images)), layout="constrained")
    axes = fig.subplots(len(images), len(rules), squeeze=False)
    for r, name in enumerate(images):
        for c, rule in enumerate(rules):
            view = views[(name, rule)]
            draw_overview(axes[r][c], view, title=rule if r == 0 else " ")
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
        axes[r][0].set_ylabel(name, fontsize=9)
    first = next(iter(views.values()))
    fig.suptitle(title or f"kept high tiles (cyan) per selection rule, {len(first.kept or ())} kept each", fontsize=10)
    return fig


def to_png(fig: Figure, dpi: int = 110) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi)
    return out.getvalue()


def save_zoom(model, processor, image: Image.Image, path, title: str | None = None) -> ZoomView:
    """:func:`zoom_view` + :func:`draw_zoom`, written as a PNG; returns the view."""
    with torch.inference_mode():
        view = zoom_view(model, processor, image)
    draw_zoom(view, title).savefig(path, dpi=110)
    return view
