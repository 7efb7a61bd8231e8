"""The tiny vision tower's pretraining (CLIP's stand-in): labels, learning, the saved
checkpoint and how the tiny profile loads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dragonfly.build import build_tiny
from dragonfly.config import ConfigError
from dragonfly.data.labels import COLORS, patch_labels
from dragonfly.data.synth import SHAPES, Glyph, Scene
from dragonfly.model.constants import IGNORE_INDEX
from dragonfly.model.specs import TinySpec
from dragonfly.pipeline import pretrain_vision

REPO = Path(__file__).resolve().parents[2]

GRIDS = [(1, 1), (2, 2), (4, 4)]  # a 128×128 image: low ×1/4, medium ×1/2, high ×1


def test_patch_labels_follow_the_glyph_at_every_scale():
    # A 24-px square centred at (48, 48): in the 4×4 high grid (scale 1) it fills the middle
    # of tile 5 (x, y in 32..64); in the low tile (scale 1/4) it is a 6-px blob.
    scene = Scene(size=(128, 128), background_seed=0, glyphs=(Glyph("square", "blue", 48.0, 48.0),))
    shape, colour = patch_labels(scene, 576.0, GRIDS, tile=32, patch=8)
    assert shape.shape == colour.shape == (1 + 4 + 16, 16)
    high = slice(5, None)
    square, blue = 1 + SHAPES.index("square"), 1 + COLORS.index("blue")
    tile5 = 5 + 5  # high grid starts after low (1) and medium (4) tiles
    # Patch (1, 1) of tile 5 is x, y in 40..48: fully inside the square.
    assert shape[tile5, 1 * 4 + 1] == square and colour[tile5, 1 * 4 + 1] == blue
    # The far corner tile of the high grid is background.
    assert (shape[5 + 15] == 0).all() and (colour[5 + 15] == 0).all()
    # High tiles away from the glyph hold no labels but background.
    assert set(np.unique(colour[high])) == {0, blue}
    # Low tile: colour is labelled where the blob is, shape is left out (6 px < one patch).
    assert (colour[0] == blue).any()
    assert set(np.unique(shape[0])) <= {0, IGNORE_INDEX} and (shape[0] == IGNORE_INDEX).any()


def test_patch_labels_pick_the_glyph_covering_most_of_a_patch():
    scene = Scene(
        size=(128, 128),
        background_seed=0,
        glyphs=(Glyph("circle", "red", 20.0, 20.0), Glyph("cross", "green", 100.0, 100.0)),
    )
    shape, colour = patch_labels(scene, 400.0, GRIDS, tile=32, patch=8)
    high_first, high_last = 5, 5 + 15
    assert colour[high_first].max() == 1 + COLORS.index("red")
    assert colour[high_last].max() == 1 + COLORS.index("green")
    assert shape[high_last].max() == 1 + SHAPES.index("cross")


@pytest.fixture()
def params(tmp_path):
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tiny = tree["profiles"]["tiny"]
    tiny["model"]["tiny"]["vision_from"] = str(tmp_path / "tower")
    tiny["vision_pretrain"].update(steps=250, warmup_steps=25, images=80, batch_tiles=128, lr=1.0e-3)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def test_pretrained_tower_learns_saves_in_hub_layout_and_loads_into_the_model(params, tmp_path):
    out, metrics = pretrain_vision("tiny", params, progress=False)
    assert out == tmp_path / "tower"
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "pretrain.json"} <= {
        p.name for p in out.iterdir()
    }
    # Held-out scenes: colour is read far above chance (1 of 7 classes), background stays background.
    assert metrics["colour_accuracy"] > 0.5, metrics
    assert metrics["background_accuracy"] > 0.95, metrics
    assert metrics["readable_patches"] > 0

    model, processor = build_tiny(TinySpec(vision_layers=3, vision_from=str(out)))
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "clip_vision_model" and saved["image_size"] == 32
    from safetensors.torch import load_file

    weights = load_file(out / "model.safetensors")
    tower = dict(model.vision_tower.named_parameters())
    assert weights.keys() == tower.keys()
    for name, value in weights.items():  # loaded as is, not re-initialised by the wrapper
        assert torch.equal(tower[name].detach(), value), name

    # Same configuration: skipped, same metrics; a changed one retrains.
    again, same = pretrain_vision("tiny", params, progress=False)
    assert (
        same == metrics
        and (out / "model.safetensors").stat().st_mtime_ns == (again / "model.safetensors").stat().st_mtime_ns
    )
    _, llm_changed = pretrain_vision("tiny", params, ["model.tiny.text_hidden=32"], progress=False)
    assert llm_changed == metrics  # the LLM's sizes do not touch the tower
    _, changed = pretrain_vision("tiny", params, ["vision_pretrain.steps=2"], progress=False)
    assert changed["final_loss"] > metrics["final_loss"]


def test_missing_or_mismatched_tower_is_a_clear_error(params, tmp_path):
    with pytest.raises(ConfigError, match="holds no vision checkpoint") as missing:
        build_tiny(TinySpec(vision_from=str(tmp_path / "nowhere")))
    assert "dragonfly pretrain-vision" in missing.value.hint
    pretrain_vision("tiny", params, ["vision_pretrain.steps=1", "vision_pretrain.images=4"], progress=False)
    with pytest.raises(ValueError, match="tile/patch 32/8"):
        build_tiny(TinySpec(tile_size=64, vision_layers=3, vision_from=str(tmp_path / "tower")))
    with pytest.raises(ConfigError, match="vision_pretrain.stepz"):
        pretrain_vision("tiny", params, ["vision_pretrain.stepz=1"], progress=False)
    with pytest.raises(ConfigError, match="vision_from"):
        pretrain_vision("tiny", params, ["model.tiny.vision_from=null"], progress=False)
