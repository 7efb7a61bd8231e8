"""Caps and filters shape the training split only; train/eval overlap fails the build;
the stats columns add up per source (issue #12, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from dragonfly.data.mixture import MixtureConfig, SourceSpec, SplitOverlapError, build_mixture
from dragonfly.data.schema import Sample, user_assistant, write_samples_jsonl

COLUMNS = ("rejected", "filtered", "duplicates", "over_image_cap")


def _rows(split: str, image: str, n: int, prefix: str = "q", tag: str = "") -> list[Sample]:
    return [
        Sample(f"s:{split}{tag}{i}", "s", split, "vqa_open", (image,), user_assistant(f"{prefix} {i}?", "a", 1), ("a",))
        for i in range(n)
    ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 32), "gray").save(tmp_path / name)
    return tmp_path


def _mixture(root: Path, samples: list[Sample], **extra) -> MixtureConfig:
    write_samples_jsonl(samples, root / "s.jsonl")
    source = SourceSpec("s", "dragonfly_jsonl", "s.jsonl", **extra.pop("source", {}))
    return MixtureConfig("m", (source,), max_per_image=8, **extra)


def test_image_cap_and_weight_leave_the_test_split_as_published(root: Path) -> None:
    # 12 training and 12 test questions on one image each; cap 8 per image, weight 0.5.
    rows = _rows("train", "a.png", 12) + _rows("test", "b.png", 12, prefix="t")
    stats = build_mixture(_mixture(root, rows, source={"weight": 0.5}), root, root / "out").stats
    assert stats["per_split"] == {"test": 12, "train": 4}  # train: 12 -> cap 8 -> weight 0.5 -> 4
    src = stats["per_source"]["s"]
    assert src["over_image_cap"] == 4 and src["weighting"] == -4 and src["per_split"]["test"] == 12


def test_filter_eval_splits_opts_in(root: Path) -> None:
    rows = _rows("train", "a.png", 12) + _rows("test", "b.png", 12, prefix="t")
    stats = build_mixture(_mixture(root, rows, filter_eval_splits=True), root, root / "out").stats
    assert stats["per_split"] == {"test": 8, "train": 8}


def test_stats_columns_add_up_per_source(root: Path) -> None:
    rows = _rows("train", "a.png", 12) + _rows("train", "a.png", 2, tag="dup")  # 2 duplicate pairs
    rows += [Sample("s:gone", "s", "train", "vqa_open", ("missing.png",), user_assistant("x?", "a", 1), ("a",))]
    cfg = _mixture(root, rows, source={"weight": 2.0}, reject_threshold=0.5)
    stats = build_mixture(cfg, root, root / "out").stats
    src = stats["per_source"]["s"]
    assert src["rejected"] == 1 and src["duplicates"] == 2 and src["over_image_cap"] == 4 and src["weighting"] == 8
    assert src["rows"] - sum(src[c] for c in COLUMNS) + src["weighting"] == src["samples"] == stats["samples"]


def test_train_test_overlap_fails_the_build_naming_the_pairs(root: Path) -> None:
    leaked = _rows("train", "a.png", 3) + _rows("test", "a.png", 2)  # same image, same questions
    with pytest.raises(SplitOverlapError, match=r"2 test sample\(s\).*s:train0 \(train\) = s:test0 \(test\)"):
        build_mixture(_mixture(root, leaked), root, root / "out")
    assert json.loads((root / "out" / "manifest.json").read_text())["status"] == "failed"
    assert json.loads((root / "out" / "stats.json").read_text())["split_overlap"] == 2
    assert not (root / "out" / "dataset").exists()
    # An intended overlap builds when the mixture says so.
    ok = build_mixture(_mixture(root, leaked, allow_split_overlap=True), root, root / "out")
    assert ok.stats["per_split"] == {"test": 2, "train": 3}


def test_build_cli_prints_a_total_row_that_adds_up(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from dragonfly.cli.data import app

    rows = _rows("train", "a.png", 12) + _rows("test", "b.png", 3, prefix="t")
    write_samples_jsonl(rows, root / "s.jsonl")
    params = {
        "data": {
            "root": ".",
            "out_dir": "built",
            "mixtures": {
                "m": {"max_per_image": 8, "sources": [{"name": "s", "format": "dragonfly_jsonl", "path": "s.jsonl"}]}
            },
        }
    }
    (root / "params.yaml").write_text(json.dumps(params))
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["build", "--mixture", "m"], terminal_width=200)
    assert result.exit_code == 0, result.output
    total = next(line for line in result.output.splitlines() if "total" in line)
    # rows, rejected, filtered, duplicates, over_image_cap, weighting, samples
    assert [int(v) for v in total.replace("│", " ").split()[1:]] == [15, 0, 0, 0, 4, 0, 11]


def test_a_user_mixture_that_states_no_cap_keeps_every_row(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only `sources:` in params.yaml: 12 questions on one image all reach the dataset; the
    same mixture with `max_per_image: 8` says what the cap removed and which key controls it."""
    from typer.testing import CliRunner

    from dragonfly.cli.data import app

    write_samples_jsonl(_rows("train", "a.png", 12), root / "s.jsonl")
    mixture = {"sources": [{"name": "s", "format": "dragonfly_jsonl", "path": "s.jsonl"}]}
    monkeypatch.chdir(root)

    def build(**extra) -> tuple[dict, str]:
        params = {"data": {"root": ".", "out_dir": "built", "mixtures": {"mine": {**mixture, **extra}}}}
        (root / "params.yaml").write_text(json.dumps(params))
        result = CliRunner().invoke(app, ["build", "--mixture", "mine"], terminal_width=200)
        assert result.exit_code == 0, result.output
        return json.loads((root / "built/mine/stats.json").read_text()), result.output

    stats, printed = build()
    assert stats["samples"] == 12 and stats["per_source"]["s"]["over_image_cap"] == 0
    assert "over cap:" not in printed
    stats, printed = build(max_per_image=8)
    assert stats["samples"] == 8
    assert "over cap: 4 training sample(s) left out as more than 8 per image" in printed
    assert "data.mixtures.mine.max_per_image; null keeps every row" in printed
