"""The models and inputs of the GPU check (benchmarks/gpu_check.py): the tiny profile's model,
a paper-shaped model made from the shipped backbone configs, real photographs, and batches
shaped like the paper's general2 samples.

The paper-shaped model is the paper profile's model section with fewer LLM layers (as many
as fit one GPU with full AdamW state): built on the meta device by the dry run's own
``meta_model``, its trainable parts set there, then materialised on the target device with
random weights. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dragonfly.config import load_profile
from dragonfly.model.constants import IGNORE_INDEX
from dragonfly.train.data import Collator

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
GENERAL2 = ["projector", "vision", "llm"]  # general stage 2 trains every part
# Real photographs that ship inside scikit-image (no download): varied aspect ratios, so
# the processor picks different grids and the selection sees different regions.
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "brick",
    "horse",
    "moon",
)


@dataclass(frozen=True)
class Sizes:
    """Overrides of the backbones' config.json keys; empty keeps the released shape."""

    vision: dict = field(default_factory=dict)
    llm: dict = field(default_factory=dict)


# The check's paper-shaped model: CLIP ViT-B/32 as released; Llama-3-8B's width, heads and
# vocabulary with 8 of its 32 decoder layers (about 2.9 B parameters: 16 B each for bf16
# weights and gradients, fp32 master weights and Adam moments is ~46 GB, leaving room for
# the activations of a micro-batch of several 1,166-position samples on one 141 GB GPU).
FULL = Sizes(llm={"num_hidden_layers": 8})
# The smoke run's: the same tile and patch size (so 867 positions per image, as in the
# paper), every width cut down so a CPU runs it in seconds.
SMOKE = Sizes(
    vision={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2},
    llm={
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": 4096,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
)


def photos(limit: int | None = None) -> dict:
    """{name: RGB PIL image} of the scikit-image photographs that this install has."""
    from PIL import Image
    from skimage import data

    out = {}
    for name in PHOTOS[:limit]:
        try:
            array = getattr(data, name)()
        except Exception:  # an older scikit-image lacks one, or would fetch it: use the others
            continue
        out[name] = Image.fromarray(array).convert("RGB")
    if not out:
        raise RuntimeError("no scikit-image photograph could be loaded")
    return out


def tiny_model(device: torch.device):
    """The tiny profile's model and processor, every part trainable. Its pretrained tower is
    a pipeline output (`dragonfly pretrain-vision`), so the tower is random here."""
    from dragonfly.build import build_tiny
    from dragonfly.train.parts import set_trainable

    section = load_profile("tiny", PARAMS).model
    model, processor = build_tiny(dataclasses.replace(section.tiny, vision_from=None), section.layout, section.seed)
    set_trainable(model, GENERAL2)
    return model.to(device), processor


def paper_shaped(sizes: Sizes, device: torch.device, work: Path):
    """The paper profile's model with `sizes` applied, random weights made on `device` (fp32)."""
    from dragonfly.train.dryrun import backbone_config, meta_model
    from dragonfly.train.parts import set_trainable

    section = load_profile("paper", PARAMS).model
    vision = backbone_config(section.vision)
    configs = {
        "vision": vision.get("vision_config", vision) | sizes.vision,
        "llm": backbone_config(section.llm) | sizes.llm,
    }
    for name, config in configs.items():  # meta_model reads a local folder's config.json first
        (work / name).mkdir(parents=True, exist_ok=True)
        (work / name / "config.json").write_text(json.dumps(config))
    model = meta_model(dataclasses.replace(section, vision=str(work / "vision"), llm=str(work / "llm")))
    with torch.device("meta"):  # set_trainable's probe tile is made on the default device
        set_trainable(model, GENERAL2)
    model.to_empty(device=device)
    torch.manual_seed(section.seed)
    model.init_weights()
    return model


def image_processor(config):
    """The processor's image half for `config`, as `make_processor` builds it (the paper-shaped
    model has no tokenizer of its own; the tiny one stands in and is not used)."""
    from dragonfly.build import make_processor
    from dragonfly.model.tiny import build_tokenizer

    return make_processor(config, build_tokenizer()).image_processor


def tiny_batch(processor, images: list) -> dict:
    """One conversation per image, encoded and collated as the trainer does."""
    examples = []
    for image in images:
        messages = [
            {"role": "user", "content": "<image>\nWhat is in the picture, and where?"},
            {"role": "assistant", "content": "A photograph; the detail is in the upper left."},
        ]
        examples.append(processor.encode_conversation(messages, [image]))
    return Collator(processor.tokenizer.pad_token_id)(examples)


class PaperSamples(torch.utils.data.Dataset):
    """General2-shaped samples: one real image file (decoded and tiled in the worker, as the
    trainer's loader does) and `text` text positions of random token ids, the `<image>`
    placeholder among them (the dry run's count: text + images × (image positions − 1)).
    The last `reply` positions are the trained answer."""

    def __init__(self, paths: list[Path], config, text: int, reply: int = 100):
        self.paths, self.text, self.reply = paths, text, reply
        self.processor = image_processor(config)
        self.image_token, self.vocab = config.image_token_id, config.text_config.vocab_size
        self.positions = config.image_seq_length

    def __len__(self) -> int:
        return 1 << 20  # endless: the step loop decides how many it draws

    def __getitem__(self, index: int) -> dict:
        gen = torch.Generator().manual_seed(index)
        words = torch.randint(0, min(self.vocab, self.image_token), (self.text - 1,), generator=gen)
        prompt = (self.text - 1 - self.reply) // 2
        ids = torch.cat([words[:prompt], torch.full((self.positions,), self.image_token), words[prompt:]])
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[-self.reply :] = ids[-self.reply :]
        tiles = self.processor(self.paths[index % len(self.paths)])
        return {"input_ids": ids, "labels": labels, **{k: tiles[k] for k in ("pixel_values", "image_regions")}}


def paper_loader(paths: list[Path], config, text: int, micro: int, workers: int, pin: bool):
    """Micro-batches of `PaperSamples`, collated by the trainer's Collator."""
    return torch.utils.data.DataLoader(
        PaperSamples(paths, config, text),
        batch_size=micro,
        num_workers=workers,
        collate_fn=Collator(pad_token_id=0),
        pin_memory=pin,
        persistent_workers=workers > 0,
        timeout=120 if workers else 0,  # a stuck worker fails the section instead of the whole check
    )


def save_photos(images: dict, folder: Path) -> list[Path]:
    """The photographs as JPEG files, so the loader decodes them as it would a data set's."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in images.items():
        paths.append(folder / f"{name}.jpg")
        image.save(paths[-1], quality=92)
    return paths
