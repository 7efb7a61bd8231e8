"""Batched greedy generation for full chat messages (one prompt per benchmark sample).

`dragonfly.inference.answer` takes bare questions; evaluation needs the benchmark's own
prompt and several images per sample (MMMU up to 7, IU X-Ray 2), so this takes messages
and the images of each conversation, passed to the processor flat in placeholder order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image


@torch.inference_mode()
def generate_batch(
    model,
    processor,
    conversations: Sequence[list[dict[str, str]]],
    images: Sequence[Sequence[Image.Image]],
    max_new_tokens: int,
) -> list[str]:
    """Greedy continuations of `conversations` (left-padded together), decoded without
    special tokens and stripped."""
    if len(conversations) != len(images):
        raise ValueError(f"{len(conversations)} conversations but {len(images)} image lists")
    prompts = [processor.build_prompt(messages) for messages in conversations]
    flat = [img for per_sample in images for img in per_sample]
    inputs = processor(text=prompts, images=flat or None, padding_side="left")
    generated = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    new_tokens = generated[:, inputs["input_ids"].shape[1] :]
    return [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]
