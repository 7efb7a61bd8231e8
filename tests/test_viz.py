"""The zoom-selection figure (dragonfly/viz.py) draws what the model did, where it did it.

The kept tiles' rectangles are checked against boxes computed here from first principles
(the high grid laid over the image in stretch mode, over the centred letterbox in pad
mode), in original-image pixel coordinates; the kept set against the model's own forward.
"""

from __future__ import annotations

import math

import pytest
import torch
from matplotlib.patches import Rectangle
from PIL import Image

from dragonfly.build import build_tiny
from dragonfly.inference import answer
from dragonfly.model.specs import Layout
from dragonfly.viz import draw_zoom, to_png, zoom_view


def expected_box(size, grid, index, pad):
    """Tile ``index`` of ``grid`` in the original image's pixels, derived independently."""
    width, height = size
    cols, rows = grid
    left = top = 0
    canvas_w, canvas_h = width, height
    if pad:  # the canvas: the image centred on the grid's aspect, nothing scaled
        aspect = cols / rows
        if width / height < aspect:
            canvas_w = round(height * aspect)
            left = (canvas_w - width) // 2
        elif width / height > aspect:
            canvas_h = round(width / aspect)
            top = (canvas_h - height) // 2
    col, row = index % cols, index // cols
    tile_w, tile_h = canvas_w / cols, canvas_h / rows
    return (col * tile_w - left, row * tile_h - top, (col + 1) * tile_w - left, (row + 1) * tile_h - top)


def drawn(fig, prefix):
    """{tile index: (x0, y0, x1, y1)} of the overview's rectangles whose gid is ``prefix-i``."""
    out = {}
    for patch in fig.axes[0].patches:
        gid = patch.get_gid() or ""
        if isinstance(patch, Rectangle) and gid.startswith(prefix):
            x, y = patch.get_xy()
            out[int(gid.rsplit("-", 1)[1])] = (x, y, x + patch.get_width(), y + patch.get_height())
    return out


@pytest.mark.parametrize(
    ("mode", "size"),
    [("stretch", (512, 300)), ("pad", (512, 300)), ("pad", (260, 480))],  # pad: bands top/bottom, then left/right
)
def test_kept_rectangles_are_the_kept_tiles_boxes_in_original_coordinates(retina, mode, size):
    model, processor = build_tiny(layout=Layout(resize_mode=mode), seed=0)
    model.eval()
    image = retina.resize(size)
    view = zoom_view(model, processor, image)
    fig = draw_zoom(view, "test")
    kept = drawn(fig, "kept-")
    assert set(kept) == set(view.kept) and len(kept) == 12
    for index, box in kept.items():
        assert box == pytest.approx(expected_box(size, view.high, index, mode == "pad"), abs=1e-9)
    n_high = view.high[0] * view.high[1]
    assert set(drawn(fig, "dropped-")) == set(range(n_high)) - set(view.kept)
    # the pad canvas really reaches past the image; the axes show all of it
    x0, y0, x1, y1 = view.extent
    assert (x0 < 0 or y0 < 0) == (mode == "pad")
    assert fig.axes[0].get_xlim() == (x0, x1) and fig.axes[0].get_ylim() == (y1, y0)
    # the kept set is the model's own: what its forward selected for the same image
    with torch.inference_mode():
        (result,) = answer(model, processor, [image], ["What is shown?"], max_new_tokens=1)
    assert tuple(result.selected_tiles) == view.kept
    assert (tuple(result.medium_grid), tuple(result.high_grid)) == (view.medium, view.high)
    assert to_png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_scores_explain_the_choice_and_ranks_follow_them(retina):
    model, processor = build_tiny(seed=0)
    view = zoom_view(model.eval(), processor, retina)
    ranks = view.ranks()
    for region in view.regions:  # region selection: each medium tile keeps its k best-scored candidates
        best = sorted(region, key=lambda i: view.scores[i], reverse=True)[: view.k]
        chosen = [i for i in view.kept if i in region]
        assert sorted(best) == sorted(chosen)
        assert sorted(ranks[i] for i in chosen) == list(range(1, view.k + 1))
        assert ranks[max(chosen, key=lambda i: view.scores[i])] == 1
    assert all(not math.isnan(s) for s in view.scores)
    # least similar keeps the other end
    model.config.select_order = "least_similar"
    low = zoom_view(model, processor, retina)
    for region in low.regions:
        worst = sorted(region, key=lambda i: low.scores[i])[: low.k]
        assert sorted(worst) == sorted(i for i in low.kept if i in region)


def test_the_title_names_grids_and_rule_and_global_ranks_overall(retina):
    model, processor = build_tiny(layout=Layout(strategy="global"), seed=0)
    view = zoom_view(model.eval(), processor, retina)
    fig = draw_zoom(view)
    title = fig.get_suptitle()
    assert f"high {view.high[0]}×{view.high[1]}" in title and "global selection, most similar" in title
    assert sorted(view.ranks().values()) == list(range(1, 13))
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts[:3] == ["medium grid", "kept high tile (number: its rank by score)", "dropped high tile"]


def test_layouts_without_selection_draw_what_the_model_uses():
    image = Image.new("RGB", (300, 200), (120, 30, 30))
    model, processor = build_tiny(layout=Layout(high_grids=[], strategy="none"), seed=0)  # Baseline-2: no high tiles
    view = zoom_view(model.eval(), processor, image)
    fig = draw_zoom(view)
    assert view.high is None and len(fig.axes) == 1 and "0 of 0 high tiles" in fig.get_suptitle()
    assert len(drawn(fig, "medium-")) == view.medium[0] * view.medium[1] and not drawn(fig, "kept-")
    model, processor = build_tiny(layout=Layout(strategy="none"), seed=0)  # Baseline-3: every high tile
    view = zoom_view(model.eval(), processor, image)
    fig = draw_zoom(view)
    assert view.kept is None and len(drawn(fig, "kept-")) == view.high[0] * view.high[1]
    assert "no selection: every high tile is kept" in fig.get_suptitle()
