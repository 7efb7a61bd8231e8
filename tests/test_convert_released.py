"""`dragonfly convert-released` (issue #16, items 1 and 2).

A tiny checkpoint is written here in the released layout (the parameter names and config
keys `togethercomputer/Dragonfly` writes, tiny sizes, a Llama-3-style tokenizer with the
reserved tokens), converted by the command as a user types it, and loaded with the Auto
classes. The released processor and forward pass are re-stated below from their
definitions (`processing_dragonfly.py`: `process_anyres_image`,
`get_sample_encoding_with_encoder`; `modeling_dragonfly.py`: `DragonflyForCausalLM.forward`),
independently of this project's code, and the converted model's logits must equal them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from test_released_regions import released_best
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from dragonfly.inference import answer, load, user_message
from dragonfly.model.constants import CLIP_MEAN, CLIP_STD
from dragonfly.released import ReleasedCheckpointError, convert, load_tensors
from dragonfly.weights import WeightsMismatchError

REPO = Path(__file__).resolve().parents[1]
SE = 32  # tile side (224 in the release)
BOS, EOT, EOS = "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"
PLACEHOLDER, NEWLINE = "<|reserved_special_token_0|>", "<|reserved_special_token_1|>"
SPECIALS = [BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", EOT, PLACEHOLDER, NEWLINE]
# Llama-3's pre-tokenizer split (tokenizer.json of Meta-Llama-3-8B-Instruct).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Image sizes of five aspect ratios, incl. one smaller than every high canvas.
SIZES = [(300, 200), (200, 300), (520, 140), (140, 520), (256, 256), (189, 71)]
QUESTION = "What colour is the circle?"


def llama3_style_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["user assistant What colour is the circle square red blue\n\n"] * 4, trainer=trainer)
    # As Llama-3's tokenizer.json: `add_special_tokens=True` puts BOS in front.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOT)


def write_released(
    root: Path, with_tower: bool = True, model_type: str = "dragonfly", sharded_bf16: bool = False
) -> tuple[Path, Path]:
    """A released-layout checkpoint `root/released` and its CLIP folder `root/clip`: one
    fp32 `pytorch_model.bin`, or (`sharded_bf16`) two bf16 safetensors shards + index."""
    torch.manual_seed(0)
    tokenizer = llama3_style_tokenizer()
    vision_cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=SE, patch_size=8
    )
    tower = CLIPVisionModel(vision_cfg)
    clip = root / "clip"
    tower.save_pretrained(clip)
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": SE},
        "crop_size": {"height": SE, "width": SE},
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
    }
    (clip / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    text_cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
    )
    llm = LlamaForCausalLM(text_cfg)
    with torch.no_grad():  # a visible separator: a fresh init would do, a distinct one is clearer
        llm.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(NEWLINE)].normal_(0, 1)
    proj = torch.nn.Linear(vision_cfg.hidden_size, text_cfg.hidden_size)
    state = {f"image_encoder.{k}": v for k, v in tower.state_dict().items() if with_tower}
    state |= {f"language_model.{k}": v for k, v in llm.state_dict().items()}
    state |= {f"vision_embed_tokens.{k}": v for k, v in proj.state_dict().items()}
    src = root / "released"
    src.mkdir()
    if sharded_bf16:
        names = sorted(state)
        shards = {f"model-0000{i + 1}-of-00002.safetensors": names[i::2] for i in range(2)}
        for file, keys in shards.items():
            save_file({k: state[k].to(torch.bfloat16).contiguous() for k in keys}, src / file)
        weight_map = {k: file for file, keys in shards.items() for k in keys}
        (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        torch.save(state, src / "pytorch_model.bin")
    (src / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    config = {
        "architectures": ["DragonflyForCausalLM"],
        "model_type": model_type,
        "image_encoder": "openai/clip-vit-base-patch32",
        "text_pretrained_model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct",
        "text_config": text_cfg.to_dict(),
        "hidden_size": text_cfg.hidden_size,
        "vocab_size": text_cfg.vocab_size,
        "image_size": 300,
        "patch_size": 30,
        "num_channels": 3,
        "bos_token_id": text_cfg.bos_token_id,
        "eos_token_id": text_cfg.eos_token_id,
        "torch_dtype": "float32",
    }
    (src / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(src)
    return src, clip


# -- the released code, re-stated -----------------------------------------------------------
def released_pixels(image: Image.Image, clip_processor) -> torch.Tensor:
    """`process_anyres_image`: low, 4 medium, the high tiles; each tile through the
    checkpoint's CLIPImageProcessor (`se = processor.size['shortest_edge']`)."""
    middle = released_best(image.size, [(2, 2), (1, 4), (4, 1)], SE)
    high = released_best(image.size, [(6, 4), (4, 6), (3, 8), (8, 3), (2, 12), (12, 2)], SE)
    tiles = [image.resize((SE, SE))]
    for cols, rows in (middle, high):
        canvas = image.resize((cols * SE, rows * SE))  # PIL's default filter: bicubic
        tiles += [canvas.crop((j, i, j + SE, i + SE)) for i in range(0, rows * SE, SE) for j in range(0, cols * SE, SE)]
    return torch.stack([clip_processor.preprocess(t, return_tensors="pt")["pixel_values"][0] for t in tiles])


