"""Bad input lands in quarantine with the right reason; good rows survive; threshold fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dragonfly.data.mixture import MixtureConfig, SourceSpec, build_mixture
from dragonfly.data.quarantine import RejectedFractionError, read_quarantine
from dragonfly.data.schema import Sample, user_assistant, write_samples_jsonl


def conv(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture
def bad_root(tmp_path: Path, files) -> Path:
    imgs = tmp_path / "src/images"
    good = [{"id": f"g{i}", "image": f"g{i}.jpg", "conversations": conv("<image>\nWhat colour?", "blue")}
            for i in range(12)]  # fmt: skip
    for i in range(12):
        files.image(imgs / f"g{i}.jpg", color=(i * 20, 0, 0))
    files.image(imgs / "full.jpg", size=(64, 64))
    data = (imgs / "full.jpg").read_bytes()
    (imgs / "truncated.jpg").write_bytes(data[: len(data) // 2])
    files.image(imgs / "tiny.png", size=(1, 1))
    bad = [
        {"id": "missing", "image": "nope.jpg", "conversations": conv("<image>\nQ?", "A")},
        {"id": "truncated", "image": "truncated.jpg", "conversations": conv("<image>\nQ?", "A")},
        {"id": "onepixel", "image": "tiny.png", "conversations": conv("<image>\nQ?", "A")},
        {
            "id": "empty",
            "image": "g1.jpg",
            "conversations": conv("<image>\nAnother question?", "  "),
        },
        {"id": "noplaceholder", "image": "g2.jpg", "conversations": conv("Describe it.", "A cat.")},
        {"id": "g3", "image": "g4.jpg", "conversations": conv("<image>\nA duplicate id?", "yes")},
    ]
    files.json(tmp_path / "src/llava.json", good + bad)
    native = [
        Sample(
            "n:ok",
            "n",
            "train",
            "vqa_open",
            ("src/images/g5.jpg",),
            user_assistant("Q?", "A", 1),
            ("A",),
        ),
        Sample(
            "n:split",
            "n",
            "dev",
            "vqa_open",
            ("src/images/g6.jpg",),
            user_assistant("Q?", "A", 1),
            ("A",),
        ),
    ]
    write_samples_jsonl(native, tmp_path / "src/native.jsonl")
    return tmp_path


def mixture(threshold: float) -> MixtureConfig:
    return MixtureConfig(
        name="bad",
        sources=(
            SourceSpec("llava", "llava", "src/llava.json", options={"image_folder": "src/images", "split": "train"}),
            SourceSpec("n", "dragonfly_jsonl", "src/native.jsonl"),
        ),
        reject_threshold=threshold,
    )


def test_each_bad_row_has_its_reason(bad_root: Path) -> None:
    result = build_mixture(mixture(0.5), bad_root, bad_root / "out")
    got = {r.id: r.reason for r in read_quarantine(result.quarantine_path)}
    assert got == {
        "llava:missing": "missing_image",
        "llava:truncated": "unreadable_image",
        "llava:onepixel": "image_too_small",
        "llava:empty": "empty_answer",
        "llava:noplaceholder": "missing_image_placeholder",
        "llava:g3": "duplicate_id",
        "n:split": "bad_split",
    }
    rows = {r.id: r for r in read_quarantine(result.quarantine_path)}
    assert rows["llava:truncated"].file.endswith("src/llava.json") and rows["llava:truncated"].row == 13
    assert "truncated.jpg" in rows["llava:truncated"].detail
    from datasets import load_from_disk

    ids = set(load_from_disk(str(result.dataset_dir))["train"]["id"])
    assert ids == {f"llava:g{i}" for i in range(12)} | {"n:ok"}
    stats = json.loads(result.stats_path.read_text())
    assert stats["rejected"] == 7 and stats["rows_seen"] == 20 and stats["samples"] == 13
    assert stats["rejected_by_reason"]["missing_image"] == 1


def test_threshold_fails_with_clear_message(bad_root: Path) -> None:
    with pytest.raises(
        RejectedFractionError,
        match=r"7 of 20 rows rejected \(35\.0%\), above the reject_threshold of 10\.0%; see .*quarantine\.jsonl",
    ):
        build_mixture(mixture(0.10), bad_root, bad_root / "out")
    # The quarantine is written before failing, so the bad rows can be inspected.
    assert len(read_quarantine(bad_root / "out/quarantine.jsonl")) == 7
    assert not (bad_root / "out/dataset").exists()
