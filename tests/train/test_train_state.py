"""TrainState goes into a checkpoint's state record and comes back as one object, in process."""

import json

from mlflow import MlflowClient

from dragonfly.pipeline import train
from dragonfly.pipeline.steps import plan_stage
from dragonfly.tracking import Tracking
from dragonfly.train import checkpoint
from dragonfly.train.config import StageConfig
from dragonfly.train.train_state import TrainState
from dragonfly.train.trainer import build, release, resume_state


def _commit(root, train_state, stage, fingerprint):
    tmp = checkpoint.begin(root, train_state.step)
    (tmp / "rng_0.json").write_text("{}")  # this rank's file, which a committed checkpoint must list
    return checkpoint.commit(tmp, train_state.record(stage, 40, fingerprint), keep_last=0)


def test_train_state_round_trips_through_the_checkpoint_record(tmp_path):
    stage = StageConfig(name="general2", lr=5e-4)
    ran = TrainState(step=12, mlflow_run_id="abc123", stepped_finitely=True)
    saved = _commit(tmp_path, ran, stage, "f" * 64)
    assert checkpoint.problem(saved) is None
    record = checkpoint.read_state(saved)
    # The record keeps the keys checkpoints have always had (resume and the pipeline read them).
    assert {k: record[k] for k in ("step", "mlflow_run_id", "total_steps", "fingerprint")} == {
        "step": 12,
        "mlflow_run_id": "abc123",
        "total_steps": 40,
        "fingerprint": "f" * 64,
    }
    assert record["config"]["lr"] == 5e-4 and record["stage"] == "general2"
    back = TrainState.resumed(record, saved)
    assert back.state_dict() == ran.state_dict()
    # The NaN guard's state is this run's: a resumed run has no finite step yet, and knows its checkpoint.
    assert back == TrainState(step=12, mlflow_run_id="abc123", resumed_from=saved, start_step=12)
    assert back.failed_at_once
    back.step += 1
    assert not back.failed_at_once


def test_train_state_reads_a_record_written_before_it(tmp_path):
    # A trainer_state.json as the trainer wrote it before TrainState existed (no run id: no tracking).
    record = json.loads('{"step": 4, "stage": "general1", "total_steps": 8, "config": {}, "fingerprint": null}')
    back = TrainState.resumed(record, tmp_path / checkpoint.checkpoint_name(4))
    assert (back.step, back.mlflow_run_id, back.start_step) == (4, None, 4)


def test_a_resumed_run_restores_the_saved_train_state(workspace, tmp_path):
    """The state a run saved comes back whole when the stage resumes (the MLflow run included)."""
    overrides = ["max_steps=2", "global_batch=2", "micro_batch=2", "save_every=1"]
    tracking = Tracking(uri=f"sqlite:///{tmp_path}/mlflow.db")
    train("general1", "tiny", workspace / "params.yaml", overrides, out_dir=tmp_path / "run", tracking=tracking)
    client = MlflowClient(tracking.uri)
    (run_id,) = [
        r.info.run_id for r in client.search_runs([client.get_experiment_by_name("dragonfly-tiny").experiment_id])
    ]
    saved = checkpoint.latest_valid(tmp_path / "run" / "checkpoints")

    plan = plan_stage("general1", "tiny", workspace / "params.yaml", overrides, tmp_path / "run")
    run = build(
        plan.settings.profile, plan.stage, plan.settings.data.root, plan.dataset_dir, plan.out, plan.fingerprint
    )
    try:
        restored = resume_state(run)
    finally:
        release(run)
    assert restored == TrainState(step=2, mlflow_run_id=run_id, resumed_from=saved, start_step=2)
    assert not restored.stepped_finitely  # no step of the resumed run yet
