from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dragonfly.data.config import default_data_config
from dragonfly.data.mixture import apply_weight, build_mixture, cap_per_image, deduplicate
from dragonfly.data.schema import Sample, user_assistant
from dragonfly.data.synth import write


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    for cfg in default_data_config().synth:
        write(replace(cfg, n_train=24, n_validation=6, n_test=6), root)
    return root


def arrow_digests(dataset_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(dataset_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dataset_dir.rglob("*.arrow"))
    }


def test_same_seed_is_byte_identical_other_seed_reorders(synth_root: Path, tmp_path: Path) -> None:
    from datasets import load_from_disk

    tiny = default_data_config().mixture("tiny")
    a = build_mixture(tiny, synth_root, tmp_path / "a")
    b = build_mixture(tiny, synth_root, tmp_path / "b")
    c = build_mixture(replace(tiny, seed=1), synth_root, tmp_path / "c")
    assert arrow_digests(a.dataset_dir) == arrow_digests(b.dataset_dir)
    assert set(arrow_digests(a.dataset_dir)) == {
        f"{s}/data-00000-of-00001.arrow" for s in ("train", "validation", "test")
    }
    ids_a = load_from_disk(str(a.dataset_dir))["train"]["id"]
    ids_c = load_from_disk(str(c.dataset_dir))["train"]["id"]
    assert ids_a != ids_c and sorted(ids_a) == sorted(ids_c)
    assert a.stats["per_split"] == {"test": 48, "train": 192, "validation": 48}
    assert a.stats["per_task"] == {"caption": 72, "mcq": 72, "vqa_closed": 72, "vqa_open": 72}
    row = load_from_disk(str(a.dataset_dir))["train"][0]
    assert row["messages"][0]["role"] == "user" and row["messages"][0]["content"].startswith("<image>\n")
    assert (synth_root / row["images"][0]).is_file()
    assert not row["origin"].startswith("/")


def sample(i: int, image: str, question: str) -> Sample:
    return Sample(f"s:{i}", "s", "train", "vqa_open", (image,), user_assistant(question, "a", 1), ("a",))


def test_dedup_cap_and_weight() -> None:
    rows = [sample(0, "x.jpg", "Q?"), sample(1, "x.jpg", "  q? "), sample(2, "y.jpg", "Q?")]
    kept, dropped = deduplicate(rows)
    assert [s.id for s in kept] == ["s:0", "s:2"] and [s.id for s in dropped] == ["s:1"]

    svit = [sample(i, "same.jpg", f"question {i}") for i in range(20)]
    kept, over = cap_per_image(svit, 8, np.random.default_rng(0))
    assert len(kept) == 8 and len(over) == 12
    again, _ = cap_per_image(svit, 8, np.random.default_rng(0))
    assert [s.id for s in kept] == [s.id for s in again]

    ten = [sample(i, f"{i}.jpg", "q") for i in range(10)]
    assert len(apply_weight(ten, 0.5, None, np.random.default_rng(0))) == 5
    doubled = apply_weight(ten, 2.0, 15, np.random.default_rng(0))
    assert len(doubled) == 15 and len({s.id for s in doubled}) == 15
    assert sum(s.id.endswith("#rep1") for s in doubled) == 5
