"""`dvc repro` for real (git + DVC, no mocks, offline): a copy of this checkout's files in a
fresh git repository, CI-sized in params.yaml, run as a user types the commands.

One pass, each step building on the one before: the whole pipeline; an evaluation setting
reruns the evaluations only; a med3 key stales med3 and eval-med only; `dvc push`, then a
`git clone` + `dvc pull` has the data and the models with nothing to run; `dvc exp run -S`
retrains med3 and `dvc exp show` lists it; `dvc dag` is the flow's chain; the ablation
pipeline runs only when asked for.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's `dragonfly` and `dvc`
PIPELINE = ["prepare", "pretrain-vision", "general1", "general2", "eval-general", "med1", "med2", "med3", "eval-med"]
TRAINED = ["general1", "general2", "med1", "med2", "med3"]
ABLATE = "ablation/dvc.yaml:ablate"
UP_TO_DATE = "Data and pipelines are up to date."


def _checkout_files() -> list[str]:
    """The files a user's clone has: tracked and new, not ignored, as they are in the working
    tree now (it holds uncommitted work, so not `git clone`)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [path for path in listed.split("\0") if path and (REPO / path).is_file()]


def _yaml() -> YAML:
    yaml = YAML()  # round trip: comments and anchors stay, as in a hand edit
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _edit_params(root: Path, edit) -> None:
    yaml = _yaml()
    tree = yaml.load(root / "params.yaml")
    edit(tree)
    yaml.dump(tree, root / "params.yaml")


def _ci_budget(tree) -> None:
    """Seconds, not hours: a few images, a two-step tower, one optimiser step per stage."""
    for synth in tree["data"]["synth"]:
        # No caption task: its METEOR scorer starts a JVM (~5 s) in every evaluation.
        synth.update(n_train=8, n_validation=2, n_test=2, tasks=["vqa_closed", "vqa_open", "mcq"])
    tiny = tree["profiles"]["tiny"]
    tiny["vision_pretrain"].update(steps=2, warmup_steps=1, images=8, batch_tiles=32)
    tiny["stages"]["defaults"].update(global_batch=2, micro_batch=2, save_every=1)
    for stage in TRAINED:
        tiny["stages"][stage]["max_steps"] = 1
    for name in [n for n in tree["ablations"] if n != "dragonfly_least_similar"]:
        del tree["ablations"][name]  # one variant: the ablation pipeline, not the paper's tables


