"""The tiny tokenizer learns the user's words from the first stage's training split
(issue #12, item 5), and the model's vocabulary is exactly what the tokenizer has."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from dragonfly.config import load_profile
from dragonfly.data.mixture import MixtureConfig, SourceSpec, build_mixture
from dragonfly.data.schema import Sample, user_assistant, write_samples_jsonl
from dragonfly.train.config import load_stage
from dragonfly.train.parts import start_model

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
WORDS = ("turquoise", "heptagon", "marmalade", "zeppelin")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mine")
    rows = []
    for i in range(40):
        Image.new("RGB", (32, 32), "gray").save(root / f"{i}.png")
        word = WORDS[i % len(WORDS)]
        rows.append(
            Sample(f"m:{i}", "mine", "train", "vqa_open", (f"{i}.png",), user_assistant("Which?", word, 1), (word,))
        )
    write_samples_jsonl(rows, root / "mine.jsonl")
    cfg = MixtureConfig("mine", (SourceSpec("mine", "dragonfly_jsonl", "mine.jsonl"),))
    return build_mixture(cfg, root, root / "built").dataset_dir


def _tokenizer(dataset: Path, *overrides: str):
    profile = load_profile("tiny", PARAMS, ["model.tiny.vision_from=null", *overrides])
    model, processor = start_model(profile, load_stage(profile, "general1"), dataset)
    return model, processor.tokenizer


def test_the_users_words_are_single_tokens(dataset: Path) -> None:
    model, tok = _tokenizer(dataset)
    for word in WORDS:  # bare (an answer's first word) and after a space
        assert len(tok.tokenize(word)) == 1 and len(tok.tokenize(f" {word}")) == 1, word
    assert model.config.text_config.vocab_size == len(tok) <= 1024
    # The base list is still whole: the synthetic benchmark's words stay tokens.
    assert len(tok.tokenize(" describe")) == 1


def test_switched_off_the_words_fall_back_to_byte_pieces(dataset: Path) -> None:
    model, tok = _tokenizer(dataset, "model.tiny.tokenizer_from_data=false")
    assert len(tok.tokenize(" turquoise")) > 1
    assert model.config.text_config.vocab_size == len(tok)
