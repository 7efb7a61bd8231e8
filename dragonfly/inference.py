"""Load a saved Dragonfly and answer questions about images (batched, greedy by default)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

import dragonfly.model.auto  # noqa: F401  (registers the Auto classes)
from dragonfly.errors import CheckpointError, DragonflyError
from dragonfly.model.configuration import released_layout_error
from dragonfly.model.constants import IMAGE_TOKEN
from dragonfly.weights import load_strict


def check_checkpoint(model_dir: str | Path) -> Path:
    """``model_dir`` when it holds a Dragonfly ``save_pretrained`` folder (its files, not its
    weights: the cheap checks a command makes before starting anything); CheckpointError if not."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory {model_dir} not found")
    config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    if "image_encoder" in config:
        raise released_layout_error(str(model_dir))
    if config and config.get("model_type") != "dragonfly":
        raise CheckpointError(f"{model_dir} holds a {config.get('model_type')!r} model, not a Dragonfly checkpoint")
    missing = [f for f in ("config.json", "processor_config.json") if not (model_dir / f).is_file()]
    if missing:
        raise CheckpointError(f"{model_dir} is not a Dragonfly checkpoint (missing {', '.join(missing)})")
    return model_dir


def load(model_dir: str | Path, dtype: str = "float32"):
    """Model (eval mode) + processor from a ``save_pretrained`` directory; tensors that do
    not match the model are an error (see ``dragonfly.weights``)."""
    model_dir = check_checkpoint(model_dir)
    model = load_strict(AutoModelForImageTextToText, model_dir, dtype=getattr(torch, dtype))
    processor = AutoProcessor.from_pretrained(model_dir)
    return model.eval(), processor


@dataclass
class Answer:
    text: str
    selected_tiles: list[int] | None  # kept high tiles (row-major in the high grid)
    medium_grid: tuple[int, int]
    high_grid: tuple[int, int]


def user_message(question: str, with_image: bool = True) -> list[dict]:
    return [{"role": "user", "content": (f"{IMAGE_TOKEN}\n" if with_image else "") + question}]


class QuestionError(DragonflyError):
    """A question (or a generation setting) the model cannot be asked as it is."""


def check_question(question: str, max_new_tokens: int) -> None:
    """What needs no model: the answer length and the image placeholder."""
    if max_new_tokens < 1:
        raise QuestionError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if IMAGE_TOKEN in question:
        raise QuestionError(
            f"the question holds the image placeholder {IMAGE_TOKEN}; the image is passed on its own: "
            "remove it from the text"
        )


def check_prompt(processor, question: str, length: int, max_new_tokens: int, max_positions: int | None) -> None:
    """Control tokens (which the tokenizer would read as chat structure: a forged turn) and
    the prompt's length against the LLM's positions."""
    tokenizer = processor.tokenizer
    controls = [t for t in tokenizer.all_special_tokens + list(tokenizer.get_added_vocab()) if t and t in question]
    if controls:
        raise QuestionError(
            f"the question holds the control token {controls[0]!r}, which would be read as chat structure, "
            "not text: remove it"
        )
    if max_positions is not None and length + max_new_tokens > max_positions:
        raise QuestionError(
            f"the prompt takes {length} positions and the answer up to {max_new_tokens}: more than the "
            f"model's {max_positions}; shorten the question or lower max_new_tokens"
        )


@torch.inference_mode()
def answer(
    model, processor, images: list, questions: list[str], max_new_tokens: int = 32, temperature: float = 0.0
) -> list[Answer]:
    """Answers for (image, question) pairs, batched with left padding: greedy at
    ``temperature`` 0, sampled above it."""
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    for question in questions:
        check_question(question, max_new_tokens)
    prompts = [processor.build_prompt(user_message(q)) for q in questions]
    inputs = processor(text=prompts, images=images, padding_side="left")
    max_positions = getattr(model.config.text_config, "max_position_embeddings", None)
    for question, length in zip(questions, inputs["attention_mask"].sum(dim=1).tolist(), strict=True):
        check_prompt(processor, question, length, max_new_tokens, max_positions)
    prefill = model(**inputs)  # one forward to report which tiles the zoom kept
    # transformers warns when a temperature comes with greedy decoding: pass it only to sample.
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    generated = model.generate(
        **inputs, max_new_tokens=max_new_tokens, pad_token_id=processor.tokenizer.pad_token_id, **sampling
    )
    texts = processor.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    kept = prefill.selected_tiles
    grids = inputs["image_grids"].tolist()
    return [
        Answer(text.strip(), kept[i].tolist() if kept is not None else None, tuple(grids[i][0]), tuple(grids[i][1]))
        for i, text in enumerate(texts)
    ]
