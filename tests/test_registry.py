"""The model registry on a real sqlite MLflow store: @candidate always on the newest version,
@champion only when the metric beats it, and `models:/...` usable by a fresh process and by
the `dragonfly` command. No mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from dragonfly.config import ConfigError
from dragonfly.errors import DragonflyError
from dragonfly.registry import (
    RegistryTrack,
    decide,
    load_registry,
    metrics_from_summary,
    register,
    resolve_model,
)

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "dragonfly"
METRIC = "synth_general.vqa_open_exact_match"


def track(name: str = "dragonfly", min_gain: float = 0.0) -> RegistryTrack:
    return RegistryTrack(model=name, metric=METRIC, min_gain=min_gain)


@pytest.fixture(scope="module")
def model_dir(saved_tiny) -> Path:
    return saved_tiny


@pytest.fixture(scope="module")
def store(model_dir, tmp_path_factory) -> Path:
    """A store with one registered version of "dragonfly" (the champion); the directory is
    also the working directory of the processes that use it (mlflow's ./mlruns lives there)."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        register(model_dir, {METRIC: 0.5}, track(), uri=uri_of(root))
    return root


@pytest.fixture(scope="module")
def retina_png(retina, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "retina.png"
    retina.save(path)
    return path


def uri_of(root: Path) -> str:
    return f"sqlite:///{root}/mlflow.db"


def run(args: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri_of(root), "HF_HUB_OFFLINE": "1"}
    env.pop("DRAGONFLY_DEBUG", None)
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def aliases(client: MlflowClient, name: str) -> dict[str, int]:
    return {a: int(v) for a, v in client.get_registered_model(name).aliases.items()}


def test_champion_moves_only_when_the_metric_beats_it(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = uri_of(tmp_path)
    client = MlflowClient(tracking_uri=uri)
    lineage = {"git.commit": "abc123", "data.fingerprint": "f00d"}

    first = register(model_dir, {METRIC: 0.50, "n": 32.0}, track(), tags=lineage, uri=uri)
    assert (first.version, first.champion_version, first.champion_moved) == (1, 1, True)

    second = register(model_dir, {METRIC: 0.40}, track(), uri=uri)
    assert (second.version, second.champion_version, second.champion_moved) == (2, 1, False)
    assert aliases(client, "dragonfly") == {"champion": 1, "candidate": 2}
    assert "0.4" in second.reason and "0.5" in second.reason, second.reason

    third = register(model_dir, {METRIC: 0.60}, track(), uri=uri)
    assert (third.version, third.champion_version, third.champion_moved) == (3, 3, True)
    assert aliases(client, "dragonfly") == {"champion": 3, "candidate": 3}
    assert "0.6" in third.reason and "0.5" in third.reason, third.reason

    # Every metric, the caller's lineage and the directory are on the version.
    tags = client.get_model_version("dragonfly", "1").tags
    assert float(tags[f"metric.{METRIC}"]) == 0.5 and float(tags["metric.n"]) == 32.0
    assert tags["git.commit"] == "abc123" and tags["data.fingerprint"] == "f00d"
    assert tags["dragonfly.model_dir"] == str(model_dir.resolve())
    # Registration runs are finished and no fluent run is left open.
    import mlflow

    assert mlflow.active_run() is None
    runs = client.search_runs([client.get_experiment_by_name("dragonfly-registry").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}

    # Into a caller's run: each version keeps its own artifacts; the run stays the caller's.
    caller = client.create_run(runs[0].info.experiment_id).info.run_id
    a = register(model_dir, {METRIC: 0.1}, track("dragonfly-a"), run_id=caller, uri=uri)
    b = register(model_dir, {METRIC: 0.1}, track("dragonfly-b"), run_id=caller, uri=uri)
    sources = {client.get_model_version(r.name, str(r.version)).source for r in (a, b)}
    assert len(sources) == 2 and client.get_run(caller).info.status == "RUNNING"

    # With min_gain 0.2, 0.60 does not beat 0.50 by enough.
    register(model_dir, {METRIC: 0.50}, track("dragonfly-strict", 0.2), uri=uri)
    strict = register(model_dir, {METRIC: 0.60}, track("dragonfly-strict", 0.2), uri=uri)
    assert (strict.champion_version, strict.champion_moved) == (1, False), strict
    assert aliases(client, "dragonfly-strict") == {"champion": 1, "candidate": 2}


def test_minimize_direction_and_registry_config():
    """`decide` in the other direction (no store needed), and the params.yaml section."""

    class Champion:  # the two fields `decide` reads from an mlflow ModelVersion
        version = "4"
        tags = {f"metric.{METRIC}": "0.30"}

    lower = RegistryTrack("m", METRIC, direction="minimize")
    assert decide(0.20, 5, Champion, lower)[0] is True
    assert decide(0.35, 5, Champion, lower)[0] is False

    summary = {"synth_general": {"accuracy": 0.5, "n": 32.0}, "mmvet": {"skipped": "no judge"}}
    assert metrics_from_summary(summary) == {"synth_general.accuracy": 0.5, "synth_general.n": 32.0}

    tracks = load_registry(REPO / "params.yaml")
    assert {"general", "med"} <= set(tracks)
    assert all("." in t.metric for t in tracks.values())


def test_registry_section_typo_is_named(tmp_path):
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["registry"]["general"]["metirc"] = tree["registry"]["general"].pop("metric")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"registry\.general\.metirc.*did you mean 'metric'"):
        load_registry(tmp_path / "params.yaml")


def test_champion_loads_in_a_fresh_process(store, retina_png):
    """A batch takes image bytes; a path only with the operator's image_root (model config)."""
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        f"path = {str(retina_png)!r}\n"
        "model = mlflow.pyfunc.load_model('models:/dragonfly@champion')\n"
        "frame = pd.DataFrame({'image': [open(path, 'rb').read()], 'question': ['Any lesion?']})\n"
        "print('ANSWERS', json.dumps(model.predict(frame)))\n"
        "try:\n"
        "    model.predict(pd.DataFrame({'image': [path], 'question': ['Any lesion?']}))\n"
        "except Exception as err:\n"
        "    print('REFUSED', err)\n"
        "rooted = mlflow.pyfunc.load_model('models:/dragonfly@champion', model_config={'image_root': sys.argv[1]})\n"
        "frame = pd.DataFrame({'image': [path], 'question': ['Any lesion?']})\n"
        "print('ROOTED', json.dumps(rooted.predict(frame)))\n"
    )
    done = run([sys.executable, "-c", script, str(retina_png.parent)], store)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {x.split(" ", 1)[0]: x.split(" ", 1)[1] for x in done.stdout.splitlines() if " " in x}
    answers = json.loads(lines["ANSWERS"])
    assert len(answers) == 1 and isinstance(answers[0], str), answers
    assert "no image_root is configured" in lines["REFUSED"], lines
    assert json.loads(lines["ROOTED"]) == answers


def test_predict_command_takes_a_registry_uri(store, retina_png):
    ask = ["--image", str(retina_png), "--question", "Any lesion?", "--json"]
    done = run([str(BIN), "predict", "--model", "models:/dragonfly@champion", *ask], store)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(record["answer"], str) and record["question"] == "Any lesion?"
    cached = store / ".dragonfly-models" / "dragonfly" / "1" / "model_dir"
    assert (cached / "config.json").is_file()  # downloaded into the working directory

    bad = run([str(BIN), "predict", "--model", "models:/dragonfly@nope", *ask], store)
    assert bad.returncode == 1, (bad.stdout[-2000:], bad.stderr[-2000:])
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), bad.stderr
    assert "@nope" in lines[0] and "@champion (version 1)" in lines[0], lines[0]


def test_unknown_model_names_the_registered_ones(store):
    with pytest.raises(DragonflyError, match=r"'dragonfy' not found.*did you mean 'dragonfly'"):
        resolve_model("models:/dragonfy@champion", uri=uri_of(store))
    assert resolve_model("runs/tiny/general2/final") == Path("runs/tiny/general2/final")


def test_missing_metric_is_named(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = uri_of(tmp_path)
    metrics = {"synth_general.accuracy": 0.5, "synth_general.n": 32.0}
    with pytest.raises(DragonflyError) as err:
        register(model_dir, metrics, track(), uri=uri)
    message = str(err.value)
    assert METRIC in message and "synth_general.accuracy" in message, message
    assert MlflowClient(tracking_uri=uri).search_registered_models() == []  # nothing logged


RACE = """
import sys, time
from pathlib import Path
from mlflow import MlflowClient
from dragonfly.registry import _ensure_registered
uri, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
client.search_registered_models()
ready.touch()
while not go.exists():
    time.sleep(0.001)
for i in range(20):
    _ensure_registered(client, f"race-{i}")
"""


def test_concurrent_registrations_into_a_fresh_store_both_succeed(tmp_path):
    """Two processes register the same 20 new models at the same moment (look-then-create
    lost this race for about 1 name in 10)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()  # migrate once
    go, ready = tmp_path / "go", [tmp_path / f"ready-{i}" for i in range(2)]
    racers = [
        subprocess.Popen([sys.executable, "-c", RACE, uri, str(r), str(go)], stderr=subprocess.PIPE, text=True)
        for r in ready
    ]
    deadline = time.time() + 120
    while not all(r.exists() for r in ready):
        assert all(p.poll() is None for p in racers) and time.time() < deadline
        time.sleep(0.01)
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in racers]
    assert [p.returncode for p in racers] == [0, 0], errors
    names = {m.name for m in MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()}
    assert names == {f"race-{i}" for i in range(20)}
