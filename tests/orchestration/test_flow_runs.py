"""The `dragonfly-pipeline` flow, run for real in Prefect's ephemeral mode: outputs, MLflow
runs, the registry, the one skip rule, and failing fast on a bad key."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

STAGES = ["--stage", "general1", "--stage", "general2"]


def _mtime(path):
    return path.stat().st_mtime_ns


def test_flow_trains_evaluates_registers_then_skips_what_is_unchanged(flow_workspace, flow):
    root = flow_workspace
    SETS = [a for item in flow.budget for a in ("--set", item)]
    first = flow(root, *STAGES, *SETS, "--eval-limit", "4")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    final = root / "runs/tiny/general2/final"
    summary = root / "eval/general/summary.json"
    assert (final / "config.json").is_file() and summary.is_file()
    assert "| general | synth_general |" in first.stdout and "@candidate" in first.stdout

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    versions = client.search_model_versions("name='dragonfly'")
    assert len(versions) == 1
    assert client.get_model_version_by_alias("dragonfly", "champion").version == versions[0].version
    runs = client.search_runs([client.get_experiment_by_name("dragonfly-tiny").experiment_id])
    parents = [r for r in runs if r.info.run_name == "pipeline"]
    stages = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert {"general1", "general2"} <= stages
    # the report's loss curves: a PNG beside the evaluation, its path on the console, and
    # report/{report.md,loss_curves.png} in the pipeline's MLflow run
    curves = root / "eval" / "loss_curves.png"
    assert curves.read_bytes()[:4] == b"\x89PNG" and "Training loss: `eval/loss_curves.png`" in first.stdout
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert logged == {"report/report.md", "report/loss_curves.png"}

    trained, evaluated = _mtime(final / "model.safetensors"), _mtime(summary)
    time.sleep(0.05)
    second = flow(root, *STAGES, *SETS, "--eval-limit", "4")
    assert second.returncode == 0, second.stderr[-3000:]
    assert _mtime(final / "model.safetensors") == trained and _mtime(summary) == evaluated
    assert "up to date" in second.stdout + second.stderr
    assert len(client.search_model_versions("name='dragonfly'")) == 1  # same model, same metrics: once

    # Two pipeline runs on the same data decide @champion. The registry metric here is
    # the number of samples scored (registry.general.metric: synth_general.n, set in
    # conftest), the one metric a test can order without training to a chosen accuracy;
    # the eval limit sets it. Changing that one evaluation parameter re-runs only
    # evaluation and registration.
    worse = flow(root, *STAGES, *SETS, "--eval-limit", "2")
    assert worse.returncode == 0, worse.stderr[-3000:]
    assert _mtime(final / "model.safetensors") == trained and _mtime(summary) != evaluated
    assert len(client.search_model_versions("name='dragonfly'")) == 2
    assert client.get_model_version_by_alias("dragonfly", "champion").version == versions[0].version
    assert "`@champion` is version 1" in worse.stdout, worse.stdout[-2000:]

    assert int(client.get_model_version_by_alias("dragonfly", "candidate").version) == 2
    # (a better metric moving @champion is the same `pipeline.register`, tested directly in
    # tests/test_registry.py; a fourth flow run here would cost ~30 s for no new path)

    # The champion loads in a fresh process through its models:/ URI and answers.
    import json
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    Image.new("RGB", (96, 64), (200, 30, 30)).save(root / "red.png")
    dragonfly = Path(sys.executable).parent / "dragonfly"
    answered = subprocess.run(
        [
            str(dragonfly),
            "predict",
            "--model",
            "models:/dragonfly@champion",
            "--image",
            "red.png",
            "--question",
            "What is shown?",
            "--max-new-tokens",
            "4",
            "--json",
        ],
        cwd=root,
        env=flow.env(root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert answered.returncode == 0, answered.stderr[-3000:]
    assert json.loads(answered.stdout.strip().splitlines()[-1])["question"] == "What is shown?"
    assert (root / ".dragonfly-models" / "dragonfly" / "1").is_dir()


def test_a_bad_key_fails_the_flow_at_once_naming_it(flow_workspace, flow):
    start = time.perf_counter()
    bad = flow(flow_workspace, *STAGES, "--set", "stages.general1.lrr=1")
    assert bad.returncode == 1
    assert "stages.general1.lrr" in bad.stderr and "did you mean 'lr'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert time.perf_counter() - start < 120
