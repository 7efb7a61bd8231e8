"""The Dragonfly configuration: the vision and text sub-configs and the zoom layout, with
every count derived from them (tiles kept, tokens per tile, image sequence length) in one
place. Apart from the model so that transformers' ``AutoConfig`` can register it while its
Auto model classes are still loading (``dragonfly.model.registration``)."""

from __future__ import annotations

from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.models.auto.configuration_auto import AutoConfig

from dragonfly.errors import CheckpointError
from dragonfly.model.processing import TilingSpec
from dragonfly.model.specs import Layout
from dragonfly.model.zoom import ORDERS, STRATEGIES

PROJECTOR_TYPES = ("linear", "mlp2x_gelu")
# Vision towers whose sequence starts with a CLS token (SigLIP has none).
CLS_TOWERS = ("clip_vision_model",)
_LAYOUT = Layout()


def released_layout_error(where: str) -> CheckpointError:
    """The released code's checkpoints also say ``model_type: dragonfly``; loading one as ours
    would leave every tensor at a fresh init, so it is refused with the way to convert it."""
    return CheckpointError(  # one message, no hint: a transformers caller sees only the message
        f"{where} holds a checkpoint of the released Dragonfly code (image_encoder, vision_embed_tokens), "
        "not this project's layout; convert it once: "
        "`dragonfly convert-released SRC DST --vision CLIP_FOLDER` (docs/released.md)"
    )


class DragonflyConfig(PreTrainedConfig):
    """Configuration of :class:`DragonflyForConditionalGeneration`.

    ``high_grids=None`` means the paper's high grids; ``[]`` means no high resolution
    (Baselines 1–3, with ``strategy="none"``). ``strategy="none"`` keeps every tile of the
    chosen resolutions.
    """

    model_type = "dragonfly"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 128256
    # The layout keys, with the defaults of the typed Layout (one definition).
    medium_grids: list | None = None
    high_grids: list | None = None
    select_k: int = _LAYOUT.select_k
    strategy: str = _LAYOUT.strategy
    select_order: str = _LAYOUT.select_order
    projector_type: str = _LAYOUT.projector_type
    vision_feature_layer: int = _LAYOUT.vision_feature_layer
    keep_cls: bool = _LAYOUT.keep_cls
    resize_mode: str = _LAYOUT.resize_mode
    region_rule: str = _LAYOUT.region_rule
    recompute_kept_tiles: bool = True
    # None: a learned separator after each tile (projector.separator); a token id: that
    # token's embedding from the LLM's table (the released sequence, docs/released.md).
    separator_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if "image_encoder" in kwargs:  # the released code's config: same model_type, other layout
            raise released_layout_error("this folder")
        super().__post_init__(**kwargs)
        self.medium_grids = [list(g) for g in (self.medium_grids or _LAYOUT.medium_grids)]
        self.high_grids = [list(g) for g in (_LAYOUT.high_grids if self.high_grids is None else self.high_grids)]
        self.validate_layout()

    def validate_layout(self) -> None:
        """Raise a ``ValueError`` naming the offending key when the layout cannot work."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.select_order not in ORDERS:
            raise ValueError(f"select_order must be one of {ORDERS}, got {self.select_order!r}")
        if self.projector_type not in PROJECTOR_TYPES:
            raise ValueError(f"projector_type must be one of {PROJECTOR_TYPES}, got {self.projector_type!r}")
        tiling = self.tiling  # validates grids and resize_mode
        if self.strategy != "none":
            if tiling.num_high == 0:
                raise ValueError(f"strategy={self.strategy!r} needs high_grids; use strategy='none' without them")
            if not 0 < self.select_k <= tiling.region_size:
                raise ValueError(
                    f"select_k must be in 1..{tiling.region_size} (high tiles per region), got {self.select_k}"
                )
        vocab = self.text_config.vocab_size
        if self.separator_token_id is not None and not 0 <= self.separator_token_id < vocab:
            raise ValueError(
                f"separator_token_id {self.separator_token_id} is outside the LLM's vocabulary (0..{vocab - 1})"
            )
        patch = self.vision_config.patch_size
        if self.tile_size % patch:
            raise ValueError(f"vision image_size {self.tile_size} is not a multiple of patch_size {patch}")

    @property
    def tile_size(self) -> int:
        return self.vision_config.image_size

    @property
    def tiling(self) -> TilingSpec:
        return TilingSpec(
            tile_size=self.tile_size,
            medium_grids=tuple(tuple(g) for g in self.medium_grids),
            high_grids=tuple(tuple(g) for g in self.high_grids),
            resize_mode=self.resize_mode,
            region_rule=self.region_rule,
        )

    @property
    def has_cls(self) -> bool:
        return self.vision_config.model_type in CLS_TOWERS

    @property
    def tokens_per_tile(self) -> int:
        """Visual tokens one tile contributes (patches, plus CLS when kept)."""
        return (self.tile_size // self.vision_config.patch_size) ** 2 + int(self.keep_cls and self.has_cls)

    @property
    def num_kept_high(self) -> int:
        tiling = self.tiling
        return tiling.num_high if self.strategy == "none" else tiling.num_medium * self.select_k

    @property
    def num_encoded_tiles(self) -> int:
        return self.tiling.num_tiles

    @property
    def num_kept_tiles(self) -> int:
        return 1 + self.tiling.num_medium + self.num_kept_high

    @property
    def image_seq_length(self) -> int:
        """Positions one image takes in the LLM sequence: tiles × (tokens + separator)."""
        return self.num_kept_tiles * (self.tokens_per_tile + 1)


AutoConfig.register("dragonfly", DragonflyConfig, exist_ok=True)
