"""Training throughput and activation memory, CPU, tiny profile: Dragonfly vs Baseline-3 vs
Baseline-1, and Dragonfly with and without dropping the unselected tiles' activations.

Everything is measured in this one process, on the same synthetic batch:

* samples/s of a full training step (forward, backward, AdamW), all parts trainable
  (general stage 2), median over steps after a warm-up;
* activation memory kept for backward: the bytes of every tensor autograd saves during
  the forward (``saved_tensors_hooks``), which is what the drop-without-gradient trick
  targets and, unlike RSS, is exact and repeatable;
* the same trick on a CLIP ViT-B/32-sized vision tower (random init, R = 224, 29 tiles),
  where it matters most.

    .venv/bin/python benchmarks/bench_train.py [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image
from transformers import CLIPVisionConfig, LlamaConfig

from dragonfly.build import build_tiny, make_processor
from dragonfly.config import Layout
from dragonfly.model.modeling import DragonflyConfig, DragonflyForConditionalGeneration
from dragonfly.model.tiny import build_tokenizer

VARIANTS = {
    "Dragonfly (region, drop-without-grad)": ({}, True),
    "Dragonfly (region, keep all grads)": ({}, False),
    "Baseline-3 (25 tiles to the LLM)": (
        {"strategy": "none", "high_grids": [], "medium_grids": [[6, 4], [4, 6], [3, 8], [8, 3]]},
        True,
    ),
    "Baseline-1 (5 tiles)": ({"strategy": "none", "high_grids": []}, True),
}


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(384, 256), (256, 384), (512, 192), (320, 320)]
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in (sizes[i % 4] for i in range(n))
    ]


def batch_for(processor, pics: list[Image.Image]) -> dict:
    from dragonfly.train.data import Collator

    msgs = [
        {"role": "user", "content": "<image>\nWhat shapes are in the image?"},
        {"role": "assistant", "content": "A small red triangle and a blue circle."},
    ]
    return Collator(processor.tokenizer.pad_token_id)([processor.encode_conversation(msgs, [p]) for p in pics])


def saved_bytes(model, batch) -> int:
    """Bytes of the tensors autograd keeps for backward during one forward."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return total


def step_seconds(model, batch, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_table(steps: int, batch_size: int) -> None:
    pics = images(batch_size)
    rows = []
    for name, (layout, recompute) in VARIANTS.items():
        model, processor = build_tiny(layout=Layout(**{**Layout().__dict__, **layout}), seed=0)
        model.config.recompute_kept_tiles = recompute
        model.train()
        batch = batch_for(processor, pics)
        memory = saved_bytes(model, batch)
        seconds = step_seconds(model, batch, steps)
        rows.append((name, model.config.num_kept_tiles, model.config.image_seq_length, batch_size / seconds, memory))
    ref_speed, ref_mem = rows[0][3], rows[0][4]
    print(f"\ntiny profile, batch {batch_size}, all parts trainable, median of {steps} steps")
    print(f"{'variant':<40}{'tiles→LLM':>10}{'pos/img':>9}{'samples/s':>11}{'×':>7}{'act. MB':>9}{'×':>7}")
    for name, kept, seq, speed, mem in rows:
        print(
            f"{name:<40}{kept:>10}{seq:>9}{speed:>11.2f}{speed / ref_speed:>7.2f}{mem / 2**20:>9.1f}{mem / ref_mem:>7.2f}"
        )
    one = build_tiny(seed=0)[0].train()
    single = batch_for(build_tiny(seed=0)[1], images(1))
    print(f"one image forward+backward (tiny, Dragonfly): {step_seconds(one, single, steps) * 1000:.0f} ms")


def paper_vision(batch_size: int) -> None:
    """CLIP ViT-B/32-sized tower (88M, random init) + a narrow LLM: the trick's effect at R = 224."""
    tokenizer = build_tokenizer(512)
    vision = CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        image_size=224,
        patch_size=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    )
    cfg = DragonflyConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>")
    )
    model = DragonflyForConditionalGeneration(cfg).train()
    processor = make_processor(cfg, tokenizer)
    batch = batch_for(processor, images(batch_size))
    print(
        f"\nCLIP ViT-B/32-sized tower, R = 224, {cfg.num_encoded_tiles} tiles encoded, {cfg.num_kept_tiles} kept, batch {batch_size}"
    )
    results = {}
    for recompute in (True, False):
        model.config.recompute_kept_tiles = recompute
        results[recompute] = (saved_bytes(model, batch), step_seconds(model, batch, 3))
    (m_on, t_on), (m_off, t_off) = results[True], results[False]
    print(
        f"activations kept for backward: {m_on / 2**20:.0f} MB with the trick vs {m_off / 2**20:.0f} MB without "
        f"({m_on / m_off:.2f}×); step time {t_on:.2f} s vs {t_off:.2f} s ({t_on / t_off:.2f}×)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-paper-vision", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tiny_table(args.steps, args.batch)
    if not args.skip_paper_vision:
        paper_vision(args.batch)


if __name__ == "__main__":
    main()
