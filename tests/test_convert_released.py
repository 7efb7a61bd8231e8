"""`dragonfly convert-released` on checkpoints the released code wrote itself (issues #16, #23).

`tests/fixtures/released/` was written by the unmodified released code
(`togethercomputer/Dragonfly` at the v1 commit) under transformers 4.45.2: its
`save_pretrained` as an fp32 `pytorch_model.bin` and as bf16 safetensors shards with an index,
and its own processor and forward pass on five images: token ids, tile statistics, kept tiles,
logits at the text positions, greedy tokens and a left-padded batch through `generate`
(`tests/fixtures/write_fixtures.sh` rewrites them; `WRITTEN_BY.json` has the versions). The
tower's tensors carry the 4.x names (`image_encoder.vision_model.*`), as every released
checkpoint does. The converted model must reproduce those outputs; nothing here re-states the
released code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from dragonfly.inference import answer, load, user_message
from dragonfly.released import ReleasedCheckpointError, convert, load_tensors
from dragonfly.weights import WeightsMismatchError

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASED = FIXTURES / "released"
REFERENCE = load_file(RELEASED / "reference.safetensors")
META = json.loads((RELEASED / "reference.json").read_text())
PLACEHOLDER, NEWLINE = "<|reserved_special_token_0|>", "<|reserved_special_token_1|>"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def released_copy(root: Path, form: str = "bin", clip: str = "clip") -> tuple[Path, Path]:
    """`root/released` (the released folder as downloaded) and `root/clip` (its image_encoder)."""
    shutil.copytree(RELEASED / form, root / "released")
    shutil.copytree(FIXTURES / "hub" / clip, root / "clip")
    return root / "released", root / "clip"


def convert_as_typed(root: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dragonfly.cli", "convert-released", "released", "converted", "--vision", "clip"]
    return subprocess.run([*cmd, *extra], cwd=root, capture_output=True, text=True, env=ENV, timeout=300)


def image(name: str) -> Image.Image:
    return Image.open(RELEASED / "images" / f"{name}.png").convert("RGB")


def released_ids_as_ours(ids: torch.Tensor, tokenizer, image_token_id: int) -> torch.Tensor:
    """The released sequence with its tile placeholders and separators as our one image id (the
    separator's embedding comes from the model: `separator_token_id`)."""
    at = (ids == tokenizer.convert_tokens_to_ids(PLACEHOLDER)) | (ids == tokenizer.convert_tokens_to_ids(NEWLINE))
    return torch.where(at, image_token_id, ids)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The fp32 `.bin` release converted by the command as a user types it after `hf download`."""
    root = tmp_path_factory.mktemp("released")
    released_copy(root)
    done = convert_as_typed(root)
    assert done.returncode == 0, done.stderr
    assert "released-compatible mode" in done.stdout
    return root / "converted"


def test_the_converted_release_reproduces_the_released_code(converted):
    model, processor = load(converted)
    tokenizer = processor.tokenizer
    for i, case in enumerate(META["single"]):
        inputs = processor(text=processor.build_prompt(user_message(META["question"])), images=[image(f"single{i}")])
        ours = inputs["input_ids"][0]
        theirs = released_ids_as_ours(REFERENCE[f"single{i}.input_ids"], tokenizer, model.config.image_token_id)
        assert torch.equal(ours, theirs), case["size"]
        tiles = inputs["pixel_values"][0]  # [29, 3, 28, 28]
        assert torch.allclose(tiles.mean((2, 3)), REFERENCE[f"single{i}.tile_mean"], atol=1e-5)
        assert torch.allclose(tiles.std((2, 3)), REFERENCE[f"single{i}.tile_std"], atol=1e-5)
        with torch.no_grad():
            out = model(**inputs)
        assert out.selected_tiles[0].tolist() == REFERENCE[f"single{i}.kept"].tolist(), case["size"]
        logits = out.logits[0, case["image_len"] :]
        assert (logits - REFERENCE[f"single{i}.logits"]).abs().max() < 1e-5, case["size"]
        greedy = model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, ours.shape[0] :]
        assert greedy.tolist() == REFERENCE[f"single{i}.greedy"].tolist(), case["size"]


AUTO_CLASSES = """
import sys
import dragonfly
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor
folder, released, text = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = AutoModelForImageTextToText.from_pretrained(folder)
processor = AutoProcessor.from_pretrained(folder)
question = "What colour is the circle?"
messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
image = Image.open(f"{released}/images/single0.png").convert("RGB")
with torch.no_grad():
    logits = model(**processor(text=prompt, images=[image])).logits[0, -text:]
print(float((logits - load_file(f"{released}/reference.safetensors")["single0.logits"]).abs().max()))
"""


def test_a_plain_import_dragonfly_and_the_auto_classes_reproduce_it(converted):
    """What a transformers user types: no dragonfly API but the import, the processor's own
    chat template."""
    text = REFERENCE["single0.logits"].shape[0]  # the positions after the image block
    cmd = [sys.executable, "-c", AUTO_CLASSES, str(converted), str(RELEASED), str(text)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) < 1e-5


def test_a_left_padded_batch_generates_what_the_released_code_generates(converted):
    model, processor = load(converted)
    batch_meta = META["batch"]
    prompts = [processor.build_prompt(user_message(q)) for q in batch_meta["questions"]]
    batch = processor(text=prompts, images=[image("batch0"), image("batch1")])
    mask = REFERENCE["batch.attention_mask"]
    assert torch.equal(batch["attention_mask"], mask) and (mask[:, 0] == 0).any()  # one row padded, on the left
    theirs = released_ids_as_ours(REFERENCE["batch.input_ids"], processor.tokenizer, model.config.image_token_id)
    assert torch.equal(batch["input_ids"][mask == 1], theirs[mask == 1])
    out = model.generate(**batch, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert (out.logits[0] - REFERENCE["batch.first_logits"]).abs().max() < 1e-5
    assert torch.equal(out.sequences[:, batch["input_ids"].shape[1] :], REFERENCE["batch.new_tokens"])


def test_the_sharded_bf16_release_converts_bit_for_bit_and_matches_in_fp32(tmp_path):
    src, clip = released_copy(tmp_path, "sharded-bf16")
    convert(src, tmp_path / "out", vision=clip)
    saved = load_file(tmp_path / "out" / "model.safetensors")
    shards = sorted(src.glob("model-*.safetensors"))
    assert len(shards) == 2
    source = {k: v for shard in shards for k, v in load_file(shard).items()}
    renames = {"image_encoder.vision_model.": "vision_tower.", "vision_embed_tokens.": "projector.proj."}
    assert len(saved) == len(source)
    for name, tensor in source.items():
        prefix = next((p for p in renames if name.startswith(p)), "")
        ours = saved[renames.get(prefix, "") + name[len(prefix) :]]
        assert ours.dtype == torch.bfloat16 and torch.equal(ours, tensor), name
    model, processor = load(tmp_path / "out", dtype="float32")  # the bf16 values, computed in fp32
    inputs = processor(text=processor.build_prompt(user_message(META["question"])), images=[image("single0")])
    with torch.no_grad():
        out = model(**inputs)
    assert out.selected_tiles[0].tolist() == REFERENCE["bf16.single0.kept"].tolist()
    n = META["bf16_single0"]["image_len"]
    assert (out.logits[0, n:] - REFERENCE["bf16.single0.logits"]).abs().max() < 1e-5
    assert load(tmp_path / "out", dtype="bfloat16")[0].config.dtype == torch.bfloat16


def test_both_tower_namings_convert_to_the_same_model_and_no_other(tmp_path):
    """transformers 4.x wrote `image_encoder.vision_model.*`, 5.x writes `image_encoder.*`: both
    are the same tower. A name of neither form stays an error."""
    state = torch.load(RELEASED / "bin" / "pytorch_model.bin", weights_only=True)
    v5 = {k.replace("image_encoder.vision_model.", "image_encoder."): v for k, v in state.items()}
    assert v5.keys() != state.keys()
    converted = {}
    for form, tensors in (("v4", state), ("v5", v5)):
        src, clip = released_copy(tmp_path / form)
        torch.save(tensors, src / "pytorch_model.bin")
        convert(src, tmp_path / form / "out", vision=clip)
        converted[form] = load_file(tmp_path / form / "out" / "model.safetensors")
    assert converted["v4"].keys() == converted["v5"].keys()
    assert all(torch.equal(converted["v4"][k], converted["v5"][k]) for k in converted["v4"])
    both = state | {
        "image_encoder.embeddings.class_embedding": state["image_encoder.vision_model.embeddings.class_embedding"]
    }
    strange = state | {"image_encoder.vision_model.extra.weight": torch.zeros(2)}
    for form, tensors, error, match in (
        ("both", both, ReleasedCheckpointError, "both named vision_tower.embeddings.class_embedding"),
        ("strange", strange, WeightsMismatchError, "1 unexpected: vision_tower.extra.weight"),
    ):
        src, clip = released_copy(tmp_path / form)
        torch.save(tensors, src / "pytorch_model.bin")
        with pytest.raises(error, match=match):
            convert(src, tmp_path / form / "out", vision=clip)


def test_the_transformers_pipeline_runs_the_converted_folder(converted):
    from transformers import pipeline

    model, processor = load(converted)
    picture = image("single0")
    ours = answer(model, processor, [picture], [META["question"]], max_new_tokens=4)[0].text
    pipe = pipeline("image-text-to-text", model=str(converted))
    content = [{"type": "image", "image": picture}, {"type": "text", "text": META["question"]}]
    message = [{"role": "user", "content": content}]
    assert ours and pipe(text=message, max_new_tokens=4)[0]["generated_text"][-1]["content"].strip() == ours


def test_the_separator_is_the_llm_token_not_a_learned_vector(converted):
    model, processor = load(converted)
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


@pytest.mark.parametrize("clip_folder", ["clip", "clip-4.30"])  # as transformers 4.45 and 4.30 saved CLIP
def test_a_checkpoint_without_its_tower_takes_it_from_vision(clip_folder, tmp_path):
    src, clip = released_copy(tmp_path, clip=clip_folder)
    state = torch.load(src / "pytorch_model.bin", weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("image_encoder.")}, src / "pytorch_model.bin")
    done = convert(src, tmp_path / "out", vision=clip)
    assert done.vision_from == str(clip)
    model, _ = load(tmp_path / "out")
    # The 4.x dual encoder: vision_model.*, text_model.* (4.30 also saved position_ids buffers).
    files = sorted(clip.glob("*.safetensors"))
    dual = load_file(files[0]) if files else torch.load(clip / "pytorch_model.bin", weights_only=True)
    tower = model.vision_tower.state_dict()
    for name, tensor in tower.items():
        assert torch.equal(tensor, dual[f"vision_model.{name}"]), name
    with pytest.raises(ReleasedCheckpointError, match="not empty"):
        convert(src, tmp_path / "out", vision=clip)  # nothing is overwritten unasked


def test_a_fuyu_typed_config_converts(tmp_path):
    src, clip = released_copy(tmp_path, "sharded-bf16")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | {"model_type": "fuyu"}))
    assert convert(src, tmp_path / "out", vision=clip).dtype == "bfloat16"


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
    src, _ = released_copy(tmp_path / "ckpt")
    torch.save({"language_model.x": Payload(marker)}, src / "pytorch_model.bin")
    done = convert_as_typed(src.parent)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and "refused" in done.stderr
    assert not marker.exists() and not (src.parent / "converted").exists()


def test_bad_released_folders_are_named(tmp_path):
    src, clip = released_copy(tmp_path)
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
    config = json.loads((clip / "config.json").read_text())  # a 336-px tower, as the Llama-3.1 release's
    config["vision_config"]["image_size"] = 56
    (clip / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ReleasedCheckpointError, match="gives 197 tokens per tile, the v1 release's processor places 50"
    ):
        convert(src, tmp_path / "d", vision=clip)
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_training_conversations_put_the_image_first_and_label_only_the_reply(converted):
    _, processor = load(converted)
    messages = user_message(META["question"]) + [{"role": "assistant", "content": "red"}]
    enc = processor.encode_conversation(messages, [image("single0")])
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    n = processor.image_seq_length
    assert ids[:n] == [processor.image_token_id] * n and ids[n] == processor.tokenizer.bos_token_id
    assert processor.image_token_id not in ids[n:]
    text = processor.tokenizer.decode(ids[n:])
    assert f"<|end_header_id|>\n\n{META['question']}" in text  # the placeholder's newline left with it
    reply = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    assert processor.tokenizer.decode(reply) == "red<|eot_id|>"
