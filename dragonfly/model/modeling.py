"""The Dragonfly model: shared vision encoder → projector → zoom-in selection → LLM.

Data flows one way (paper Fig. 1):

1. ``pixel_values`` ``[I, T, 3, R, R]`` hold, per image, the low tile, the Nm medium tiles
   and the Nh high tiles (see :mod:`dragonfly.model.processing`).
2. Every tile goes through the same vision tower; features come from
   ``vision_feature_layer`` (CLS kept or dropped) and go through the projector.
3. Summaries (mean projected token) of medium and high tiles drive the selection
   (:func:`dragonfly.model.zoom.select_tiles`); ``Nm * k`` high tiles are kept.
4. The image sequence is low, medium (row-major), kept high (row-major), each tile's
   tokens followed by one separator: a learned embedding, or, with
   ``separator_token_id`` set, that token's LLM embedding (the released checkpoints use
   ``<|reserved_special_token_1|>``). It replaces the image placeholder tokens in the
   text embeddings, and the LLM does the rest.

All counts (tiles kept, tokens per tile, image sequence length) come from
:class:`DragonflyConfig` properties, in one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from dragonfly.model.configuration import DragonflyConfig
from dragonfly.model.zoom import select_tiles, summarize, tile_scores

__all__ = ["DragonflyConfig", "DragonflyForConditionalGeneration", "DragonflyOutput", "DragonflyProjector"]


@dataclass
class DragonflyOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    selected_tiles: torch.Tensor | None = None


class DragonflyProjector(nn.Module):
    """Maps vision features to the LLM width; owns the learned tile separator, unless the
    separator is a token of the LLM (``separator_token_id``)."""

    def __init__(self, config: DragonflyConfig):
        super().__init__()
        vision_dim, text_dim = config.vision_config.hidden_size, config.text_config.hidden_size
        if config.projector_type == "linear":
            self.proj = nn.Linear(vision_dim, text_dim)
        else:
            self.proj = nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))
        learned = config.separator_token_id is None
        self.separator = nn.Parameter(torch.zeros(text_dim)) if learned else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)


class DragonflyPreTrainedModel(PreTrainedModel):
    config: DragonflyConfig
    config_class = DragonflyConfig
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _skip_keys_device_placement = ["past_key_values"]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, DragonflyProjector) and module.separator is not None:
            nn.init.normal_(module.separator, std=1 / math.sqrt(module.separator.numel()))


class DragonflyForConditionalGeneration(DragonflyPreTrainedModel, GenerationMixin):
    """Vision tower (any ``AutoModel`` vision encoder) + projector + causal LLM."""

    def __init__(
        self, config: DragonflyConfig, vision_tower: nn.Module | None = None, language_model: nn.Module | None = None
    ):
        super().__init__(config)
        self.vision_tower = vision_tower or AutoModel.from_config(config.vision_config)
        self.projector = DragonflyProjector(config)
        self.language_model = language_model or AutoModelForCausalLM.from_config(config.text_config)
        self.post_init()

    # -- embeddings plumbing (resize_token_embeddings, generate) -------------------------
    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.language_model.set_output_embeddings(value)

    # -- vision path ------------------------------------------------------------------------
    def encode_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """``[n, 3, R, R]`` tiles → ``[n, tokens_per_tile, D_text]`` projected tokens."""
        param = next(self.vision_tower.parameters())
        out = self.vision_tower(pixel_values=tiles.to(param.dtype), output_hidden_states=True)
        features = out.hidden_states[self.config.vision_feature_layer]
        if self.config.has_cls and not self.config.keep_cls:
            features = features[:, 1:]
        return self.projector(features)

    def tile_separator(self) -> torch.Tensor:
        """``[D_text]``: what follows each tile's tokens."""
        if self.projector.separator is not None:
            return self.projector.separator
        embed = self.get_input_embeddings()
        return embed(torch.tensor(self.config.separator_token_id, device=embed.weight.device))

    def _image_path_trains(self) -> bool:
        parts = (self.vision_tower, self.projector)
        return torch.is_grad_enabled() and any(p.requires_grad for part in parts for p in part.parameters())

    def _unused_image_path(self, like: torch.Tensor) -> torch.Tensor:
        """Zero times the image path on one blank tile: a scalar 0 in ``like``'s dtype.

        A micro-batch without images (text-only samples, as the paper's SFT mixtures hold)
        would leave the tower, projector and separator out of the graph: no gradient path at
        all when only the projector trains, and with several processes a parameter one rank
        reduces and another does not (DDP's unused-parameter error; on DeepSpeed or gloo a
        collective mismatch, on NCCL a hang). This keeps every rank's graph the same for one
        tile's cost; it adds exactly 0 to the loss and 0 to every gradient."""
        tile = torch.zeros(1, 3, self.config.tile_size, self.config.tile_size, device=like.device)
        touched = self.encode_tiles(tile).sum() + self.tile_separator().sum()
        return touched.to(like.dtype) * 0.0

    def _vision_trainable(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.vision_tower.parameters())

    @torch.no_grad()
    def zoom_scores(self, pixel_values: torch.Tensor, image_regions: torch.Tensor):
        """What the zoom saw, for pictures: (``[I, Nm * k]`` kept high tiles, ``[I, Nh]`` each
        high tile's score, :func:`~dragonfly.model.zoom.tile_scores`); ``(None, None)``
        without a selection."""
        cfg = self.config
        if cfg.tiling.num_high == 0 or cfg.strategy == "none":
            return None, None
        num_base = 1 + cfg.tiling.num_medium
        tiles = self.encode_tiles(pixel_values.flatten(0, 1)).unflatten(0, pixel_values.shape[:2])  # [I, T, P, D]
        mid, high = summarize(tiles[:, 1:num_base]), summarize(tiles[:, num_base:])  # [I, Nm, D], [I, Nh, D]
        regions = image_regions.to(tiles.device)
        kept = select_tiles(mid, high, regions, cfg.select_k, cfg.strategy, cfg.select_order)
        return kept, tile_scores(mid, high, regions, cfg.strategy)

    def get_image_features(self, pixel_values: torch.Tensor, image_regions: torch.Tensor | None = None):
        """Tiles of ``I`` images → (``[I, image_seq_length, D]`` embeddings, kept high indices).

        When the vision tower trains, high tiles are scored without gradient and only the
        kept ones are encoded again with it, so dropped tiles hold no activations for
        backward (``recompute_kept_tiles``); the values are the same either way.
        """
        cfg = self.config
        num_images, num_tiles = pixel_values.shape[:2]
        if num_tiles != cfg.num_encoded_tiles:
            raise ValueError(
                f"pixel_values carry {num_tiles} tiles per image, the config expects {cfg.num_encoded_tiles}"
            )
        num_base = 1 + cfg.tiling.num_medium
        base = self.encode_tiles(pixel_values[:, :num_base].flatten(0, 1)).unflatten(0, (num_images, num_base))
        kept = None
        if cfg.tiling.num_high == 0:
            tiles = base
        else:
            high_pixels = pixel_values[:, num_base:]
            recompute = cfg.strategy != "none" and cfg.recompute_kept_tiles and self._vision_trainable()
            with torch.set_grad_enabled(torch.is_grad_enabled() and not recompute):
                high = self.encode_tiles(high_pixels.flatten(0, 1)).unflatten(0, (num_images, cfg.tiling.num_high))
            if cfg.strategy == "none":
                tiles = torch.cat([base, high], dim=1)
            else:
                if image_regions is None:
                    raise ValueError("image_regions are required for zoom-in selection")
                kept = select_tiles(
                    summarize(base[:, 1:]),
                    summarize(high),
                    image_regions.to(base.device),
                    cfg.select_k,
                    cfg.strategy,
                    cfg.select_order,
                )
                if recompute:
                    picked = torch.gather(
                        high_pixels, 1, kept[:, :, None, None, None].expand(-1, -1, *high_pixels.shape[2:])
                    )
                    kept_tokens = self.encode_tiles(picked.flatten(0, 1)).unflatten(0, (num_images, kept.shape[1]))
                else:
                    kept_tokens = torch.gather(high, 1, kept[:, :, None, None].expand(-1, -1, *high.shape[2:]))
                tiles = torch.cat([base, kept_tokens], dim=1)
        separator = self.tile_separator().to(tiles.dtype).expand(num_images, tiles.shape[1], 1, -1)
        sequence = torch.cat([tiles, separator], dim=2).flatten(1, 2)
        return sequence, kept

    # -- full forward -----------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_regions: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        image_grids: torch.Tensor | None = None,  # informational: the tiles already encode
        image_sizes: torch.Tensor | None = None,  # the grid and size choices
        **kwargs,
    ) -> DragonflyOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        kept = None
        if inputs_embeds is None:
            image_mask = input_ids == self.config.image_token_id
            # The image token may lie outside a backbone's original vocabulary: never embed it.
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
            num_placeholders = int(image_mask.sum())
            if pixel_values is not None and pixel_values.numel():
                features, kept = self.get_image_features(pixel_values, image_regions)
                if num_placeholders != features.shape[0] * features.shape[1]:
                    raise ValueError(
                        f"image placeholder tokens ({num_placeholders}) do not match image features "
                        f"({features.shape[0]} images × {features.shape[1]} = {features.shape[0] * features.shape[1]}); "
                        "build inputs with DragonflyProcessor so each <image> expands to image_seq_length tokens"
                    )
                inputs_embeds = inputs_embeds.masked_scatter(
                    image_mask.unsqueeze(-1), features.to(inputs_embeds.dtype).reshape(-1, inputs_embeds.shape[-1])
                )
            elif num_placeholders and (past_key_values is None or past_key_values.get_seq_length() == 0):
                raise ValueError(f"input_ids contain {num_placeholders} image tokens but no pixel_values were given")
            elif self._image_path_trains():
                inputs_embeds = inputs_embeds + self._unused_image_path(inputs_embeds)
        out = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            **kwargs,
        )
        return DragonflyOutput(
            loss=out.loss,
            logits=out.logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            selected_tiles=kept,
        )


AutoModelForImageTextToText.register(DragonflyConfig, DragonflyForConditionalGeneration, exist_ok=True)
