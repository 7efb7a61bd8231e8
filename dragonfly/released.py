"""The released Dragonfly checkpoints (``togethercomputer/Llama-3-8B-Dragonfly-v1``,
``-Med-v1``) in this project's layout: ``dragonfly convert-released SRC DST``.

The released layout (``togethercomputer/Dragonfly``, ``modeling_dragonfly.py``): a
``config.json`` whose ``image_encoder`` names the CLIP model (a hub id or a path) and whose
``text_config`` (or top-level Llama fields) describes the LLM; weights with the names
``image_encoder.*`` (a ``CLIPVisionModel``), ``language_model.*`` (a ``LlamaForCausalLM``)
and ``vision_embed_tokens.*`` (one ``nn.Linear``), in safetensors or ``pytorch_model*.bin``.

The converted model runs in the released-compatible mode (:data:`RELEASED_LAYOUT` plus the
released sequence), so it sees what it was trained on; every difference is in
``docs/released.md``. Pickled weights are read with ``torch.load(weights_only=True)``
only, and anything but tensors in them is refused: a checkpoint never runs code.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig

from dragonfly import safe_load
from dragonfly.build import make_processor, pixel_stats
from dragonfly.errors import CheckpointError
from dragonfly.files import atomic_dir
from dragonfly.model.constants import IMAGE_TOKEN, PAPER_MEDIUM, RELEASED_HIGH
from dragonfly.model.modeling import DragonflyConfig, DragonflyForConditionalGeneration
from dragonfly.model.specs import Layout
from dragonfly.weights import check_loading_info, hf_bars, unprobed

MODEL_TYPES = ("dragonfly", "fuyu")  # the released config class declares model_type "fuyu"
SEPARATOR_TOKEN = "<|reserved_special_token_1|>"  # after each tile (IMAGE_NEWLINE_TOKEN)
V1_TOKENS_PER_TILE = 50  # the v1 processor's IMAGE_PATCH_SIZE
# What the released forward hard-codes: topk=3 per region, region_token_interval=6 (the
# i-th block of 6 consecutive high tiles), CLIP hidden_states[-2] with CLS, one Linear.
RELEASED_LAYOUT = Layout(
    medium_grids=[list(g) for g in PAPER_MEDIUM],
    high_grids=[list(g) for g in RELEASED_HIGH],
    select_k=3,
    strategy="region",
    select_order="most_similar",
    projector_type="linear",
    vision_feature_layer=-2,
    keep_cls=True,
    resize_mode="stretch",
    region_rule="index_block",
)
# Released name prefix → this project's.
RENAMES = {
    "image_encoder.": "vision_tower.",
    "language_model.": "language_model.",
    "vision_embed_tokens.": "projector.proj.",
}
# Buffers older transformers saved and newer ones recompute: dropped by name.
RECOMPUTED = ("embeddings.position_ids", "rotary_emb.inv_freq")
# Tensors of a full CLIP checkpoint the vision tower does not use.
CLIP_UNUSED = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


class ReleasedCheckpointError(CheckpointError):
    """A released-layout checkpoint that cannot be converted as it is."""


@dataclass(frozen=True)
class Converted:
    out: Path
    parameters: int
    dtype: str
    vision_from: str  # where the tower's weights came from


def read_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise ReleasedCheckpointError(f"{src} has no config.json: not a checkpoint directory")
    cfg = json.loads(path.read_text())
    if cfg.get("model_type") not in MODEL_TYPES:
        raise ReleasedCheckpointError(
            f"{path}: model_type {cfg.get('model_type')!r} is not a released Dragonfly ({' or '.join(MODEL_TYPES)})"
        )
    if not cfg.get("image_encoder"):
        raise ReleasedCheckpointError(
            f"{path}: image_encoder is empty, a patch-embedding model this project does not have"
        )
    return cfg


def text_config(cfg: dict):
    """The LLM's config: ``text_config``, or the top-level Llama fields the released config
    class falls back to."""
    text = dict(cfg.get("text_config") or {})
    if not text:
        keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        keys += ("num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta")
        text = {k: cfg[k] for k in keys + ("bos_token_id", "eos_token_id", "rope_scaling") if k in cfg}
    return AutoConfig.for_model(text.pop("model_type", "llama"), **text)


def vision_config(path: Path):
    cfg = AutoConfig.from_pretrained(path)
    return getattr(cfg, "vision_config", cfg)


def vision_dir(cfg: dict, vision: str | Path | None) -> Path:
    """The CLIP model the tower is: ``--vision``, else ``image_encoder`` when it is a folder."""
    path = Path(vision or cfg["image_encoder"])
    if not (path / "config.json").is_file():
        raise ReleasedCheckpointError(
            f"the vision encoder {str(vision or cfg['image_encoder'])!r} is not a local folder with a config.json",
            hint="download it (e.g. `hf download openai/clip-vit-base-patch32 --local-dir clip`) and pass --vision clip",
        )
    return path


def weight_files(src: Path) -> list[Path]:
    """The checkpoint's weight files: those its index names, else every safetensors file,
    else every ``pytorch_model*.bin`` (safetensors win when both are there)."""
    for index, pattern in (
        ("model.safetensors.index.json", "*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model*.bin"),
    ):
        if (src / index).is_file():
            names = sorted(set(json.loads((src / index).read_text())["weight_map"].values()))
            missing = [n for n in names if not (src / n).is_file()]
            if missing:
                raise ReleasedCheckpointError(f"{src / index} names {len(missing)} missing file(s): {missing[0]}")
            return [src / n for n in names]
        found = sorted(src.glob(pattern))
        if found:
            return found
    raise ReleasedCheckpointError(f"{src} holds no weights (*.safetensors or pytorch_model*.bin)")


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder; a name in two files is an error, not a guess."""
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        tensors = load_tensors(file)
        twice = sorted(set(tensors) & set(state))
        if twice:
            raise ReleasedCheckpointError(f"{file}: {len(twice)} tensor(s) already read from another file: {twice[0]}")
        state.update(tensors)
    return state


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """One weights file → its tensors. Pickles load with ``weights_only=True`` and must hold
    a flat name → tensor mapping; anything else is refused before it is used."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        try:
            state = safe_load.load(path, mmap=True)
        except RuntimeError as err:  # a legacy (pre-zip) pickle cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            state = safe_load.load(path)
    except safe_load.Refused as err:
        raise ReleasedCheckpointError(
            f"{path}: the pickle holds objects other than tensors, refused (loading it would run code): "
            + safe_load.reason(err)
        ) from None
    if not isinstance(state, dict):
        raise ReleasedCheckpointError(f"{path}: holds a {type(state).__name__}, not a name → tensor mapping")
    bad = sorted(k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise ReleasedCheckpointError(
            f"{path}: {len(bad)} entries are not tensors (e.g. {bad[0]!r}: {type(state[bad[0]]).__name__}); "
            "a released state dict holds tensors only"
        )
    return state


def renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released names → this project's; a name under no known prefix is an error."""
    out, unknown = {}, []
    for name, tensor in state.items():
        prefix = next((p for p in RENAMES if name.startswith(p)), None)
        if prefix is None:
            unknown.append(name)
        elif not name.endswith(RECOMPUTED):
            out[RENAMES[prefix] + name[len(prefix) :]] = tensor
    if unknown:
        raise ReleasedCheckpointError(
            f"{len(unknown)} tensor(s) outside image_encoder.*, language_model.*, vision_embed_tokens.*: "
            + ", ".join(sorted(unknown)[:3])
        )
    return out


