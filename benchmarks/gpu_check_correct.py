"""bf16 against fp32 on the same weights: the loss, the gradients of every part, and the
tiles the zoom selection keeps (benchmarks/gpu_check.py).

The fp32 reference holds the bf16 model's own weights, upcast, so only the arithmetic
differs; TF32 is off for it (cuBLAS and cuDNN, the patch embedding is a convolution). The
bf16 pass runs with bf16 weights, as DeepSpeed's bf16 engine runs the paper profile, and on
CUDA its attention may use the fused kernels only: a fall-back to the unfused math kernel
raises instead of passing unseen.
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch

from dragonfly.train.parts import part_modules

# Tolerances of bf16 against fp32, relative. bf16 keeps 8 significant bits: one rounding
# is off by up to u = 2^-8 ≈ 3.9e-3. Matrix products accumulate in fp32 and round once, so
# each layer adds about u; over the ~20-40 rounded layer outputs between the pixels and the
# loss, independent errors grow like √n · u ≈ 2-3e-2 for a single value. The loss is a mean
# over hundreds of tokens, which averages most of that away: 1e-2. A gradient's relative
# L2 error ‖g_bf16 − g_fp32‖ / ‖g_fp32‖ carries the forward's error and the backward's:
# 5e-2 (METHOD.md: bf16 operands land between 1e-3 and 1e-2 for one product). A bug (a
# wrong dtype cast, an attention mask dropped, a tile mixed up) gives errors of order 1.
LOSS_TOL = 1e-2
GRAD_TOL = 5e-2
NEAR_TIE = 0.01  # a region's k-th and (k+1)-th scores closer than 1 % of its score spread
TOLERANCE_WHY = (
    "bf16 rounds to 8 significant bits (u = 2^-8 = 3.9e-3); fp32-accumulated products add ~u per "
    "layer, ~sqrt(n)*u over the n rounded layer outputs: loss (a mean over many tokens) 1e-2, "
    "per-part gradient relative L2 error 5e-2; a bug gives errors of order 1"
)


def fused_attention(device: torch.device):
    """On CUDA: the fused SDPA kernels only (flash, memory-efficient, cuDNN)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION])


