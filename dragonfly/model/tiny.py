"""The tiny profile: a few-layer CLIP-style encoder and Llama built from configs, and a
byte-level BPE tokenizer trained offline with Llama-3's special tokens.

Nothing here downloads. Every code path of the paper profile runs (three resolutions,
selection, separators, chat template); only the widths, depths and tile size shrink.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPVisionConfig, LlamaConfig, PreTrainedTokenizerFast

from dragonfly.model.constants import IMAGE_TOKEN
from dragonfly.model.specs import TinySpec

# Llama-3's chat special tokens, plus the image placeholder.
BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
HEADER_START, HEADER_END = "<|start_header_id|>", "<|end_header_id|>"
SPECIAL_TOKENS = [BOS, EOS, HEADER_START, HEADER_END, EOT, IMAGE_TOKEN]

# Words the tiny tokenizer should see whole: chat roles, the synthetic benchmark's
# vocabulary and common instruction phrasing. Anything else falls back to bytes.
_CORPUS_WORDS = [
    "system",
    "user",
    "assistant",
    "you",
    "are",
    "a",
    "helpful",
    "vision",
    "language",
    "assistant",
    "describe",
    "the",
    "image",
    "what",
    "is",
    "shown",
    "in",
    "this",
    "picture",
    "is",
    "there",
    "a",
    "an",
    "in",
    "on",
    "at",
    "of",
    "with",
    "and",
    "or",
    "not",
    "yes",
    "no",
    "which",
    "how",
    "many",
    "shape",
    "color",
    "colour",
    "count",
    "small",
    "large",
    "tiny",
    "detail",
    "region",
    "corner",
    "top",
    "bottom",
    "left",
    "right",
    "center",
    "circle",
    "square",
    "triangle",
    "cross",
    "star",
    "diamond",
    "dot",
    "dots",
    "ring",
    "line",
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "pink",
    "white",
    "black",
    "gray",
    "brown",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "zero",
    "answer",
    "question",
    "caption",
    "the",
    "photo",
    "shows",
    "contains",
    "appears",
    "looks",
    "like",
    "contains",
    "visible",
    "tissue",
    "glyph",
    "glyphs",
    "cell",
    "cells",
    "nucleus",
    "nuclei",
    "stained",
    "slide",
    "pathology",
    "radiology",
    "x-ray",
    "chest",
    "lung",
    "heart",
    "scan",
    "mri",
    "ct",
    "finding",
    "findings",
    "impression",
    "normal",
    "abnormal",
    "lesion",
    "mass",
    "opacity",
    "effusion",
    "fracture",
    "tumor",
    "option",
    "options",
    "choose",
    "letter",
    "correct",
    "a",
    "b",
    "c",
    "d",
    "e",
    "please",
    "briefly",
    "single",
    "word",
    "phrase",
    "sentence",
]

_CAPITALISED = ["there", "is", "are", "what", "which", "describe", "answer", "how", "the", "a", "an", "options"]


def build_tokenizer(
    vocab_size: int = 1024, image_token: bool = True, corpus: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE offline, deterministically, and wrap it for transformers.

    ``image_token=False`` gives a plain Llama-3-style LLM tokenizer (as a hub LLM ships).
    ``corpus``: more text to learn from (a training split's messages, one per item), after
    the base word list; the most frequent words become tokens within ``vocab_size``.
    """
    specials = SPECIAL_TOKENS if image_token else [t for t in SPECIAL_TOKENS if t != IMAGE_TOKEN]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Each word twice: after a space (mid-sentence) and bare, because an answer starts right
    # after the header's "\n\n" with no space; without the bare forms "circle" and "cross"
    # both begin with the byte "c" and a one-word answer is spread over three tokens.
    words = _CORPUS_WORDS + [w.capitalize() for w in _CAPITALISED]
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)] + words
    # The base list four times, so its words win merges over a user corpus's rare words.
    # Each text bare and after a space, as the base words (an answer is a text's first word).
    extra = [t for text in corpus if (t := text.replace(IMAGE_TOKEN, " ").strip())]
    tok.train_from_iterator(lines * 4 + extra + [" " + t for t in extra], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=EOS,
        additional_special_tokens=[HEADER_START, HEADER_END] + ([IMAGE_TOKEN] if image_token else []),
        padding_side="left",
        model_max_length=4096,
    )


def vision_config(spec: TinySpec) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=4 * spec.vision_hidden,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.tile_size,
        patch_size=spec.patch_size,
    )


def text_config(spec: TinySpec, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.text_hidden,
        intermediate_size=4 * spec.text_hidden,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        num_key_value_heads=spec.text_heads,
        max_position_embeddings=spec.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