def released_ids(tokenizer, prompt: str, tokens_per_tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`get_sample_encoding_with_encoder` with `is_generate=True`: 17 tiles × (placeholders,
    newline), then `tokenizer(prompt, add_special_tokens=True)` (BOS first); the end token
    it appends is cut off again. `tokens_per_tile` is the count the release hard-codes for
    its tower (50 at 224/32): patches + CLS."""
    image_len = 17 * (tokens_per_tile + 1)
    ids = torch.full((image_len,), tokenizer.convert_tokens_to_ids(PLACEHOLDER))
    newline_at = [i for i in range(image_len) if (i + 1) % (tokens_per_tile + 1) == 0]
    ids[newline_at] = tokenizer.convert_tokens_to_ids(NEWLINE)
    indices = torch.full((image_len,), -1)
    indices[ids != tokenizer.convert_tokens_to_ids(NEWLINE)] = torch.arange(17 * tokens_per_tile)
    text = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ids = torch.cat([ids, torch.tensor(text)])
    indices = torch.cat([indices, torch.full((len(text),), -1)])
    return ids[None], indices[None]


def released_forward(state, vision_cfg, text_cfg, ids, patches, indices, topk=3, interval=6):
    """`DragonflyForCausalLM.forward` on one image: (logits, kept high tiles)."""
    encoder, llm = CLIPVisionModel(vision_cfg), LlamaForCausalLM(text_cfg)
    proj = torch.nn.Linear(vision_cfg.hidden_size, text_cfg.hidden_size)
    for prefix, module in (("image_encoder.", encoder), ("language_model.", llm), ("vision_embed_tokens.", proj)):
        module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    embeds = llm.get_input_embeddings()(ids)
    query = proj(encoder(patches[5:], output_hidden_states=True).hidden_states[-2])  # [Nh, P, D]
    query_ranks = query.mean(1)  # [Nh, D]
    base = proj(encoder(patches[:5], output_hidden_states=True).hidden_states[-2])  # [5, P, D]
    n = query_ranks.shape[0]
    masked = [  # region i may pick only from block i: -inf on every other block
        torch.arange(interval, interval * 4),
        torch.cat([torch.arange(0, interval), torch.arange(interval * 2, interval * 4)]),
        torch.cat([torch.arange(0, interval * 2), torch.arange(interval * 3, interval * 4)]),
        torch.arange(0, interval * 3),
    ]
    picks = []
    for region, mask_at in enumerate(masked, start=1):
        scores = query_ranks @ base[region].mean(0)  # [Nh]
        mask = torch.zeros(n).scatter_(0, mask_at, float("-inf"))
        picks.append(torch.topk(scores + mask, topk).indices)
    kept = torch.sort(torch.cat(picks)).values
    selected = torch.index_select(query, 0, kept)
    continuous = torch.cat([base.reshape(-1, text_cfg.hidden_size), selected.reshape(-1, text_cfg.hidden_size)])
    at = torch.nonzero(indices[0] >= 0, as_tuple=True)[0]
    embeds = embeds.clone()
    embeds[0, at] = continuous[indices[0][at]]
    positions = torch.arange(ids.shape[1])[None]
    out = llm(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), position_ids=positions)
    return out.logits, kept


def picture(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# -- tests ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The command as a user types it, from the folder holding both checkpoints."""
    root = tmp_path_factory.mktemp("released")
    src, clip = write_released(root)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dragonfly.cli", "convert-released", "released", "converted", "--vision", "clip"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "released-compatible mode" in done.stdout
    return root, src, clip


def test_converted_logits_equal_the_released_forward(converted):
    root, src, clip = converted
    model, processor = load(root / "converted")
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    cfg = json.loads((src / "config.json").read_text())
    text_cfg = LlamaConfig(**cfg["text_config"])
    vision_cfg = CLIPVisionConfig.from_pretrained(clip)
    clip_processor = CLIPImageProcessorPil.from_pretrained(src)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(src)
    prompt = (
        f"<|start_header_id|>user<|end_header_id|>\n\n{QUESTION}{EOT}<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    tokens_per_tile = (vision_cfg.image_size // vision_cfg.patch_size) ** 2 + 1
    placeholder, newline = (tokenizer.convert_tokens_to_ids(t) for t in (PLACEHOLDER, NEWLINE))
    for i, size in enumerate(SIZES):
        image = picture(size, i)
        inputs = processor(text=processor.build_prompt(user_message(QUESTION)), images=[image])
        ids, indices = released_ids(tokenizer, prompt, tokens_per_tile)
        # The same sequence: the image block first, then BOS and the Llama-3 prompt; our
        # placeholder id stands at every image position (the separator comes from the model).
        ours = inputs["input_ids"][0]
        assert ours.shape == ids[0].shape, size
        image_at = (ids[0] == placeholder) | (ids[0] == newline)
        assert (ours[image_at] == model.config.image_token_id).all() and torch.equal(ours[~image_at], ids[0][~image_at])
        pixels = released_pixels(image, clip_processor)
        assert torch.allclose(inputs["pixel_values"][0], pixels, atol=1e-5), size
        with torch.no_grad():
            out = model(**inputs)
            logits, kept = released_forward(state, vision_cfg, text_cfg, ids, pixels, indices)
        assert out.selected_tiles[0].tolist() == kept.tolist(), size
        assert (out.logits - logits).abs().max() < 1e-5, (size, (out.logits - logits).abs().max())
    # A left-padded batch of two (other sizes, other question lengths) through `generate`:
    # each row's next-token logits are the released forward's on that prompt alone.
    questions = [QUESTION, "Is there a red square in the picture or not?"]
    images = [picture(SIZES[0], 0), picture(SIZES[3], 3)]
    prompts = [processor.build_prompt(user_message(q)) for q in questions]
    batch = processor(text=prompts, images=images)
    assert (batch["attention_mask"][0] == 0).any()  # the shorter one is padded on the left
    out = model.generate(**batch, max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True)
    for row, (question, image) in enumerate(zip(questions, images, strict=True)):
        text = f"<|start_header_id|>user<|end_header_id|>\n\n{question}{EOT}<|start_header_id|>assistant<|end_header_id|>\n\n"
        ids, indices = released_ids(tokenizer, text, tokens_per_tile)
        with torch.no_grad():
            logits, _ = released_forward(
                state, vision_cfg, text_cfg, ids, released_pixels(image, clip_processor), indices
            )
        assert (out.logits[0][row] - logits[0, -1]).abs().max() < 1e-5, row
        assert int(out.sequences[row, -1]) == int(logits[0, -1].argmax())
    assert isinstance(answer(model, processor, [image], [QUESTION], max_new_tokens=2)[0].text, str)


def test_the_transformers_pipeline_runs_the_converted_folder(converted):
    from transformers import pipeline

    root, _, _ = converted
    model, processor = load(root / "converted")
    image = picture((300, 200), 0)
    ours = answer(model, processor, [image], [QUESTION], max_new_tokens=4)[0].text
    pipe = pipeline("image-text-to-text", model=str(root / "converted"))
    message = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}]
    assert ours and pipe(text=message, max_new_tokens=4)[0]["generated_text"][-1]["content"].strip() == ours