@contextlib.contextmanager
def exact_fp32():
    """Plain fp32 products and convolutions (no TF32) for the reference."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def twins(model):
    """(bf16 model, fp32 model holding the bf16 model's weights); `model` becomes the first.
    Only the parameters become bf16, as `from_pretrained(dtype=bfloat16)` loads the paper
    profile's backbones: buffers such as RoPE's inverse frequencies stay fp32 (`model.to`
    would round them to bf16, and with them every position's rotation angle)."""
    for param in model.parameters():
        param.data = param.data.to(torch.bfloat16)
    return model, copy.deepcopy(model).float()


def forward_backward(model, batch: dict) -> tuple[float, torch.Tensor | None]:
    """(loss, kept high tiles) of one forward + backward; gradients stay on the parameters."""
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return float(out.loss), out.selected_tiles


def grad_agreement(bf16, fp32) -> dict[str, dict[str, float]]:
    """Per part: ‖g_bf16 − g_fp32‖ / ‖g_fp32‖ and their cosine."""
    out = {}
    pairs = zip(part_modules(bf16).items(), part_modules(fp32).values(), strict=True)
    for (part, low), ref in pairs:
        diff = dot = norm_ref = norm_low = 0.0
        for a, b in zip(low.parameters(), ref.parameters(), strict=True):
            if b.grad is None:
                continue
            g, r = a.grad.float(), b.grad
            diff += float((g - r).square().sum())
            dot += float((g * r).sum())
            norm_ref += float(r.square().sum())
            norm_low += float(g.square().sum())
        if norm_ref:
            out[part] = {
                "rel": math.sqrt(diff / norm_ref),
                "cos": dot / math.sqrt(norm_ref * norm_low) if norm_low else 0.0,
            }
    return out


def agreement(bf16, fp32, batch: dict, device: torch.device) -> dict:
    """Loss and gradients of one batch in bf16 against fp32, and whether both kept the same tiles."""
    with exact_fp32():
        loss32, kept32 = forward_backward(fp32, batch)
    with fused_attention(device):
        loss16, kept16 = forward_backward(bf16, batch)
    grads = grad_agreement(bf16, fp32)
    rel = abs(loss16 - loss32) / abs(loss32)
    ok = math.isfinite(rel) and rel <= LOSS_TOL and all(g["rel"] <= GRAD_TOL for g in grads.values())
    return {
        "loss_fp32": loss32,
        "loss_bf16": loss16,
        "loss_rel": rel,
        "grads": grads,
        "same_tiles": kept32 is None or bool(torch.equal(kept32, kept16)),
        "attention": {"llm": _attention(bf16.language_model), "vision": _attention(bf16.vision_tower)},
        "fused_only": device.type == "cuda",
        "tolerance": {"loss_rel": LOSS_TOL, "grad_rel": GRAD_TOL, "why": TOLERANCE_WHY},
        "within_tolerance": ok and all(math.isfinite(g["rel"]) for g in grads.values()),
    }


def _attention(module) -> str:
    return str(getattr(module.config, "_attn_implementation", None))


def region_kept(scores: torch.Tensor, regions: torch.Tensor, k: int, sign: float) -> torch.Tensor:
    """``[B, Nm, k]`` each region's kept high tiles (sorted) from per-tile ``[B, Nh]`` scores."""
    in_region = sign * torch.gather(scores, 1, regions.flatten(1)).view(regions.shape)
    return torch.gather(regions, 2, in_region.topk(k, dim=2).indices).sort(dim=2).values


def relative_gaps(scores: torch.Tensor, regions: torch.Tensor, k: int, sign: float) -> torch.Tensor:
    """``[B, Nm]`` the gap between each region's k-th and (k+1)-th score over its spread."""
    ranked = (sign * torch.gather(scores, 1, regions.flatten(1)).view(regions.shape)).sort(dim=2, descending=True)
    ranked = ranked.values
    spread = (ranked[..., 0] - ranked[..., -1]).clamp_min(torch.finfo(ranked.dtype).tiny)
    return (ranked[..., k - 1] - ranked[..., k]) / spread


def zoom_agreement(bf16, fp32, processor, images: dict, device: torch.device) -> dict:
    """The tiles kept under bf16 against fp32 on `images`, region by region: with the
    selection's fp32 scoring of bf16 summaries (the code's), and with the scores rounded
    to bf16 (what scoring in bf16 would give)."""
    cfg = fp32.config
    if cfg.strategy != "region":
        return {"skipped": f"strategy {cfg.strategy!r}: the check counts region decisions"}
    sign = 1.0 if cfg.select_order == "most_similar" else -1.0
    tally = {"images": 0, "regions": 0, "flips_fp32_scoring": 0, "flips_bf16_scoring": 0, "near_ties": 0}
    tally |= {"near_tie_flips": 0, "model_matches_regions": True, "widest_flipped_gap": None}
    for image in images.values():
        tiles = processor(image)
        pixels, regions = tiles["pixel_values"].to(device), tiles["image_regions"].to(device)
        kept32, s32 = fp32.zoom_scores(pixels, regions)
        _, s16 = bf16.zoom_scores(pixels, regions)
        reference = region_kept(s32, regions, cfg.select_k, sign)
        # The emulation must reproduce the model's own choice, or its flips mean nothing.
        tally["model_matches_regions"] &= bool(torch.equal(reference.flatten(1).sort(dim=1).values, kept32))
        flips = (region_kept(s16, regions, cfg.select_k, sign) != reference).any(dim=2)
        flips_low = (region_kept(s16.bfloat16().float(), regions, cfg.select_k, sign) != reference).any(dim=2)
        gaps = relative_gaps(s32, regions, cfg.select_k, sign)
        near = gaps < NEAR_TIE
        tally["images"] += 1
        tally["regions"] += regions.shape[1]
        tally["flips_fp32_scoring"] += int(flips.sum())
        tally["flips_bf16_scoring"] += int(flips_low.sum())
        tally["near_ties"] += int(near.sum())
        tally["near_tie_flips"] += int((flips & near).sum())
        if flips.any():  # how far from a tie a flipped decision was (fp32 gap over spread)
            tally["widest_flipped_gap"] = max(float(gaps[flips].max()), tally["widest_flipped_gap"] or 0.0)
    return tally | _zoom_verdict(tally)


def _zoom_verdict(tally: dict) -> dict:
    regions = max(tally["regions"], 1)
    extra = tally["flips_bf16_scoring"] - tally["flips_fp32_scoring"]
    return {
        "flip_rate": tally["flips_fp32_scoring"] / regions,
        "flip_rate_bf16_scoring": tally["flips_bf16_scoring"] / regions,
        "near_tie_flip_rate": tally["near_tie_flips"] / tally["near_ties"] if tally["near_ties"] else 0.0,
        "fp32_scoring_needed": extra > 0,
        "verdict": (
            f"scoring in bf16 changes {extra} more region decision(s) than fp32 scoring: keep fp32 scoring"
            if extra > 0
            else "scoring in bf16 changes no more decisions than fp32 scoring on these images"
        ),
    }
