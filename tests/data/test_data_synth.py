"""The synthetic detail is unreadable in the low tile and readable in the high-res view."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dragonfly.data.schema import ImageCheck
from dragonfly.data.synth import SHAPES, SynthConfig, detail_pair, generate, shape_variants
from dragonfly.data.validate import validate_samples

# The tiny profile: tile R = 32 px; the high-resolution grids (cols, rows) of the paper.
R = 32
HIGH_GRIDS = ((6, 4), (4, 6), (3, 8), (8, 3))


def high_res_size(w: int, h: int) -> tuple[int, int]:
    cols, rows = min(HIGH_GRIDS, key=lambda g: abs(math.log((g[0] / g[1]) / (w / h))))
    return cols * R, rows * R


def as_array(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(img.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0


@pytest.mark.parametrize("variant", ["general", "biomedical"])
def test_detail_needs_zoom(variant: str) -> None:
    cfg = SynthConfig(variant=variant)
    for seed in range(12):
        scene, a, b = detail_pair(cfg, seed)
        low = np.abs(as_array(a, (R, R)) - as_array(b, (R, R)))
        size = high_res_size(*scene.size)
        high = np.abs(as_array(a, size) - as_array(b, size))
        assert low.mean() < 0.02, (seed, low.mean())
        assert high.max() > 0.25, (seed, high.max())
        # The difference sits where the glyph is, in the high-res view.
        g = scene.glyphs[0]
        y, x = np.unravel_index(high.max(-1).argmax(), high.shape[:2])
        assert abs(x - g.cx * size[0] / scene.size[0]) < 6 and abs(y - g.cy * size[1] / scene.size[1]) < 6


def test_every_shape_is_the_same_blob_at_low_res() -> None:
    cfg = SynthConfig()
    for seed in range(6):
        scene, variants = shape_variants(cfg, seed)
        size = high_res_size(*scene.size)
        for s, t in itertools.combinations(SHAPES, 2):
            low = np.abs(as_array(variants[s], (R, R)) - as_array(variants[t], (R, R)))
            high = np.abs(as_array(variants[s], size) - as_array(variants[t], size))
            # Low tile: at most a faint tint in one or two pixels; high-res: a clear edge.
            assert low.max() < 0.2 and high.max() > 2 * low.max()


def test_generation_is_deterministic_and_valid(tmp_path: Path) -> None:
    cfg = SynthConfig(variant="biomedical", n_train=8, n_validation=2, n_test=2)
    first = generate(cfg, tmp_path / "a")
    second = generate(cfg, tmp_path / "b")
    assert [s.to_record() for s in first] == [s.to_record() for s in second]
    png = first[0].images[0]
    assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()
    assert {s.split for s in first} == {"train", "validation", "test"} and len(first) == 48
    assert {s.task for s in first} == {"vqa_closed", "vqa_open", "mcq", "caption"}
    sizes = {Image.open(tmp_path / "a" / p).size for s in first for p in s.images}
    assert sizes <= set(cfg.sizes) and len(sizes) > 1
    assert not validate_samples(first, tmp_path / "a", ImageCheck()).rejections
    other = generate(replace(cfg, seed=5), tmp_path / "c")
    assert [s.answers for s in other] != [s.answers for s in first]


def test_answers_follow_the_scene(tmp_path: Path) -> None:
    cfg = SynthConfig(n_train=30, n_validation=0, n_test=0, tasks=("vqa_open", "vqa_closed"))
    samples = generate(cfg, tmp_path)
    closed = [s.answers[0] for s in samples if s.task == "vqa_closed"]
    assert 0.25 < closed.count("yes") / len(closed) < 0.75
    for s in samples:
        shapes = dict(pair.split(":") for pair in s.meta["shapes"].split(","))
        color = s.turns[0].text.split("the ")[1].split(" ")[0]
        if s.task == "vqa_open":
            assert s.answers[0] == shapes[color]
        else:
            asked = s.turns[0].text.split(" a ")[-1].split("?")[0]
            assert s.answers[0] == ("yes" if shapes[color] == asked else "no")
