"""Does the zoom look where the detail is? Glyph recall of the high-tile selection.

The paper says zoom-in selection keeps "the most informative" high-resolution tiles but
never measures it. On the synthetic benchmark we know where every glyph is, so we can: of
the high tiles that hold part of a glyph, which share does the model keep? Chance is the
kept share of all high tiles (12 of 24 in the paper layout). Scenes are drawn fresh from
the generator (their own seed stream), never the benchmark's test images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dragonfly.config import ConfigError
from dragonfly.data.labels import patch_labels
from dragonfly.data.synth import SynthConfig, make_scene, render
from dragonfly.model.processing import tile_grids, tile_image

RECALL_STREAM = 7  # rng stream for these scenes; the benchmark's splits use 0, 1, 2


@dataclass
class ZoomRecall:
    images: int
    glyph_tiles: int  # high tiles holding part of a glyph, over all images
    kept_glyph_tiles: int
    chance: float  # share of high tiles kept, the recall of a blind choice

    @property
    def recall(self) -> float:
        return self.kept_glyph_tiles / max(self.glyph_tiles, 1)

    def as_dict(self) -> dict[str, float]:
        return {
            "images": self.images,
            "glyph_tiles": self.glyph_tiles,
            "kept_glyph_tiles": self.kept_glyph_tiles,
            "recall": self.recall,
            "chance": self.chance,
        }


@torch.inference_mode()
def zoom_recall(model, processor, synth: SynthConfig, images: int = 64) -> ZoomRecall:
    """Glyph recall of ``model``'s selection on ``images`` fresh scenes of ``synth``."""
    cfg = model.config
    if cfg.strategy == "none" or cfg.tiling.num_high == 0:
        raise ConfigError("the model keeps every tile (strategy none): there is no selection to measure")
    spec = processor.image_processor.spec
    num_base = 1 + spec.num_medium
    glyph_tiles = kept_glyph = 0
    for i in range(images):
        scene = make_scene(synth, np.random.default_rng([synth.seed, RECALL_STREAM, i]))
        tiles = tile_image(render(scene, synth), spec)
        _, colour = patch_labels(
            scene,
            synth.glyph_area,
            tile_grids(tiles["medium_grid"], tiles["high_grid"]),
            spec.tile_size,
            cfg.vision_config.patch_size,
        )
        holds_glyph = (colour[num_base:] > 0).any(1)
        _, kept = model.get_image_features(tiles["pixel_values"][None], tiles["regions"][None])
        glyph_tiles += int(holds_glyph.sum())
        kept_glyph += int(holds_glyph[kept[0].numpy()].sum())
    return ZoomRecall(images, glyph_tiles, kept_glyph, cfg.num_kept_high / spec.num_high)
