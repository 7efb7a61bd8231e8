"""Dragonfly's image processor and processor (tokenizer + images + chat template + labels).

* :class:`DragonflyImageProcessor` turns images (PIL, paths, DICOM) into the tile tensors
  of :mod:`dragonfly.model.processing`, batched.
* :class:`DragonflyProcessor` renders conversations with a Llama-3 chat template,
  expands every ``<image>`` placeholder into ``image_seq_length`` image tokens at the id
  level, pads (left by default, for generation) and builds training labels that are
  ``-100`` everywhere except the assistant replies. ``image_position="first"`` moves the
  image blocks to the front of the sequence, before the BOS, as the released Dragonfly
  processor builds it (``docs/released.md``); the newline that follows a placeholder in
  the text (``"<image>\n"``) goes with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageOps
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor

from dragonfly.model.constants import CLIP_MEAN, CLIP_STD, IGNORE_INDEX, IMAGE_TOKEN, PAPER_HIGH, PAPER_MEDIUM
from dragonfly.model.images import load_image
from dragonfly.model.processing import TilingSpec, tile_image

IMAGE_POSITIONS = ("inline", "first")

# Llama-3 layout; `{% generation %}` marks what the assistant says (and its <|eot_id|>),
# which is what `return_assistant_tokens_mask` — and so the labels — pick up.
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' -}}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] | trim -%}"
    "{%- else -%}{%- set ns = namespace(text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set ns.text = ns.text + '<image>\n' -%}"
    "{%- else -%}{%- set ns.text = ns.text + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set text = ns.text | trim -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{- text + '<|eot_id|>' -}}{% endgeneration %}"
    "{%- else -%}{{- text + '<|eot_id|>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}"
)


def _as_image(image) -> Image.Image:
    if isinstance(image, str | Path):
        return load_image(image)
    if isinstance(image, Image.Image):
        return ImageOps.exif_transpose(image)
    raise TypeError(f"expected a PIL image or a path, got {type(image).__name__}")


class DragonflyImageProcessor(BaseImageProcessor):
    """Images → low/medium/high tiles, normalised, with grid shapes and region maps."""

    model_input_names = ["pixel_values", "image_regions"]

    def __init__(
        self,
        tile_size: int = 224,
        medium_grids: Sequence = PAPER_MEDIUM,
        high_grids: Sequence = PAPER_HIGH,
        resize_mode: str = "stretch",
        region_rule: str = "spatial",
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        reuse_resized: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reuse_resized = reuse_resized
        self.tile_size = tile_size
        self.medium_grids = [list(g) for g in medium_grids]
        self.high_grids = [list(g) for g in high_grids]
        self.resize_mode = resize_mode
        self.region_rule = region_rule
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        _ = self.spec  # validate now, not at the first image

    @property
    def spec(self) -> TilingSpec:
        return TilingSpec(
            tile_size=self.tile_size,
            medium_grids=tuple(tuple(g) for g in self.medium_grids),
            high_grids=tuple(tuple(g) for g in self.high_grids),
            resize_mode=self.resize_mode,
            region_rule=self.region_rule,
            image_mean=tuple(self.image_mean),
            image_std=tuple(self.image_std),
            reuse_resized=self.reuse_resized,
        )

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """One image or a list of images (PIL or paths) → a batch of tiles.

        Returns ``pixel_values [I, T, 3, R, R]``, ``image_regions [I, Nm, s]``,
        ``image_grids [I, 2, 2]`` (medium and high ``(columns, rows)``) and
        ``image_sizes [I, 2]`` (``(width, height)``).
        """
        if isinstance(images, Image.Image | str | Path):
            images = [images]
        spec = self.spec
        pixel_values = torch.empty(len(images), spec.num_tiles, 3, spec.tile_size, spec.tile_size)
        tiled = [tile_image(_as_image(image), spec, out=pixel_values[i]) for i, image in enumerate(images)]
        data = {
            "pixel_values": pixel_values,
            "image_regions": torch.stack([t["regions"] for t in tiled])
            if tiled
            else torch.zeros(0, spec.num_medium, spec.region_size, dtype=torch.long),
            "image_grids": torch.tensor([[t["medium_grid"], t["high_grid"]] for t in tiled]).view(-1, 2, 2),
            "image_sizes": torch.tensor([t["image_size"] for t in tiled]).view(-1, 2),
        }
        return BatchFeature(data, tensor_type=return_tensors)


class DragonflyProcessor(ProcessorMixin):
    """Tokenizer + :class:`DragonflyImageProcessor` + Llama-3 chat template."""

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        image_seq_length: int | None = None,
        image_token: str = IMAGE_TOKEN,
        image_position: str = "inline",
        **kwargs,
    ):
        # The model's count (DragonflyConfig.image_seq_length), saved with the processor;
        # no default, so a processor cannot disagree with its model.
        if image_seq_length is None:
            raise ValueError("image_seq_length is required: pass DragonflyConfig.image_seq_length")
        if image_position not in IMAGE_POSITIONS:
            raise ValueError(f"image_position must be one of {IMAGE_POSITIONS}, got {image_position!r}")
        self.image_seq_length = image_seq_length
        self.image_token = image_token
        self.image_position = image_position
        super().__init__(image_processor, tokenizer, chat_template=chat_template or LLAMA3_CHAT_TEMPLATE)
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {image_token!r} token; add it as a special token first")
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        self._newline_id = newline[0] if len(newline) == 1 else None

    # -- text + images → model inputs -----------------------------------------------------
    def expand_image_tokens(self, ids: list[int], labels: list[int] | None = None):
        """Replace each image placeholder id with ``image_seq_length`` copies (labels: -100);
        with ``image_position="first"`` those blocks go, in order, before everything else."""
        first = self.image_position == "first"
        image_ids, image_labels, rest_ids, rest_labels = [], [], [], []
        for i, tok in enumerate(ids):
            if tok == self.image_token_id:
                to_ids, to_labels = (image_ids, image_labels) if first else (rest_ids, rest_labels)
                to_ids.extend([tok] * self.image_seq_length)
                to_labels.extend([IGNORE_INDEX] * self.image_seq_length)
            elif first and tok == self._newline_id and i and ids[i - 1] == self.image_token_id:
                continue  # the placeholder's own line break leaves with it
            else:
                rest_ids.append(tok)
                rest_labels.append(labels[i] if labels is not None else tok)
        out_ids, out_labels = image_ids + rest_ids, image_labels + rest_labels
        return out_ids, (out_labels if labels is not None else None)

    def text_ids(self, text: str) -> list[int]:
        """One rendered prompt → the input ids :meth:`__call__` makes of it (each image
        placeholder expanded), without tiling any image."""
        return self.expand_image_tokens(self.tokenizer(text, add_special_tokens=False)["input_ids"])[0]

    def _check_image_count(self, ids_per_text: list[list[int]], num_images: int) -> None:
        placeholders = sum(ids.count(self.image_token_id) for ids in ids_per_text)
        if placeholders != num_images:
            raise ValueError(
                f"text holds {placeholders} {self.image_token} placeholder(s) but {num_images} image(s) were given"
            )

    def __call__(
        self,
        text=None,
        images=None,
        padding: bool = True,
        padding_side: str = "left",
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Rendered prompt(s) with ``<image>`` placeholders + images → padded model inputs.

        Images are given flat, in the order their placeholders appear across the texts.
        Padding is on the left unless asked otherwise, whatever the tokenizer's own side:
        setting ``tokenizer.padding_side`` does not survive ``save_pretrained``, so a hub
        tokenizer reloads right-padding, and a right-padded prompt generates after its pads.
        """
        if text is None:
            raise ValueError("DragonflyProcessor needs text (use the image processor for images alone)")
        texts = [text] if isinstance(text, str) else list(text)
        if images is not None and isinstance(images, Image.Image | str | Path):
            images = [images]
        # Accept the per-text nesting other processors use ([[img], [img, img]]) as well as flat.
        images = [im for item in (images or []) for im in (item if isinstance(item, list | tuple) else [item])]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        self._check_image_count(ids, len(images))
        expanded = [self.expand_image_tokens(seq)[0] for seq in ids]
        batch = self.tokenizer.pad(
            {"input_ids": expanded}, padding=padding, padding_side=padding_side, return_tensors=return_tensors
        )
        data = dict(batch)
        if images:
            data.update(self.image_processor(images, return_tensors=return_tensors))
        return BatchFeature(data, tensor_type=return_tensors)

    def build_prompt(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Messages → the prompt string, rendered with the stored chat template."""
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def sequence_length(self, messages: list[dict], num_images: int) -> int:
        """Positions the conversation takes untruncated, images expanded (no image is read)."""
        ids = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=True, return_dict=True
        )["input_ids"]
        return len(ids) + num_images * (self.image_seq_length - 1)

    def encode_conversation(self, messages: list[dict], images=(), max_length: int | None = None) -> dict:
        """One training conversation → ``input_ids``, ``labels`` (assistant replies only) and image tensors.

        ``max_length`` truncates from the end but never cuts into an image's tokens.
        """
        enc = self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.chat_template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids = list(enc["input_ids"])
        labels = [tok if keep else IGNORE_INDEX for tok, keep in zip(ids, enc["assistant_masks"], strict=True)]
        images = [images] if isinstance(images, Image.Image | str | Path) else list(images)
        self._check_image_count([ids], len(images))
        ids, labels = self.expand_image_tokens(ids, labels)
        if max_length is not None and len(ids) > max_length:
            last_image = max((i for i, t in enumerate(ids) if t == self.image_token_id), default=-1)
            if last_image >= max_length:
                raise ValueError(f"max_length={max_length} would cut an image ({last_image + 1} positions needed)")
            ids, labels = ids[:max_length], labels[:max_length]
        out = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        if images:
            out.update(self.image_processor(images, return_tensors="pt"))
        return out

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)
