"""Zoom-in patch selection (paper §3.2, §5.1): pure tensor functions, batched over images.

A tile's *summary* is the mean of its projected tokens. Selection compares the summaries
of the medium tiles with those of the high tiles by dot product:

* ``region`` (the paper's default): medium tile i keeps the top-k high tiles among the
  ``s`` that lie inside it (``regions[b, i]``), so ``Nm * k`` tiles are kept, k per region.
* ``global`` (ablation, §5.1): every medium summary scores every high tile; a high tile's
  score is its best match over the medium tiles and the ``Nm * k`` best tiles overall are
  kept. (The paper says the medium summaries "directly retrieve 12 sub-images from the
  entire high-resolution set"; max-over-queries is the reading that always yields 12
  distinct tiles.)

* ``random`` (a control, ours): k of each region's s high tiles, ranked by a fixed hash of
  each tile's summary (:func:`hashed_noise`) instead of its similarity: random with respect
  to the medium tile, yet a pure function like the others, so the same model and image
  always keep the same tiles (in ``generate``, in pictures, whatever the batch). Any gain
  of a scored rule over it is the scores' doing.

``order`` says which end of the ranking is kept. ``most_similar`` is the paper's rule.
``least_similar`` is our extension: on sparse fine detail (the synthetic benchmark) the
medium summary is dominated by background, so the most similar high tiles are background
and the paper's rule drops the detail every time (measured in docs/ablations.md).

Indices are returned sorted ascending, i.e. in the high grid's row-major order, which is
the order the tiles take in the LLM sequence.
"""

from __future__ import annotations

import torch

STRATEGIES = ("region", "global", "random", "none")
ORDERS = ("most_similar", "least_similar")


def hashed_noise(high_summary: torch.Tensor) -> torch.Tensor:
    """``[B, Nh, D]`` summaries → ``[B, Nh]`` in [0, 1): uniform-looking, fixed per summary.

    The classic ``frac(sin(x) * 43758.5453)`` hash of a projection on a fixed direction,
    in float64 so bf16 summaries hash as finely as float32 ones.
    """
    direction = torch.randn(high_summary.shape[-1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    projected = high_summary.double() @ direction.to(high_summary.device)  # [B, Nh]
    return torch.frac(torch.sin(projected) * 43758.5453).abs()


def summarize(tokens: torch.Tensor) -> torch.Tensor:
    """[..., N, D] projected tokens → [..., D] summary embedding (their mean)."""
    return tokens.mean(dim=-2)


def select_tiles(
    mid_summary: torch.Tensor,
    high_summary: torch.Tensor,
    regions: torch.Tensor,
    k: int,
    strategy: str = "region",
    order: str = "most_similar",
) -> torch.Tensor:
    """Indices of the high tiles to keep.

    Args:
        mid_summary: ``[B, Nm, D]`` medium-tile summaries.
        high_summary: ``[B, Nh, D]`` high-tile summaries.
        regions: ``[B, Nm, s]`` long, the high-tile indices inside each medium tile.
        k: tiles kept per medium tile (``Nm * k`` kept in all).
        strategy: ``"region"``, ``"global"`` or ``"random"``.
        order: ``"most_similar"`` (paper) or ``"least_similar"``.

    Returns:
        ``[B, Nm * k]`` long, sorted ascending per image.
    """
    if mid_summary.dim() != 3 or high_summary.dim() != 3 or regions.dim() != 3:
        raise ValueError(
            "select_tiles expects mid_summary [B, Nm, D], high_summary [B, Nh, D], regions [B, Nm, s]; "
            f"got {tuple(mid_summary.shape)}, {tuple(high_summary.shape)}, {tuple(regions.shape)}"
        )
    batch, num_mid, _ = mid_summary.shape
    num_high, region_size = high_summary.shape[1], regions.shape[2]
    if not 0 < k <= region_size:
        raise ValueError(f"k must be in 1..s={region_size}, got {k}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    sign = 1.0 if order == "most_similar" else -1.0
    # Selection is a discrete choice: scores carry no gradient, the kept tiles' tokens do.
    with torch.no_grad():
        if strategy == "random":  # k of each region's s tiles by a hash, not by the scores
            noise = torch.gather(hashed_noise(high_summary)[:, None].expand(-1, num_mid, -1), 2, regions)  # [B, Nm, s]
            kept = torch.gather(regions, 2, noise.topk(k, dim=2).indices).reshape(batch, num_mid * k)
            return kept.sort(dim=1).values
        scores = torch.einsum("bmd,bhd->bmh", mid_summary.float(), high_summary.float())
        if strategy == "region":
            in_region = sign * torch.gather(scores, 2, regions)  # [B, Nm, s]
            top = in_region.topk(k, dim=2).indices  # positions inside each region
            kept = torch.gather(regions, 2, top).reshape(batch, num_mid * k)
        elif strategy == "global":
            if num_mid * k > num_high:
                raise ValueError(f"global selection of {num_mid * k} tiles from only {num_high}")
            best_match = scores.max(dim=1).values  # each high tile's closest medium summary
            kept = (sign * best_match).topk(num_mid * k, dim=1).indices
        else:
            raise ValueError(f"unknown selection strategy {strategy!r}; expected 'region', 'global' or 'random'")
    return kept.sort(dim=1).values


def tile_scores(
    mid_summary: torch.Tensor, high_summary: torch.Tensor, regions: torch.Tensor, strategy: str = "region"
) -> torch.Tensor:
    """Each high tile's score as :func:`select_tiles` ranks it, for pictures and checks.

    Args: as :func:`select_tiles`.

    Returns:
        ``[B, Nh]`` float: ``region``, the dot product with the medium tile whose region
        holds the tile (NaN for a tile in no region); ``global``, its best dot product over
        the medium tiles. The kept tiles are the top (``most_similar``) or bottom k of each
        region by this score, or of the whole grid for ``global``; ``random`` ranks by
        no score, so every tile's is NaN.
    """
    if strategy == "random":
        return torch.full(high_summary.shape[:2], float("nan"), device=high_summary.device)
    scores = torch.einsum("bmd,bhd->bmh", mid_summary.float(), high_summary.float())  # [B, Nm, Nh]
    if strategy == "global":
        return scores.max(dim=1).values
    out = torch.full(high_summary.shape[:2], float("nan"), device=scores.device)  # [B, Nh]
    return out.scatter(1, regions.flatten(1), torch.gather(scores, 2, regions).flatten(1))
