"""Processor: chat template, image-token expansion, labels, round-trip."""

import pytest
import torch

from dragonfly.model.constants import IGNORE_INDEX
from dragonfly.model.processor import DragonflyProcessor

LLAMA3_PROMPT = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is it?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def test_chat_template_is_llama3(tiny):
    _, processor = tiny
    msgs = [{"role": "user", "content": "<image>\nWhat is it?"}]
    assert processor.build_prompt(msgs) == LLAMA3_PROMPT
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    assert processor.build_prompt(parts) == LLAMA3_PROMPT


def test_labels_cover_only_assistant_replies(tiny, random_image):
    _, processor = tiny
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>\nWhat shape?"},
        {"role": "assistant", "content": "A circle."},
        {"role": "user", "content": "What colour?"},
        {"role": "assistant", "content": "Red."},
    ]
    ex = processor.encode_conversation(msgs, [random_image(64, 64)])
    ids, labels = ex["input_ids"], ex["labels"]
    assert ids.shape == labels.shape
    trained = processor.tokenizer.decode(ids[labels != IGNORE_INDEX])
    assert trained == "A circle.<|eot_id|>Red.<|eot_id|>"
    assert (labels[ids == processor.image_token_id] == IGNORE_INDEX).all()
    assert int((ids == processor.image_token_id).sum()) == processor.image_seq_length == 306


def test_image_count_must_match_placeholders(tiny, random_image):
    _, processor = tiny
    with pytest.raises(ValueError, match="1 <image> placeholder"):
        processor(text=["<image>\nhi"], images=[])
    with pytest.raises(ValueError, match="0 <image> placeholder"):
        processor(text=["hi"], images=[random_image(40, 40)])


def test_left_padding_and_expansion(tiny, random_image):
    _, processor = tiny
    prompts = [
        processor.build_prompt([{"role": "user", "content": t}])
        for t in ("<image>\nhi", "<image>\na much longer question")
    ]
    batch = processor(text=prompts, images=[random_image(50, 80), random_image(80, 50)])
    mask = batch["attention_mask"]
    assert mask[0, 0] == 0 and mask[1, 0] == 1 and mask[:, -1].all()  # left padded
    assert ((batch["input_ids"] == processor.image_token_id).sum(1) == processor.image_seq_length).all()
    assert batch["pixel_values"].shape[0] == 2


def test_truncation_never_cuts_an_image(tiny, random_image):
    _, processor = tiny
    msgs = [{"role": "user", "content": "<image>\nq"}, {"role": "assistant", "content": "a long answer " * 20}]
    ex = processor.encode_conversation(msgs, [random_image(40, 40)], max_length=330)
    assert len(ex["input_ids"]) == 330
    with pytest.raises(ValueError, match="would cut an image"):
        processor.encode_conversation(msgs, [random_image(40, 40)], max_length=100)


def test_save_load_round_trip(tiny, tmp_path, random_image):
    _, processor = tiny
    processor.save_pretrained(tmp_path)
    loaded = DragonflyProcessor.from_pretrained(tmp_path)
    assert loaded.image_seq_length == processor.image_seq_length
    assert loaded.image_processor.high_grids == processor.image_processor.high_grids
    msgs = [{"role": "user", "content": "<image>\nx"}, {"role": "assistant", "content": "y"}]
    image = random_image(120, 60)
    a, b = processor.encode_conversation(msgs, [image]), loaded.encode_conversation(msgs, [image])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nested_images_per_text_are_accepted(tiny, random_image):
    _, processor = tiny
    prompts = ["<image>\na", "<image><image>\nb"]
    pics = [random_image(40, 60, seed=i) for i in range(3)]
    nested = processor(text=prompts, images=[[pics[0]], [pics[1], pics[2]]])
    flat = processor(text=prompts, images=pics)
    assert torch.equal(nested["pixel_values"], flat["pixel_values"]) and nested["pixel_values"].shape[0] == 3