class Shell:
    """Runs commands in one directory with the test's environment, as a user types them."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.cwd, self.env = cwd, env

    def __call__(self, *args: str, stdout: bool = False, timeout: int = 400) -> str:
        """The command's output (``stdout``: its standard output only); it must exit 0."""
        done = subprocess.run(list(args), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{' '.join(args)} (in {self.cwd}) exited {done.returncode}:\n{output[-6000:]}"
        return done.stdout if stdout else output

    def ran(self, *args: str) -> list[str]:
        """The stages a `dvc repro` / `dvc exp run` ran, in order."""
        return re.findall(r"Running stage '([^']+)'", self(*args))

    def status(self, *targets: str) -> dict:
        return json.loads(self("dvc", "status", "--json", *targets, stdout=True))


def _environment(tmp: Path, code: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DVC_", "DRAGONFLY_", "MLFLOW_", "PREFECT_", "GIT_", "PYTHONPATH"))
    }
    return {
        **env,
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DRAGONFLY_TRACKING": "0",
        "DVC_SITE_CACHE_DIR": str(tmp / "dvc-site"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",  # `dragonfly ablate` logs by default
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        # The checkout's own code runs, as after `pip install -e .` in it: what DVC hashes as
        # the stages' deps is what the steps fingerprint.
        "PYTHONPATH": str(code),
        "COLUMNS": "200",
        "PREFECT_HOME": str(tmp / "prefect"),  # the flow's ephemeral server keeps its database here
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Prefect's default (20 s) is short for a loaded 2-core machine; one run timed out.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }


def _commit(sh: Shell, message: str) -> None:
    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", message)


def _mtimes(root: Path) -> dict[str, int]:
    return {s: (root / f"runs/tiny/{s}/final/model.safetensors").stat().st_mtime_ns for s in TRAINED}


@pytest.mark.slow
def test_dvc_repro_push_pull_and_experiments(tmp_path):
    began = time.perf_counter()
    repo = tmp_path / "dragonfly"
    for path in _checkout_files():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, repo / path)
    assert (repo / "dvc.yaml").is_file() and (repo / ".dvc/config").is_file()  # `.dvc/` is committed: no `dvc init`
    _edit_params(repo, _ci_budget)
    # The evaluation settings live in params.yaml's `dvc.eval` (flags of `dragonfly eval`); short answers for CI.
    _edit_params(repo, lambda tree: tree["dvc"]["eval"].update({"max-new-tokens": 2}))
    sh = Shell(repo, _environment(tmp_path, repo))
    sh("git", "init", "-q", "-b", "main")
    sh("git", "config", "user.name", "Dragonfly CI")
    sh("git", "config", "user.email", "ci@dragonfly.invalid")
    _commit(sh, "dragonfly, CI-sized")

    # The whole pipeline, in the flow's order; the ablation pipeline is not part of it.
    assert sh.ran("dvc", "repro") == PIPELINE
    for path in [
        "data/mixtures/tiny_general/dataset/dataset_dict.json",
        "data/synth/biomedical/samples.jsonl",
        "runs/tiny/vision-backbone/config.json",
        *[f"runs/tiny/{s}/final/model.safetensors" for s in TRAINED],
        *[f"runs/tiny/{s}/loss.csv" for s in TRAINED],
    ]:
        assert (repo / path).is_file(), path
    assert not (repo / "ablation/ablation.md").exists()
    assert sh.status("dvc.yaml") == {}
    assert set(sh.status()) == {ABLATE}  # never run yet
    general = json.loads((repo / "eval/general/summary.json").read_text())["synth_general"]
    assert general["n"] == 6  # 2 test images × 3 tasks
    losses = list(csv.DictReader(io.StringIO((repo / "runs/tiny/med3/loss.csv").read_text())))
    assert [row["step"] for row in losses] == ["1"]
    # Only when asked for; it reuses the pipeline's data and tower.
    assert sh.ran("dvc", "repro", "ablation/dvc.yaml") == [ABLATE]
    assert (repo / "ablation/ablation.md").is_file() and sh.status() == {}
    _commit(sh, "dvc repro")  # dvc.lock, and the cache: false metrics and plots
    tracked = sh("git", "ls-files").split()
    assert {"dvc.lock", "ablation/dvc.lock", "eval/general/summary.json", "runs/tiny/med3/loss.csv"} <= set(tracked)
    assert not [p for p in tracked if p.startswith(("data/", "runs/tiny/med3/final", "eval/general/synth_general"))]

    # An evaluation setting: both evaluations are stale and rerun; nothing is trained.
    trained = _mtimes(repo)
    _edit_params(repo, lambda tree: tree["dvc"]["eval"].update(limit=4))
    assert set(sh.status()) == {"eval-general", "eval-med"}
    assert sh.ran("dvc", "repro") == ["eval-general", "eval-med"]
    assert _mtimes(repo) == trained
    assert json.loads((repo / "eval/general/summary.json").read_text())["synth_general"]["n"] == 4
    _commit(sh, "evaluate the first 4 samples")

    # A med3 key stales med3, nothing upstream (eval-med reruns once med3's model changes).
    _edit_params(repo, lambda tree: tree["profiles"]["tiny"]["stages"]["med3"].update(lr=1.0e-4))
    assert set(sh.status()) == {"med3"}
    sh("git", "checkout", "--", "params.yaml")
    assert sh.status() == {}

    # Push to the default remote; a second clone pulls data and models and has nothing to run.
    sh("dvc", "push")
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone))
    other = Shell(clone, _environment(tmp_path, clone))
    # The default remote is dvc-remote/ in each working tree; this clone reads the first one's.
    other("dvc", "remote", "modify", "--local", "local", "url", str(repo / "dvc-remote"))
    other("dvc", "pull")
    for path in [
        "data/mixtures/tiny_med_bench/dataset/dataset_dict.json",
        "runs/tiny/vision-backbone/config.json",
        *[f"runs/tiny/{s}/final/model.safetensors" for s in TRAINED],
        "runs/tiny/med3/fingerprint.json",
        "eval/med/synth_biomedical/predictions.jsonl",
        "ablation/ablation.md",
    ]:
        assert (clone / path).is_file(), path
    assert other.status() == {}
    assert UP_TO_DATE in other("dvc", "status")
    assert other.ran("dvc", "repro") == []
    # The steps' own rule agrees, run as the Prefect flow in the clone: every stage is up to
    # date on the pulled record, and no model is written again.
    pulled = _mtimes(clone)
    flowed = other(sys.executable, "flows/dragonfly_pipeline.py", "--no-register-models", timeout=600)
    for stage in TRAINED:
        assert f"stage {stage}: up to date" in flowed, (stage, flowed[-3000:])
    assert _mtimes(clone) == pulled

    # An experiment on a stage key retrains that stage and its evaluation only.
    assert sh.ran("dvc", "exp", "run", "-n", "med3-lr", "-S", "profiles.tiny.stages.med3.lr=2e-4") == [
        "med3",
        "eval-med",
    ]
    shown = list(csv.DictReader(io.StringIO(sh("dvc", "exp", "show", "--csv", stdout=True))))
    lr = next(column for column in shown[0] if column.endswith("profiles.tiny.stages.med3.lr"))
    assert [float(row[lr]) for row in shown if row["Experiment"] == "med3-lr"] == [2e-4], shown
    assert _mtimes(repo)["med2"] == trained["med2"] and _mtimes(repo)["med3"] != trained["med3"]

    # The chain of the flow, with the ablation beside it.
    dot = sh("dvc", "dag", "--dot")
    edges = set(re.findall(r'"([^"]+)" -> "([^"]+)"', dot))
    assert {
        ("prepare", "general1"),
        ("pretrain-vision", "general1"),
        ("general1", "general2"),
        ("general2", "eval-general"),
        ("general2", "med1"),
        ("med1", "med2"),
        ("med2", "med3"),
        ("med3", "eval-med"),
        ("pretrain-vision", ABLATE),
        ("prepare", ABLATE),
    } <= edges
    assert not any(target == ABLATE for source, target in edges if source in TRAINED)
    print(f"test_dvc: {time.perf_counter() - began:.0f} s")
