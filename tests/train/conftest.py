"""Fixtures for the trainer tests: a small, real workspace (synthetic data + params.yaml)
and the real `dragonfly` command, optionally under torchrun (gloo, 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dragonfly.data.config import DataConfig
from dragonfly.data.mixture import build_mixture
from dragonfly.data.synth import SynthConfig, write

REPO = Path(__file__).resolve().parents[2]


def make_workspace(root: Path, n_train: int = 12) -> Path:
    """Synthetic general + biomedical data, two mixtures, and a params.yaml pointing at them."""
    data = root / "data"
    synth = [
        SynthConfig(variant="general", seed=0, n_train=n_train, n_validation=2, n_test=2),
        SynthConfig(variant="biomedical", seed=1, n_train=n_train, n_validation=2, n_test=2),
    ]
    for cfg in synth:
        write(cfg, data)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    mixtures = params["data"]["mixtures"]
    params["data"]["root"] = str(data)
    params["data"]["out_dir"] = str(data / "mixtures")
    params["profiles"]["tiny"]["runs_dir"] = str(root / "runs")
    params["profiles"]["tiny"]["model"]["tiny"]["vision_from"] = None  # random tower: fast; tested in test_backbone
    cfg = DataConfig.from_dict(params["data"])
    for name in ("tiny_general", "tiny_med", "tiny_med_bench"):
        build_mixture(cfg.mixture(name), data, data / "mixtures" / name)
    params["data"]["mixtures"] = {k: mixtures[k] for k in ("tiny_general", "tiny_med", "tiny_med_bench")}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def cli(*args: str, cwd: Path, env: dict | None = None, torchrun: int = 0, wait: bool = True, check: bool = True):
    """Run the real `dragonfly` command (optionally under torchrun with gloo on 127.0.0.1)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "DRAGONFLY_TRACKING": "0", **(env or {})}
    if torchrun:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={torchrun}",
            "--master_addr=127.0.0.1",
            f"--master_port={_free_port()}",
            "-m",
            "dragonfly.cli",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "dragonfly.cli", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    result = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 or not check, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """A directory holding data/, params.yaml (runs go to runs/)."""
    root = tmp_path_factory.mktemp("workspace")
    make_workspace(root)
    return root


@pytest.fixture(scope="session")
def run_cli():
    return cli


@pytest.fixture(scope="session")
def new_workspace():
    """``make_workspace`` for a test that needs a workspace of its own."""
    return make_workspace


@pytest.fixture(scope="session")
def free_port():
    return _free_port