def tower_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The vision tower from a CLIP folder (vision-only or full), under this project's names."""
    return {
        "vision_tower." + name: t
        for name, t in read_state(path).items()
        if not name.startswith(CLIP_UNUSED) and not name.endswith(RECOMPUTED)
    }


def _tokenizer(src: Path, text):
    # The LLM's config, so transformers does not read the unregistered released config.json.
    tokenizer = AutoTokenizer.from_pretrained(src, config=text)
    if tokenizer.convert_tokens_to_ids(SEPARATOR_TOKEN) in (None, tokenizer.unk_token_id):
        raise ReleasedCheckpointError(f"{src}: the tokenizer has no {SEPARATOR_TOKEN} (the released tile separator)")
    # The image placeholder is ours; the model never embeds it (see build_from_backbones).
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as the released processor pads
    return tokenizer  # the processor pads on the left itself


def _check_v1_tower(tower_cfg, clip: Path) -> None:
    """The v1 processor places a fixed 50 tokens per tile (CLIP ViT-B/32 at 224 px: 7×7 + CLS).
    Another tower is not a v1 checkpoint: Llama-3.1-8B-Dragonfly-v1 (ViT-L/14 at 336 px) is
    the October 2024 code, which mean-pools every high tile instead of selecting, and would
    convert without an error into a model that computes something else."""
    tokens = (tower_cfg.image_size // tower_cfg.patch_size) ** 2 + 1
    if tokens != V1_TOKENS_PER_TILE:
        raise ReleasedCheckpointError(
            f"{clip}: this tower gives {tokens} tokens per tile, the v1 release's processor places "
            f"{V1_TOKENS_PER_TILE} (CLIP ViT-B/32 at 224 px)",
            hint="pass --vision a download of openai/clip-vit-base-patch32; a Llama-3.1 Dragonfly "
            "(ViT-L/14 at 336 px, mean-pooled high tiles, no zoom selection) is not supported",
        )


def _pixel_settings(src: Path, clip: Path, tile: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the image processor saved with the checkpoint, else of the CLIP folder;
    its tile size must be the tower's (the released processor tiles at ``shortest_edge``)."""
    folder = src if (src / "preprocessor_config.json").is_file() else clip
    path = folder / "preprocessor_config.json"
    if path.is_file():
        size = json.loads(path.read_text()).get("size") or {}
        edge = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
        if edge is not None and edge != tile:
            raise ReleasedCheckpointError(f"{path} tiles images at {edge} px, the vision tower takes {tile} px")
    return pixel_stats(folder)


def hub_renamed(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The names older transformers wrote → today's, by transformers' own per-class renamings
    (those ``from_pretrained`` applies: e.g. a 4.x ``CLIPVisionModel`` saved its tensors under
    ``vision_model.*``, which 5.x dropped), scoped to the sub-model that owns each name.
    Renamings only: a name that needs a tensor conversion stays as it is and is refused."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    renamings = [t for t in get_model_conversion_mapping(model) if isinstance(t, WeightRenaming)]
    out = {}
    for name, tensor in state.items():
        for renaming in renamings:
            name, _ = renaming.rename_source_key(name)
        if name in out:
            raise ReleasedCheckpointError(f"two tensors of the checkpoint are both named {name} in this layout")
        out[name] = tensor
    return out


def _load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], src: Path) -> None:
    """Assign ``state`` to ``model``; any mismatch is the project's one weights error."""
    state = hub_renamed(model, state)
    expected = model.state_dict()
    check_loading_info(
        src,
        {
            "missing_keys": set(expected) - set(state),
            "unexpected_keys": set(state) - set(expected),
            "mismatched_keys": {k for k in set(state) & set(expected) if state[k].shape != expected[k].shape},
        },
    )
    model.load_state_dict(state, strict=True, assign=True)


def convert(src: str | Path, dst: str | Path, vision: str | Path | None = None, force: bool = False) -> Converted:
    """Released checkpoint ``src`` → a Dragonfly folder ``dst`` (model, processor,
    generation config) in the released-compatible mode, loadable with the Auto classes.
    Every tensor takes the LLM's dtype; ``dst`` appears only when the whole folder is written, and
    a non-empty ``dst`` is replaced only with ``force``."""
    from accelerate import init_empty_weights

    src, dst = Path(src), Path(dst)
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise ReleasedCheckpointError(f"{dst} exists and is not empty", hint="choose another folder, or pass --force")
    cfg = read_config(src)
    text = text_config(cfg)
    tokenizer = _tokenizer(src, text)
    clip = vision_dir(cfg, vision)
    tower_cfg = vision_config(clip)
    _check_v1_tower(tower_cfg, clip)
    mean, std = _pixel_settings(src, clip, tower_cfg.image_size)
    state = renamed(read_state(src))
    vision_from = str(src)
    if not any(k.startswith("vision_tower.") for k in state):  # a checkpoint saved without its tower
        state.update(tower_tensors(clip))
        vision_from = str(clip)
    config = DragonflyConfig(
        vision_config=tower_cfg,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        separator_token_id=tokenizer.convert_tokens_to_ids(SEPARATOR_TOKEN),
        **asdict(RELEASED_LAYOUT),
    )
    # The LLM's dtype for everything (a bf16 release with an fp32 tower from --vision stays bf16).
    dtype = next(t.dtype for k, t in state.items() if k.startswith("language_model.") and t.is_floating_point())
    config.dtype = dtype
    with init_empty_weights(include_buffers=False):  # no second copy of an 8B model in memory
        model = DragonflyForConditionalGeneration(config)
    _load_into(model, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, src)
    stops = [t for t in ("<|eot_id|>", "<|end_of_text|>") if t in tokenizer.get_vocab()]
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in stops] or tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    # The released processor resizes every resolution from the image itself and puts the
    # image block before the text and its BOS.
    processor = make_processor(config, tokenizer, mean, std, reuse_resized=False, image_position="first")
    with atomic_dir(dst) as tmp, hf_bars(sys.stderr.isatty()), unprobed():
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return Converted(dst, sum(p.numel() for p in model.parameters()), str(dtype).removeprefix("torch."), vision_from)
