"""A build's manifest names its content: same config, other samples is a new digest (so a
stage trained on the old build is not up to date); the same sources give the same bytes;
the data root is stored relative to the manifest, so a clone or another working directory
reads the same file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dragonfly.data.manifest import data_root
from dragonfly.data.mixture import MixtureConfig, SourceSpec, build_mixture
from dragonfly.data.synth import SynthConfig, write


def _build(root: Path, samples: Path, out: Path) -> dict:
    cfg = MixtureConfig("m", (SourceSpec("synth_general", "dragonfly_jsonl", str(samples.relative_to(root))),))
    build_mixture(cfg, root, out)
    return json.loads((out / "manifest.json").read_text())


def test_manifest_content_follows_the_samples_not_only_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = Path("data")
    samples = write(SynthConfig(n_train=3, n_validation=0, n_test=1, sizes=((256, 192),)), root)
    first = _build(root, samples, Path("mixtures/a"))
    again = _build(root, samples, Path("mixtures/b"))
    assert first["content"] == again["content"] and first["fingerprint"] == again["fingerprint"]
    assert first["data_root"] == os.path.join("..", "..", "data")
    assert data_root(Path("mixtures/a/manifest.json")) == root.resolve()

    # One sample fewer, same mixture config: a new content digest.
    lines = samples.read_text().splitlines()
    samples.write_text("\n".join(lines[:-1]) + "\n")
    fewer = _build(root, samples, Path("mixtures/a"))
    assert fewer["fingerprint"] == first["fingerprint"] and fewer["content"] != first["content"]


def test_a_scene_too_small_for_its_glyphs_is_an_error_not_a_hang(tmp_path):
    import pytest

    from dragonfly.errors import DragonflyError

    with pytest.raises(DragonflyError, match=r"do not fit apart in a 96×64 image"):
        write(SynthConfig(n_train=1, n_validation=0, n_test=0, sizes=((96, 64),), min_glyphs=3), tmp_path)
