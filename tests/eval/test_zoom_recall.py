"""Glyph recall of the zoom-in selection, on fresh synthetic scenes."""

import pytest

from dragonfly.build import build_tiny
from dragonfly.config import Layout
from dragonfly.data.synth import SynthConfig
from dragonfly.eval.zoom_recall import zoom_recall

SYNTH = SynthConfig(glyph_area=576.0)


def test_the_two_orders_split_the_glyph_tiles_between_them():
    # k = 3 of s = 6 per region: least_similar keeps exactly what most_similar drops, so on
    # the same weights their kept glyph tiles add up to all glyph tiles.
    most_model, processor = build_tiny(layout=Layout(select_order="most_similar"))
    least_model, _ = build_tiny(layout=Layout(select_order="least_similar"))
    least_model.load_state_dict(most_model.state_dict())
    most = zoom_recall(most_model.eval(), processor, SYNTH, images=6)
    least = zoom_recall(least_model.eval(), processor, SYNTH, images=6)
    assert most.glyph_tiles == least.glyph_tiles > 0
    assert most.kept_glyph_tiles + least.kept_glyph_tiles == most.glyph_tiles
    assert most.chance == least.chance == 0.5
    assert 0.0 <= most.recall <= 1.0 and abs(most.recall + least.recall - 1.0) < 1e-9


def test_a_layout_without_selection_is_refused():
    model, processor = build_tiny(layout=Layout(strategy="none", medium_grids=[[2, 2], [1, 4], [4, 1]], high_grids=[]))
    with pytest.raises(ValueError, match="no selection to measure"):
        zoom_recall(model, processor, SYNTH, images=1)