def test_the_separator_is_the_llm_token_not_a_learned_vector(converted):
    root, _, _ = converted
    model, processor = load(root / "converted")
    assert model.projector.separator is None
    sep = processor.tokenizer.convert_tokens_to_ids(NEWLINE)
    assert model.config.separator_token_id == sep
    assert torch.equal(model.tile_separator(), model.get_input_embeddings().weight[sep])
    cfg = model.config
    assert (cfg.region_rule, cfg.select_k, cfg.select_order, cfg.vision_feature_layer, cfg.keep_cls) == (
        "index_block",
        3,
        "most_similar",
        -2,
        True,
    )
    assert [2, 12] in cfg.high_grids and [12, 2] in cfg.high_grids


def test_a_checkpoint_without_its_tower_takes_it_from_vision(tmp_path):
    src, clip = write_released(tmp_path, with_tower=False)
    done = convert(src, tmp_path / "out", vision=clip)
    assert done.vision_from == str(clip)
    model, _ = load(tmp_path / "out")
    tower = CLIPVisionModel.from_pretrained(clip)
    for name, tensor in tower.state_dict().items():
        assert torch.equal(model.vision_tower.state_dict()[name], tensor), name
    with pytest.raises(ReleasedCheckpointError, match="not empty"):
        convert(src, tmp_path / "out", vision=clip)  # nothing is overwritten unasked


