"""Shared, session-built inputs for the evaluator tests: a saved fresh tiny model and a
few synthetic benchmark samples (nothing is trained)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dragonfly.data.synth import SynthConfig, write


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dragonfly.build import build_tiny

    model, processor = build_tiny(seed=0)
    out = tmp_path_factory.mktemp("model")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data root, samples.jsonl): 2 test images x 4 tasks = 8 samples, small images."""
    root = tmp_path_factory.mktemp("data")
    cfg = SynthConfig(n_train=0, n_validation=0, n_test=2, sizes=((256, 192), (192, 256)))
    return root, write(cfg, root)


@pytest.fixture
def no_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    from dragonfly.metrics.judge import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL

    for name in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY):
        monkeypatch.delenv(name, raising=False)
