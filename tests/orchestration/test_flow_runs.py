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

    trained, evaluated = _mtime(final / "model.safetensors"), _mtime(summary)
    time.sleep(0.05)
    second = flow(root, *STAGES, *SETS, "--eval-limit", "4")
    assert second.returncode == 0, second.stderr[-3000:]
    assert _mtime(final / "model.safetensors") == trained and _mtime(summary) == evaluated
    assert "up to date" in second.stdout + second.stderr
    assert len(client.search_model_versions("name='dragonfly'")) == 1  # same model, same metrics: once

    third = flow(root, *STAGES, *SETS, "--eval-limit", "6")  # one evaluation parameter changed
    assert third.returncode == 0, third.stderr[-3000:]
    assert _mtime(final / "model.safetensors") == trained and _mtime(summary) != evaluated
    assert len(client.search_model_versions("name='dragonfly'")) == 2


def test_a_bad_key_fails_the_flow_at_once_naming_it(flow_workspace, flow):
    start = time.perf_counter()
    bad = flow(flow_workspace, *STAGES, "--set", "stages.general1.lrr=1")
    assert bad.returncode == 1
    assert "stages.general1.lrr" in bad.stderr and "did you mean 'lr'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert time.perf_counter() - start < 120
