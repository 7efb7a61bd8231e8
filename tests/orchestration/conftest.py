"""A small workspace for the flow: the repository's params.yaml with a CI-sized budget,
flows/ and prefect.yaml beside it, as a user's checkout would have them."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUDGET = [
    "stages.general1.max_steps=2",
    "stages.general2.max_steps=2",
    "stages.general1.save_every=1",
    "stages.general2.save_every=1",
]


def make_flow_workspace(root: Path) -> Path:
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    for synth in tree["data"]["synth"]:
        synth.update(n_train=8, n_validation=2, n_test=2)
    tree["profiles"]["tiny"]["model"]["tiny"]["vision_from"] = None  # no tower pretraining: seconds, not minutes
    # A metric the tests order through --eval-limit (test_flow_runs), not by training.
    tree["registry"]["general"]["metric"] = "synth_general.n"
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "prefect.yaml", root / "prefect.yaml")
    return root


def flow_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRAGONFLY_"))}
    return {
        **env,
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Prefect's default (20 s) is short for a loaded 2-core machine; one run timed out.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "HF_HUB_OFFLINE": "1",
        "PWD": str(root),
        "COLUMNS": "200",
    }


def enter_workspace(root: Path, monkeypatch) -> Path:
    """Run this test inside the workspace ``root``, in its environment, tracking off; returns ``root``."""
    for key, value in flow_env(root).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DRAGONFLY_TRACKING", "0")
    monkeypatch.chdir(root)
    return root


def flow_module(root: Path):
    """The workspace's copy of flows/dragonfly_pipeline.py, imported, to run in this process."""
    spec = importlib.util.spec_from_file_location("dragonfly_pipeline_flow", root / "flows/dragonfly_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_flow(root: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "flows/dragonfly_pipeline.py", *args]
    return subprocess.run(cmd, cwd=root, env=flow_env(root), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def flow_workspace(tmp_path_factory) -> Path:
    return make_flow_workspace(tmp_path_factory.mktemp("flow"))


@pytest.fixture(scope="session")
def flow():
    """``flow(root, *args)`` runs flows/dragonfly_pipeline.py in ``root``; ``flow.budget`` are
    the --set overrides of a CI-sized run."""
    run_flow.budget = BUDGET
    run_flow.env = flow_env
    return run_flow


@pytest.fixture(scope="session")
def kit():
    """The helpers of this folder for tests that lay out their own workspace."""
    from types import SimpleNamespace

    return SimpleNamespace(
        budget=BUDGET, env=flow_env, workspace=make_flow_workspace, enter=enter_workspace, flows=flow_module
    )
