"""The model: counts from config, gradients through kept tiles, save/load, generation."""

import copy

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
)

from dragonfly import DragonflyConfig
from dragonfly.build import build_tiny
from dragonfly.config import Layout
from dragonfly.inference import answer, user_message


def _paper_config(**layout) -> DragonflyConfig:
    vision = CLIPVisionConfig(hidden_size=768, patch_size=32, image_size=224)  # CLIP ViT-B/32
    text = LlamaConfig(hidden_size=4096, num_hidden_layers=32, vocab_size=128256)  # Llama-3-8B widths
    return DragonflyConfig(vision_config=vision, text_config=text, **layout)


def test_paper_numbers_hold_by_construction():
    cfg = _paper_config()
    assert cfg.tokens_per_tile == 50  # 7×7 patches + CLS
    assert cfg.num_encoded_tiles == 29
    assert cfg.num_kept_tiles == 17
    assert cfg.num_kept_tiles * cfg.tokens_per_tile == 850
    assert cfg.image_seq_length == 850 + 17
    assert cfg.tiling.region_size == 6


@pytest.mark.parametrize(
    "layout,encoded,kept",
    [
        ({"strategy": "none", "high_grids": []}, 5, 5),  # Baseline-1
        ({"strategy": "none", "medium_grids": [[4, 4], [2, 8], [8, 2]], "high_grids": []}, 17, 17),  # Baseline-2
        ({"strategy": "none", "medium_grids": [[6, 4], [4, 6], [3, 8], [8, 3]], "high_grids": []}, 25, 25),
        ({"strategy": "global"}, 29, 17),
        ({"high_grids": [[4, 4], [2, 8], [8, 2]]}, 21, 17),
        ({"high_grids": [[6, 8], [8, 6], [4, 12], [12, 4]]}, 53, 17),
    ],
)
def test_ablation_layouts_from_config(layout, encoded, kept):
    cfg = _paper_config(**layout)
    assert (cfg.num_encoded_tiles, cfg.num_kept_tiles) == (encoded, kept)
    assert cfg.image_seq_length == kept * 51


def test_bad_layouts_raise_named_errors():
    with pytest.raises(ValueError, match="strategy"):
        _paper_config(strategy="best")
    with pytest.raises(ValueError, match="select_k"):
        _paper_config(select_k=7)
    with pytest.raises(ValueError, match="needs high_grids"):
        _paper_config(high_grids=[])
    with pytest.raises(ValueError, match="projector_type"):
        _paper_config(projector_type="qformer")


def _example(processor, image, answer_text="A red circle."):
    msgs = user_message("What is shown?") + [{"role": "assistant", "content": answer_text}]
    ex = processor.encode_conversation(msgs, [image])
    return {
        "input_ids": ex["input_ids"][None],
        "labels": ex["labels"][None],
        "pixel_values": ex["pixel_values"],
        "image_regions": ex["image_regions"],
    }


def test_gradients_reach_projector_only_through_kept_tiles(tiny, random_image):
    model, processor = tiny
    model = copy.deepcopy(model).train()
    batch = _example(processor, random_image(384, 256))
    pixels = batch["pixel_values"].clone().requires_grad_(True)
    out = model(**{**batch, "pixel_values": pixels})
    out.loss.backward()
    assert model.projector.proj.weight.grad.abs().sum() > 0
    assert model.projector.separator.grad.abs().sum() > 0
    kept = set(out.selected_tiles[0].tolist())
    per_tile = pixels.grad[0].flatten(1).abs().sum(1)
    base = 1 + model.config.tiling.num_medium
    for j in range(model.config.tiling.num_high):
        assert (per_tile[base + j] > 0) == (j in kept), j
    assert (per_tile[:base] > 0).all()


def test_recompute_kept_tiles_changes_nothing_but_memory(tiny, random_image):
    model, processor = tiny
    batch = _example(processor, random_image(256, 384))
    grads = []
    for recompute in (True, False):
        m = copy.deepcopy(model).train()
        m.config.recompute_kept_tiles = recompute
        out = m(**batch)
        out.loss.backward()
        grads.append(
            (out.loss.detach(), out.selected_tiles, [p.grad.clone() for p in m.parameters() if p.grad is not None])
        )
    (l1, s1, g1), (l2, s2, g2) = grads
    assert torch.allclose(l1, l2, atol=1e-6) and torch.equal(s1, s2)
    assert len(g1) == len(g2) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2, strict=True))


def test_placeholder_mismatch_is_a_clear_error(tiny, random_image):
    model, processor = tiny
    batch = _example(processor, random_image(100, 100))
    ids = batch["input_ids"]
    image_positions = (ids[0] == model.config.image_token_id).nonzero()[:, 0]
    short = torch.cat([ids[:, : image_positions[0]], ids[:, image_positions[0] + 1 :]], dim=1)
    with pytest.raises(ValueError, match=r"placeholder tokens \(305\) do not match image features"):
        model(input_ids=short, pixel_values=batch["pixel_values"], image_regions=batch["image_regions"])
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=ids)


def test_text_only_batch_works(tiny):
    model, processor = tiny
    enc = processor(text=[processor.build_prompt([{"role": "user", "content": "hello there"}])])
    out = model(**enc)
    assert out.logits.shape[:2] == enc["input_ids"].shape and out.selected_tiles is None


def test_save_load_same_logits(tiny, tmp_path, retina):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "dragonfly"
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    loaded_proc = AutoProcessor.from_pretrained(tmp_path)
    prompt = processor.build_prompt(user_message("Describe the image."))
    a = processor(text=[prompt], images=[retina])
    b = loaded_proc(text=[prompt], images=[retina])
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with torch.no_grad():
        assert torch.equal(model(**a).logits, loaded(**b).logits)


def test_batched_generation_equals_single(tiny, retina, random_image):
    model, processor = tiny
    images = [retina, random_image(500, 180, seed=4)]
    questions = ["What is shown in this image?", "Is there a small red square?"]
    batched = answer(model, processor, images, questions, max_new_tokens=8)
    alone = [
        answer(model, processor, [img], [q], max_new_tokens=8)[0] for img, q in zip(images, questions, strict=True)
    ]
    assert [a.text for a in batched] == [a.text for a in alone]
    assert [a.selected_tiles for a in batched] == [a.selected_tiles for a in alone]
    assert batched[0].medium_grid != batched[1].medium_grid  # different aspect ratios, one batch


def test_generate_uses_the_kv_cache(tiny, retina):
    model, processor = tiny
    inputs = processor(text=[processor.build_prompt(user_message("What?"))], images=[retina])
    calls = []
    hook = model.vision_tower.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.generate(**inputs, max_new_tokens=4, do_sample=False, min_new_tokens=4)
    finally:
        hook.remove()
    assert len(calls) == 2  # base tiles + high tiles, once, at prefill only


def test_mlp_projector_and_no_cls_variant(random_image):
    layout = Layout(projector_type="mlp2x_gelu", keep_cls=False, strategy="global", select_k=2)
    model, processor = build_tiny(layout=layout)
    assert model.config.tokens_per_tile == 16 and model.config.num_kept_tiles == 13
    out = model(**_example(processor, random_image(200, 90)))
    assert torch.isfinite(out.loss)
