"""Grid choice, tiling and region maps."""

import itertools
import random

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_processing_utils import select_best_resolution

from dragonfly.model.processing import (
    TilingSpec,
    letterbox,
    refines,
    region_map,
    select_grid,
    tile_image,
)
from dragonfly.model.processor import DragonflyImageProcessor

MEDIUM = [(2, 2), (1, 4), (4, 1)]
HIGH_SETS = {
    "paper": [(6, 4), (4, 6), (3, 8), (8, 3)],
    "4x4": [(4, 4), (2, 8), (8, 2)],
    "6x8": [(6, 8), (8, 6), (4, 12), (12, 4)],
}


def _hf_choice(size, grids, tile):
    """transformers' rule, converted: it takes (height, width) sizes and resolutions."""
    width, height = size
    resolutions = [(rows * tile, cols * tile) for cols, rows in grids]
    h, w = select_best_resolution((height, width), resolutions)
    return (w // tile, h // tile)


@pytest.mark.parametrize("grids", [MEDIUM, *HIGH_SETS.values()], ids=["medium", *HIGH_SETS])
@pytest.mark.parametrize("tile", [224, 32])
def test_select_grid_agrees_with_transformers(grids, tile):
    rng = random.Random(1234)
    sizes = [(rng.randint(1, 4000), rng.randint(1, 4000)) for _ in range(400)]
    sizes += [(1344, 896), (896, 1344), (224, 224), (10, 5000), (5000, 10)]
    for size in sizes:
        assert select_grid(size, grids, tile) == _hf_choice(size, grids, tile), size


def test_select_grid_follows_aspect_ratio():
    assert select_grid((4000, 1000), MEDIUM) == (4, 1)
    assert select_grid((1000, 4000), MEDIUM) == (1, 4)
    assert select_grid((1344, 896), HIGH_SETS["paper"]) == (6, 4)
    assert select_grid((896, 1344), HIGH_SETS["paper"]) == (4, 6)
    with pytest.raises(ValueError, match="positive"):
        select_grid((0, 10), MEDIUM)


def _allowed_pairs():
    for high_grids in HIGH_SETS.values():
        for medium, high in itertools.product(MEDIUM, high_grids):
            if refines(high, medium):
                yield medium, high


@pytest.mark.parametrize("medium,high", list(_allowed_pairs()))
def test_region_map_matches_geometry(medium, high):
    regions = region_map(medium, high)
    nm, nh = medium[0] * medium[1], high[0] * high[1]
    assert regions.shape == (nm, nh // nm)
    assert sorted(regions.flatten().tolist()) == list(range(nh))  # a partition of the high tiles
    for mi, row in enumerate(regions.tolist()):
        assert row == sorted(row)
        mx0, my0 = (mi % medium[0]) / medium[0], (mi // medium[0]) / medium[1]
        mx1, my1 = mx0 + 1 / medium[0], my0 + 1 / medium[1]
        for hi in row:  # every high tile lies wholly inside its medium tile (normalised coords)
            hx0, hy0 = (hi % high[0]) / high[0], (hi // high[0]) / high[1]
            hx1, hy1 = hx0 + 1 / high[0], hy0 + 1 / high[1]
            eps = 1e-9
            assert mx0 - eps <= hx0 and hx1 <= mx1 + eps and my0 - eps <= hy0 and hy1 <= my1 + eps


def test_every_size_gets_a_refining_high_grid():
    rng = random.Random(7)
    for high_grids in HIGH_SETS.values():
        spec = TilingSpec(tile_size=32, medium_grids=tuple(MEDIUM), high_grids=tuple(high_grids))
        for _ in range(300):
            medium, high = spec.choose_grids((rng.randint(1, 3000), rng.randint(1, 3000)))
            assert refines(high, medium)


def test_spec_rejects_grids_without_refinement():
    with pytest.raises(ValueError, match="refines medium grid"):
        TilingSpec(medium_grids=((2, 2), (1, 4), (4, 1)), high_grids=((5, 5),))
    with pytest.raises(ValueError, match="same tile count"):
        TilingSpec(medium_grids=((2, 2), (1, 3)))
    with pytest.raises(ValueError, match="resize_mode"):
        TilingSpec(resize_mode="crop")


def test_tiles_equal_crops_of_the_resized_image(random_image):
    spec = TilingSpec(tile_size=32)
    image = random_image(400, 260, seed=3)
    out = tile_image(image, spec)
    cols, rows = out["high_grid"]
    resized = np.array(image.resize((cols * 32, rows * 32), Image.Resampling.BICUBIC)).astype(np.float32) / 255
    mean, std = np.array(spec.image_mean), np.array(spec.image_std)
    base = 1 + spec.num_medium
    for index in [0, 5, cols * rows - 1]:
        col, row = index % cols, index // cols
        crop = (resized[row * 32 : (row + 1) * 32, col * 32 : (col + 1) * 32] - mean) / std
        got = out["pixel_values"][base + index].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(got, crop, atol=1e-5)
    assert out["pixel_values"].shape == (1 + 4 + 24, 3, 32, 32)


def test_1344x896_identical_alone_and_in_batch(retina, astronaut, random_image):
    processor = DragonflyImageProcessor(tile_size=224)
    photo = astronaut.resize((1344, 896))
    alone = processor([photo])["pixel_values"][0]
    batch = processor([retina, photo, random_image(300, 900)])
    assert torch.equal(alone, batch["pixel_values"][1])
    assert batch["pixel_values"].shape == (3, 29, 3, 224, 224)
    assert batch["image_grids"][1].tolist() == [[2, 2], [6, 4]]
    assert batch["image_sizes"][1].tolist() == [1344, 896]


def test_pad_mode_letterboxes_to_the_high_canvas():
    spec = TilingSpec(tile_size=32, resize_mode="pad")
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    out = tile_image(image, spec)
    assert out["high_grid"] == (8, 3) and out["medium_grid"] == (4, 1)
    boxed = letterbox(image, 8 / 3, (0, 0, 0))
    assert boxed.size == (300, 112)
    # The padding is the normaliser's mean colour, i.e. ~0 after normalisation.
    top_row = out["pixel_values"][1 + spec.num_medium][:, 0, :]  # first high tile, top row
    assert top_row.abs().max() < 0.02


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_any_mode_becomes_rgb_tiles(mode, random_image):
    image = random_image(90, 70).convert(mode) if mode != "I;16" else Image.new("I;16", (90, 70), 300)
    out = DragonflyImageProcessor(tile_size=32)(image)
    assert out["pixel_values"].shape == (1, 29, 3, 32, 32)
    assert torch.isfinite(out["pixel_values"]).all()


def test_exif_rotation_is_applied(tmp_path, random_image):
    image = random_image(120, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    out = DragonflyImageProcessor(tile_size=32)([str(path)])
    assert out["image_sizes"][0].tolist() == [40, 120]
    assert out["image_grids"][0, 0].tolist() == [1, 4]


def test_corrupt_and_truncated_files_name_the_file(tmp_path, random_image):
    good = tmp_path / "good.jpg"
    random_image(200, 200).save(good, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    processor = DragonflyImageProcessor(tile_size=32)
    for path in (truncated, garbage, tmp_path / "missing.png"):
        with pytest.raises(Exception, match=path.name):
            processor([str(path)])
