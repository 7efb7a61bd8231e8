"""`region_rule: index_block`, the released code's zoom-in selection (issue #16, item 2).

The released `DragonflyForCausalLM.forward` scores every high tile against each of the four
medium summaries, masks all but the i-th block of 6 consecutive high tiles with -inf, keeps
the top 3 per block, concatenates and sorts; its processor picks the high grid from
{(6,4),(4,6),(3,8),(8,3),(2,12),(12,2)} on its own by `select_best_resolution`. Both are
re-stated here from that definition and compared with this project's model in the
released-compatible layout, on seven image sizes.
"""

from __future__ import annotations

import torch
from PIL import Image

from dragonfly.build import build_tiny
from dragonfly.model.processing import TilingSpec, region_map
from dragonfly.model.specs import Layout
from dragonfly.model.zoom import summarize

RELEASED_HIGH = [[6, 4], [4, 6], [3, 8], [8, 3], [2, 12], [12, 2]]
# The last two: images smaller than the high canvases, where the released processor picks a
# high grid that does not refine the medium one ((4,1) with (6,4)), which `spatial` cannot.
SIZES = [(300, 200), (200, 300), (640, 120), (120, 640), (400, 400), (189, 71), (20, 139)]


def released_best(size, grids, se):
    """`select_best_resolution` of the released processor, on (width, height) canvases."""
    best, best_eff, best_waste = None, 0, float("inf")
    for cols, rows in grids:
        width, height = cols * se, rows * se
        scale = min(width / size[0], height / size[1])
        eff = min(int(size[0] * scale) * int(size[1] * scale), size[0] * size[1])
        waste = width * height - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (cols, rows), eff, waste
    return best


def released_selection(mid_summary, high_summary, topk=3, interval=6):
    """The released masking: region i may only pick from high tiles [i*interval, (i+1)*interval)."""
    picks = []
    for i in range(mid_summary.shape[0]):
        scores = high_summary @ mid_summary[i]  # [Nh]
        mask = torch.full_like(scores, float("-inf"))
        mask[i * interval : (i + 1) * interval] = 0
        picks.append(torch.topk(scores + mask, topk).indices)
    return torch.sort(torch.cat(picks)).values


def test_index_block_regions_are_consecutive_blocks_unlike_the_spatial_ones():
    assert region_map((2, 2), (6, 4), "index_block").tolist() == [list(range(i * 6, i * 6 + 6)) for i in range(4)]
    assert region_map((2, 2), (6, 4))[0].tolist() == [0, 1, 2, 6, 7, 8]  # the tiles inside medium tile 0
    spec = TilingSpec(tile_size=32, medium_grids=((2, 2), (1, 4), (4, 1)), high_grids=tuple(map(tuple, RELEASED_HIGH)))
    assert spec.region_rule == "spatial"  # the project's default
    released = TilingSpec(
        tile_size=32,
        medium_grids=((2, 2), (1, 4), (4, 1)),
        high_grids=tuple(map(tuple, RELEASED_HIGH)),
        region_rule="index_block",
    )
    assert spec.choose_grids((189, 71)) == ((4, 1), (8, 3))  # refining the medium grid
    assert released.choose_grids((189, 71)) == ((4, 1), (6, 4))  # chosen on its own, as released


def test_the_released_layout_selects_the_released_tiles_on_seven_image_sizes():
    layout = Layout(high_grids=RELEASED_HIGH, region_rule="index_block", select_order="most_similar")
    model, processor = build_tiny(layout=layout, seed=0)
    model.eval()
    se = model.config.tile_size
    num_base = 1 + model.config.tiling.num_medium
    for size in SIZES:
        image = Image.new("RGB", size)
        image.putdata(
            [((x * 7 + y * 3) % 256, (x * y) % 256, (y * 5) % 256) for y in range(size[1]) for x in range(size[0])]
        )
        inputs = processor(
            text=[processor.build_prompt([{"role": "user", "content": "<image>\nWhat?"}])], images=[image]
        )
        medium, high = (tuple(g) for g in inputs["image_grids"][0].tolist())
        assert high == released_best(size, RELEASED_HIGH, se), size
        assert medium == released_best(size, [[2, 2], [1, 4], [4, 1]], se), size
        with torch.inference_mode():
            kept = model(**inputs).selected_tiles[0]
            pixels = inputs["pixel_values"][0]
            tiles = model.encode_tiles(pixels)  # [T, P, D]
        expected = released_selection(summarize(tiles[1:num_base]), summarize(tiles[num_base:]))
        assert kept.tolist() == expected.tolist(), size
