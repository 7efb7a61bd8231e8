"""Zoom-in selection: properties and brute-force references (hypothesis)."""

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from dragonfly.model.processing import region_map
from dragonfly.model.zoom import select_tiles, tile_scores

PAIRS = [((2, 2), (6, 4)), ((2, 2), (4, 6)), ((1, 4), (3, 8)), ((4, 1), (8, 3)), ((2, 2), (4, 4)), ((1, 4), (4, 12))]


def _inputs(seed, batch, pair, dim):
    gen = torch.Generator().manual_seed(seed)
    medium, high = pair
    nm, nh = medium[0] * medium[1], high[0] * high[1]
    regions = region_map(medium, high).expand(batch, -1, -1)
    return torch.randn(batch, nm, dim, generator=gen), torch.randn(batch, nh, dim, generator=gen), regions


def _brute_region(mid, high, regions, k, sign=1.0):
    out = []
    for b in range(mid.shape[0]):
        kept = []
        for i, region in enumerate(regions[b].tolist()):
            scores = {j: float(mid[b, i] @ high[b, j]) for j in region}
            kept += sorted(region, key=lambda j: -sign * scores[j])[:k]
        out.append(sorted(kept))
    return torch.tensor(out)


def _brute_global(mid, high, count, sign=1.0):
    out = []
    for b in range(mid.shape[0]):
        best = {j: max(float(mid[b, i] @ high[b, j]) for i in range(mid.shape[1])) for j in range(high.shape[1])}
        out.append(sorted(sorted(best, key=lambda j: -sign * best[j])[:count]))
    return torch.tensor(out)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 4),
    pair=st.sampled_from(PAIRS),
    dim=st.integers(1, 16),
    data=st.data(),
)
def test_region_selection_equals_brute_force(seed, batch, pair, dim, data):
    mid, high, regions = _inputs(seed, batch, pair, dim)
    k = data.draw(st.integers(1, regions.shape[2]))
    kept = select_tiles(mid, high, regions, k, "region")
    assert kept.dtype == torch.long and kept.shape == (batch, regions.shape[1] * k)
    assert torch.equal(kept, _brute_region(mid, high, regions, k))
    for b in range(batch):
        row = kept[b].tolist()
        assert row == sorted(row) and len(set(row)) == len(row)
        for region in regions[b].tolist():  # exactly k per region, all inside it
            assert sum(j in region for j in row) == k


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 4),
    pair=st.sampled_from(PAIRS),
    dim=st.integers(1, 16),
    data=st.data(),
)
def test_global_selection_equals_brute_force(seed, batch, pair, dim, data):
    mid, high, regions = _inputs(seed, batch, pair, dim)
    k = data.draw(st.integers(1, regions.shape[2]))
    kept = select_tiles(mid, high, regions, k, "global")
    assert torch.equal(kept, _brute_global(mid, high, regions.shape[1] * k))
    assert (kept.diff(dim=1) > 0).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 3),
    pair=st.sampled_from(PAIRS),
    dim=st.integers(1, 16),
    data=st.data(),
)
def test_least_similar_order_equals_brute_force(seed, batch, pair, dim, data):
    mid, high, regions = _inputs(seed, batch, pair, dim)
    k = data.draw(st.integers(1, regions.shape[2]))
    region = select_tiles(mid, high, regions, k, "region", "least_similar")
    assert torch.equal(region, _brute_region(mid, high, regions, k, sign=-1.0))
    global_ = select_tiles(mid, high, regions, k, "global", "least_similar")
    assert torch.equal(global_, _brute_global(mid, high, regions.shape[1] * k, sign=-1.0))


def test_least_similar_keeps_the_odd_tile_the_paper_rule_drops():
    # Region 0 is background (summary b) except one detail tile d, orthogonal to b: the
    # paper's rule ranks it last, least_similar keeps it.
    regions = region_map((2, 2), (6, 4))[None]
    background, detail = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = background.expand(1, 4, 2).clone()
    high = (background + 0.01 * torch.randn(24, 2, generator=torch.Generator().manual_seed(0)))[None].clone()
    odd = int(regions[0, 0, 2])
    high[0, odd] = 0.7 * background + 0.3 * detail
    assert odd not in select_tiles(mid, high, regions, 3, "region")[0].tolist()
    assert odd in select_tiles(mid, high, regions, 3, "region", "least_similar")[0].tolist()


def test_region_and_global_differ_when_one_region_dominates():
    # All the best matches sit in region 0: global takes them all, region takes k each.
    regions = region_map((2, 2), (6, 4))[None]
    mid = torch.ones(1, 4, 2)
    high = torch.zeros(1, 24, 2)
    high[0, regions[0, 0], :] = 5.0
    region = select_tiles(mid, high, regions, 3, "region")
    global_ = select_tiles(mid, high, regions, 3, "global")
    assert set(regions[0, 0].tolist()) <= set(global_[0].tolist())
    assert sum(j in regions[0, 0].tolist() for j in region[0].tolist()) == 3


def test_bad_arguments_are_named():
    mid, high, regions = _inputs(0, 1, PAIRS[0], 4)
    with pytest.raises(ValueError, match="k must be"):
        select_tiles(mid, high, regions, 7, "region")
    with pytest.raises(ValueError, match="unknown selection strategy"):
        select_tiles(mid, high, regions, 3, "best")
    with pytest.raises(ValueError, match="order must be"):
        select_tiles(mid, high, regions, 3, "region", "random")
    with pytest.raises(ValueError, match="expects"):
        select_tiles(mid[0], high, regions, 3, "region")


def test_random_selection_is_uniform_per_region_fixed_per_image_and_ignores_scores():
    # The control: k of each region's s tiles, every tile equally often over images, the
    # same tiles for the same image whatever else is in the batch, and no use of the scores.
    regions = region_map((2, 2), (6, 4))[None]
    gen = torch.Generator().manual_seed(0)
    images = 2000
    mid, high = torch.randn(images, 4, 8, generator=gen), torch.randn(images, 24, 8, generator=gen)
    kept = select_tiles(mid, high, regions.expand(images, -1, -1), 3, "random")
    assert kept.shape == (images, 12) and (kept.diff(dim=1) > 0).all()
    for region in regions[0]:  # exactly 3 from each region
        assert (torch.isin(kept, region).sum(1) == 3).all()
    share = torch.zeros(24).index_add_(0, kept.flatten(), torch.ones(kept.numel())) / images
    assert (share - 0.5).abs().max() < 0.05, share  # each tile kept half the time: k / s
    # Fixed per image: alone, or in another batch, the same tiles.
    assert torch.equal(select_tiles(mid[5:6], high[5:6], regions, 3, "random"), kept[5:6])
    assert torch.equal(select_tiles(mid[[7, 5]], high[[7, 5]], regions.expand(2, -1, -1), 3, "random")[1], kept[5])
    # The scores play no part: other medium summaries, the same tiles; and the overlap with
    # the paper's choice is what chance gives (1.5 of 3 per region).
    assert torch.equal(select_tiles(-mid, high, regions.expand(images, -1, -1), 3, "random"), kept)
    paper = select_tiles(mid, high, regions.expand(images, -1, -1), 3, "region")
    overlap = (kept[:, :, None] == paper[:, None, :]).any(2).float().sum(1).mean() / 4  # per region
    assert abs(float(overlap) - 1.5) < 0.1, overlap
    assert tile_scores(mid, high, regions, "random").isnan().all()
