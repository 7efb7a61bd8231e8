"""The model's typed settings as plain dataclasses (no torch): how an image becomes visual
tokens (:class:`Layout`) and the sizes of the tiny profile (:class:`TinySpec`).
``DragonflyConfig`` takes its layout defaults from :class:`Layout`, so each default is
written once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from dragonfly.model.constants import PAPER_HIGH, PAPER_MEDIUM


@dataclass
class Layout:
    """How an image becomes visual tokens (paper §3; ablations of Tables 1, 5, 6)."""

    medium_grids: list[list[int]] = field(default_factory=lambda: [list(g) for g in PAPER_MEDIUM])
    high_grids: list[list[int]] = field(default_factory=lambda: [list(g) for g in PAPER_HIGH])
    select_k: int = 3
    strategy: str = "region"
    select_order: str = "most_similar"  # or least_similar (ours; see dragonfly/model/zoom.py)
    projector_type: str = "linear"
    vision_feature_layer: int = -2
    keep_cls: bool = True
    resize_mode: str = "stretch"
    # spatial (ours): a medium tile's candidates are the high tiles inside it, the high grid
    # refining the medium one; index_block (the released code, paper Eq. 2): the i-th block
    # of s consecutive high tiles in row-major order, the high grid chosen on its own.
    region_rule: str = "spatial"


LAYOUT_KEYS = tuple(f.name for f in dataclasses.fields(Layout))  # what an ablation or stage may change


@dataclass
class TinySpec:
    """Sizes of the tiny profile (all overridable from params.yaml)."""

    tile_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    # The most tokens the tiny tokenizer may have. BPE stops merging once every word of its
    # corpus is one token, so a small corpus gives fewer; the model's vocabulary
    # (text_config.vocab_size) is always exactly what the tokenizer has.
    vocab_size: int = 1024
    # Train the tokenizer on the first stage's training split too (plus the base word list),
    # so a user's words are tokens rather than byte pieces.
    tokenizer_from_data: bool = True
    max_positions: int = 2048
    # A pretrained tiny tower (written by `dragonfly pretrain-vision`) in the hub's vision-only
    # CLIP layout; None keeps the random tower (fast tests).
    vision_from: str | None = None
