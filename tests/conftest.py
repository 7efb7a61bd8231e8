"""Shared fixtures. Everything runs offline on CPU."""

import json
import os

# Each pytest-xdist worker, and every process it starts, gets its share of the cores. torch's
# OpenMP pool spin-waits when the cores are oversubscribed: with two workers of two threads each
# on CI's two cores, a 9-second training run took 145 s. Set before torch is imported, and set
# in a worker, not defaulted: the controller imports this file first (as one process, so it
# defaults to every core) and its workers inherit that value. Defaulting it there gave three
# workers two threads each, and the suite spent a third of its CPU time spin-waiting.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_threads = str(max(1, len(os.sched_getaffinity(0)) // _workers))
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = _threads
else:
    os.environ.setdefault("OMP_NUM_THREADS", _threads)

for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # 20 s timed out on a loaded 2-core machine
    "DVC_NO_ANALYTICS": "1",
}.items():
    os.environ.setdefault(key, value)

import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

# Every MLflow write in the tests goes to a throwaway sqlite store, never ./mlflow.db, one per
# process: set, not defaulted, because xdist workers inherit the controller's environment, and
# two workers creating one store at once fail MLflow's schema migration.
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tempfile.mkdtemp(prefix='dragonfly-mlflow-')}/mlflow.db"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case a plugin imported torch before us


@pytest.fixture(scope="session")
def tiny():
    """A tiny random-init model and its processor (built once per session)."""
    from dragonfly.build import build_tiny

    model, processor = build_tiny(seed=0)
    return model.eval(), processor


@pytest.fixture(scope="session")
def saved_tiny(tiny, tmp_path_factory):
    """The tiny model and processor saved with save_pretrained, as a user would save them."""
    model, processor = tiny
    out = tmp_path_factory.mktemp("saved") / "final"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def retina() -> Image.Image:
    """A real fundus photograph shipped with scikit-image (1411×1411)."""
    from skimage import data

    return Image.fromarray(data.retina())


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def _random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def random_image():
    """Factory: random_image(width, height, seed=0) → a noise RGB image."""
    return _random_image


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pipeline_flow():
    """flows/dragonfly_pipeline.py, imported by path (flows/ is a folder of scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dragonfly_pipeline_flow_file", REPO / "flows/dragonfly_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def sky_env():
    """The python of .venv-sky, made by `make sky` as a user makes it; skipped only when PyPI
    cannot be reached."""
    from filelock import FileLock

    # One `make sky` at a time: parallel test workers would build .venv-sky over each other.
    with FileLock(REPO / ".venv-sky.lock"):
        made = subprocess.run(["make", "sky"], cwd=REPO, capture_output=True, text=True, timeout=900)
    if made.returncode != 0:
        probe = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                "/tmp/sky-probe",
                "skypilot==0.14.1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if probe.returncode != 0:
            pytest.skip(f"pip cannot fetch skypilot==0.14.1 from PyPI here: {probe.stderr.strip()[-300:]}")
        pytest.fail(f"make sky failed although PyPI answers:\n{made.stdout[-2000:]}\n{made.stderr[-3000:]}")
    return REPO / ".venv-sky" / "bin" / "python"


# The two tiers (`make test-fast`: unit; `make test`: everything). A test is an integration
# test when it runs the real commands, servers or trainings: it lives in a folder of them, takes
# a fixture that starts them, or its module says so with `pytestmark = pytest.mark.integration`.
INTEGRATION_FOLDERS = ("orchestration", "train")
INTEGRATION_FIXTURES = {"run_cli", "workspace", "new_workspace", "sky_env", "flow", "kit", "flow_workspace"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in INTEGRATION_FOLDERS or INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    _longest_files_first(items)


# pytest-xdist (--dist loadfile, --no-loadscope-reorder) hands out whole files in collection
# order, so a long file collected last runs alone at the end: test_dvc alone took the last
# three minutes of a 13.5-minute run. Longest first keeps every worker busy to the end.
# durations.json: seconds per file in a full `make test` run (files under 15 s are left out
# and count as 10); a stale entry only changes the order, never what runs.
DURATIONS = json.loads((Path(__file__).parent / "durations.json").read_text())


def _longest_files_first(items) -> None:
    def seconds(item) -> int:
        return DURATIONS.get(Path(str(item.fspath)).relative_to(REPO).as_posix(), 10)

    items.sort(key=seconds, reverse=True)  # stable: a file's tests keep their order