def test_a_sharded_bf16_fuyu_typed_checkpoint_converts_bit_for_bit(tmp_path):
    src, clip = write_released(tmp_path, model_type="fuyu", sharded_bf16=True)
    convert(src, tmp_path / "out", vision=clip)
    saved = load_file(tmp_path / "out" / "model.safetensors")
    source = {
        **load_file(src / "model-00001-of-00002.safetensors"),
        **load_file(src / "model-00002-of-00002.safetensors"),
    }
    renames = {
        "image_encoder.": "vision_tower.",
        "vision_embed_tokens.": "projector.proj.",
        "language_model.": "language_model.",
    }
    assert len(saved) == len(source)
    for name, tensor in source.items():
        prefix = next(p for p in renames if name.startswith(p))
        ours = saved[renames[prefix] + name[len(prefix) :]]
        assert ours.dtype == torch.bfloat16 and torch.equal(ours, tensor), name
    model, _ = load(tmp_path / "out", dtype="bfloat16")
    assert model.config.dtype == torch.bfloat16
    # A name in two shards is refused, not silently overwritten.
    index = json.loads((src / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    extra = load_file(src / "model-00002-of-00002.safetensors") | {first: torch.zeros(1, dtype=torch.bfloat16)}
    save_file(extra, src / "model-00002-of-00002.safetensors")
    with pytest.raises(ReleasedCheckpointError, match="already read from another file"):
        convert(src, tmp_path / "again", vision=clip)


class Payload:
    """Unpickling this would run a command (it writes `marker`)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_holding_anything_but_tensors_is_refused(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"vision_embed_tokens.weight": torch.zeros(2), "x": Payload(marker)}, tmp_path / "code.bin")
    with pytest.raises(ReleasedCheckpointError, match="objects other than tensors, refused"):
        load_tensors(tmp_path / "code.bin")
    assert not marker.exists()
    torch.save({"vision_embed_tokens.weight": torch.zeros(2), "step": 3}, tmp_path / "int.bin")
    with pytest.raises(ReleasedCheckpointError, match="not tensors .*'step': int"):
        load_tensors(tmp_path / "int.bin")
    # Through the command: one line, no traceback.
    (tmp_path / "ckpt").mkdir()
    src, clip = write_released(tmp_path / "ckpt")
    torch.save({"language_model.x": Payload(marker)}, src / "pytorch_model.bin")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dragonfly.cli", "convert-released", "released", "out", "--vision", "clip"]
    done = subprocess.run(cmd, cwd=src.parent, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and "refused" in done.stderr
    assert not marker.exists() and not (src.parent / "out").exists()


def test_bad_released_folders_are_named(tmp_path):
    src, clip = write_released(tmp_path)
    with pytest.raises(ReleasedCheckpointError, match="not a local folder"):
        convert(src, tmp_path / "a")  # image_encoder is a hub id and no --vision
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    state["mm_projector.weight"] = torch.zeros(1)
    torch.save(state, src / "pytorch_model.bin")
    with pytest.raises(ReleasedCheckpointError, match="outside image_encoder"):
        convert(src, tmp_path / "b", vision=clip)
    del state["mm_projector.weight"], state["vision_embed_tokens.bias"]
    torch.save(state, src / "pytorch_model.bin")
    with pytest.raises(WeightsMismatchError, match="1 tensor\\(s\\) missing: projector.proj.bias"):
        convert(src, tmp_path / "c", vision=clip)
    assert not any((tmp_path / d).exists() for d in "abc")


def test_training_conversations_put_the_image_first_and_label_only_the_reply(converted):
    root, _, _ = converted
    _, processor = load(root / "converted")
    messages = user_message(QUESTION) + [{"role": "assistant", "content": "red"}]
    enc = processor.encode_conversation(messages, [picture((300, 200), 0)])
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    n = processor.image_seq_length
    assert ids[:n] == [processor.image_token_id] * n and ids[n] == processor.tokenizer.bos_token_id
    assert processor.image_token_id not in ids[n:]
    text = processor.tokenizer.decode(ids[n:])
    assert f"<|end_header_id|>\n\n{QUESTION}" in text  # the placeholder's newline left with it
    reply = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    assert processor.tokenizer.decode(reply) == f"red{EOT}"
