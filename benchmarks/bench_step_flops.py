"""A training step's FLOPs, measured with torch's FLOP counter, against the dry run's formula
(`dragonfly.train.dryrun.step_flops`), for the stages' trainable parts, on the tiny profile
and on a paper-shaped model (CLIP ViT-B/32 + Llama-3-8B widths, few LLM layers).

Attention runs eagerly for the count: on CPU torch's counter has no formula for the fused
attention kernel and would count no attention at all. On CUDA this also measures MFU (bf16,
the paper's shapes, a few layers of the 8B width), so the first GPU it meets gives a real
number.   .venv/bin/python benchmarks/bench_step_flops.py [--llm-layers 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from dragonfly.build import make_processor
from dragonfly.model.modeling import DragonflyForConditionalGeneration
from dragonfly.train.data import Collator
from dragonfly.train.dryrun import Shapes, step_flops
from dragonfly.train.parts import set_trainable

STAGES = {"general1": ["projector"], "general2": ["projector", "vision", "llm"], "med1": ["vision", "projector"]}
QUESTIONS = ("What colour is the shape?", "Is there a small red circle in the lower left part of the picture?")


def batch_for(processor, tmp: str) -> dict:
    """Two samples of different lengths (padding counts, as in training), one image each."""
    examples = []
    for k, question in enumerate(QUESTIONS):
        path = f"{tmp}/bench-{k}.png"
        Image.new("RGB", (320 + 64 * k, 192), "gray").save(path)
        messages = [{"role": "user", "content": f"<image>\n{question}"}, {"role": "assistant", "content": "red"}]
        examples.append(processor.encode_conversation(messages, [path], max_length=4096))
    return Collator(processor.tokenizer.pad_token_id)(examples)


def measure(model, batch: dict, parts: list[str]) -> tuple[float, float, float]:
    """(counted FLOPs, formula FLOPs, seconds) of forward + backward on `batch`."""
    set_trainable(model, parts)
    model.train()
    lengths = batch["attention_mask"].shape[1]
    with FlopCounterMode(display=False) as counter:
        start = time.perf_counter()
        model(**batch).loss.backward()
        seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    formula = step_flops(Shapes.of(model.config), set(parts), [[(lengths, 1)] * len(QUESTIONS)])
    return float(counter.get_total_flops()), formula, seconds


def tiny():
    from dragonfly.build import build_tiny

    model, processor = build_tiny()
    return model, processor


def paper_shaped(llm_layers: int):
    """CLIP ViT-B/32 and an 8B-wide Llama with `llm_layers` layers, random weights."""
    from transformers import CLIPVisionConfig, LlamaConfig

    from dragonfly.build import dragonfly_config
    from dragonfly.config import Layout
    from dragonfly.model.tiny import build_tokenizer
    from dragonfly.train.dryrun import backbone_config

    paper = Layout(
        medium_grids=((2, 2), (1, 4), (4, 1)), high_grids=((6, 4), (4, 6), (3, 8), (8, 3)), select_k=3, keep_cls=True
    )
    vision = CLIPVisionConfig(**backbone_config("openai/clip-vit-base-patch32")["vision_config"])
    llama = backbone_config("meta-llama/Meta-Llama-3-8B-Instruct") | {"num_hidden_layers": llm_layers}
    tokenizer = build_tokenizer()
    llama |= {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = dragonfly_config(vision, LlamaConfig(**llama), tokenizer.convert_tokens_to_ids("<image>"), paper)
    model = DragonflyForConditionalGeneration(config)
    return model, make_processor(config, tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm-layers", type=int, default=2)
    args = parser.parse_args()
    import tempfile

    tmp = tempfile.mkdtemp()
    print(f"{'model':<28} {'stage':<9} {'counted':>12} {'formula':>12} {'formula/counted':>15} {'seconds':>8}")
    for name, build in (
        ("tiny", tiny),
        (f"paper-shaped ({args.llm_layers} LLM layers)", lambda: paper_shaped(args.llm_layers)),
    ):
        model, processor = build()
        model.set_attn_implementation("eager")
        batch = batch_for(processor, tmp)
        for stage, parts in STAGES.items():
            counted, formula, seconds = measure(model, batch, parts)
            print(f"{name:<28} {stage:<9} {counted:>12.4g} {formula:>12.4g} {formula / counted:>15.4f} {seconds:>8.2f}")
    if torch.cuda.is_available():
        cuda_mfu(args.llm_layers, tmp)


def cuda_mfu(llm_layers: int, tmp: str) -> None:
    """MFU of a general2 step (everything trains) of the paper-shaped model in bf16 on this
    GPU: the formula's FLOPs over the measured time (after two warm-up steps), against the
    H100's dense bf16 peak."""
    from dragonfly.train.dryrun import H100_BF16_FLOPS

    model, processor = paper_shaped(llm_layers)
    model = model.to("cuda", torch.bfloat16)
    batch = {k: v.to("cuda") for k, v in batch_for(processor, tmp).items()}
    parts = STAGES["general2"]
    set_trainable(model, parts)
    for _ in range(2):
        model(**batch).loss.backward()
    torch.cuda.synchronize()
    start, steps = time.perf_counter(), 5
    for _ in range(steps):
        model(**batch).loss.backward()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    formula = step_flops(Shapes.of(model.config), set(parts), [[(batch["attention_mask"].shape[1], 1)] * 2])
    print(
        f"{torch.cuda.get_device_name()}: {formula / seconds / 1e12:.1f} TFLOP/s, MFU {formula / seconds / H100_BF16_FLOPS:.1%}"
    )


if __name__ == "__main__":
    main()
