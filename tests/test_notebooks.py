"""notebooks/ run top to bottom, offline, on the tiny profile, exactly as stored.

The project they read is made here the way a user makes one: `dragonfly prepare` and a
short `dragonfly ablate` of two variants in a folder with its own params.yaml (so MLflow's
store is that folder's mlflow.db). Each notebook then runs in a fresh kernel (nbclient +
ipykernel) with DRAGONFLY_PROJECT pointing there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
DRAGONFLY = Path(sys.executable).parent / "dragonfly"
VARIANTS = ("baseline1", "dragonfly_region")


def test_the_three_notebooks_are_stored_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_zoom_selection.ipynb",
        "02_data.ipynb",
        "03_training_and_ablations.ipynb",
    ]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} holds outputs"


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRAGONFLY_", "MLFLOW_TRACKING_URI"))}
    return {**env, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("notebook-project")
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    for synth in tree["data"]["synth"]:
        synth.update(n_train=8, n_validation=2, n_test=4)
    tree["profiles"]["tiny"]["model"]["tiny"]["vision_from"] = None  # seconds, not minutes
    (root / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    for argv in (
        ["prepare"],
        ["ablate", *(a for v in VARIANTS for a in ("--variant", v)), "--limit", "8", "--no-progress"]
        + ["max_steps=3", "global_batch=2", "micro_batch=2", "save_every=100", "log_every=1"],
    ):
        done = subprocess.run([str(DRAGONFLY), *argv], cwd=root, env=_env(root), capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (root / "mlflow.db").is_file()
    return root


def _run(name: str, project: Path, **env) -> tuple[nbformat.NotebookNode, float]:
    book = nbformat.read(REPO / "notebooks" / name, as_version=4)
    client = NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    start = time.perf_counter()
    client.execute(env={**_env(project), "DRAGONFLY_PROJECT": str(project), **env})
    return book, time.perf_counter() - start


def _outputs(book, kind: str) -> list:
    found = []
    for cell in book.cells:
        for out in cell.get("outputs", []):
            if kind == "png" and "image/png" in out.get("data", {}):
                found.append(out["data"]["image/png"])
            elif kind == "text":
                found.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return found


def test_zoom_selection_notebook(project):
    model = project / "ablation" / "dragonfly_region" / "general2" / "final"
    book, seconds = _run("01_zoom_selection.ipynb", project, DRAGONFLY_MODEL=str(model))
    text = "\n".join(_outputs(book, "text"))
    assert "fundus (skimage retina): 1411×1411" in text and "chest X-ray (pydicom-data RG1_UNCI)" in text
    assert len(_outputs(book, "png")) == 4  # fresh: detail + rules; trained: rules + detail
    assert seconds < 60, seconds


def test_data_notebook(project):
    book, seconds = _run("02_data.ipynb", project)
    text = "\n".join(_outputs(book, "text"))
    assert "built mixtures:" in text and "synth_general" in text
    assert len(_outputs(book, "png")) == 2  # composition, samples
    assert seconds < 60, seconds


def test_training_and_ablations_notebook(project):
    book, seconds = _run("03_training_and_ablations.ipynb", project)
    text = "\n".join(_outputs(book, "text"))
    assert all(v in text for v in VARIANTS) and "majority answer" in text
    assert len(_outputs(book, "png")) == 2  # loss curves, ablation plot
    assert seconds < 60, seconds
