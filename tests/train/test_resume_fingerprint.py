"""Resuming follows the stage's fingerprint: ``resume="auto"`` (the flow, the ablations)
continues only from checkpoints of the same configuration *and inputs*; an explicit resume
from checkpoints of other inputs is refused, naming why."""

from __future__ import annotations

import json
import shutil

import pytest

from dragonfly import pipeline
from dragonfly.fingerprint import RECORD, recorded
from dragonfly.train.checkpoint import list_checkpoints, read_state
from dragonfly.train.trainer import TrainingError

STEPS = ["max_steps=2", "save_every=1", "keep_last=3"]


@pytest.fixture
def here(workspace, tmp_path, monkeypatch):
    """Run from a copy of the workspace with relative paths, as a user does."""
    monkeypatch.chdir(workspace)
    return workspace


def _interrupt(out):
    """What a killed run leaves: checkpoints, no record, no final model."""
    (out / RECORD).unlink()
    shutil.rmtree(out / "final")


def test_auto_resumes_only_from_checkpoints_of_the_same_fingerprint(here, tmp_path, capsys):
    out = tmp_path / "g1"
    pipeline.train("general1", "tiny", "params.yaml", STEPS, out_dir=out, log=None)
    fp = recorded(out)
    assert [read_state(p)["fingerprint"] for _, p in list_checkpoints(out / "checkpoints")] == [fp, fp]

    _interrupt(out)
    capsys.readouterr()
    pipeline.train("general1", "tiny", "params.yaml", STEPS, resume="auto", out_dir=out, log=None)
    assert "resumed general1" in capsys.readouterr().out
    assert recorded(out) == fp and not (out / "checkpoints.superseded").exists()

    # Another learning rate: the old checkpoints are moved aside (nothing deleted) and
    # the stage trains from step 0 with the new fingerprint.
    _interrupt(out)
    messages = []
    pipeline.train(
        "general1", "tiny", "params.yaml", [*STEPS, "lr=3e-4"], resume="auto", out_dir=out, log=messages.append
    )
    assert "resumed" not in capsys.readouterr().out
    assert any("checkpoints.superseded" in m for m in messages)
    assert [read_state(p)["fingerprint"] for _, p in list_checkpoints(out / "checkpoints.superseded" / fp)] == [fp, fp]
    assert recorded(out) not in (None, fp)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_every_superseded_generation_is_kept_and_its_own_run_resumes_it(here, tmp_path):
    """Run A stopped, run B (another lr) stopped, run A again: A continues where it stopped."""
    out = tmp_path / "aba"
    a, b = [*STEPS[:1], "max_steps=4", "save_every=1", "keep_last=5"], ["max_steps=4", "save_every=1", "lr=3e-4"]
    pipeline.train("general1", "tiny", "params.yaml", a, resume="auto", out_dir=out, log=None)
    fp_a, weights_a = recorded(out), (out / "final" / "model.safetensors").read_bytes()
    losses_a = (out / "metrics.jsonl").read_text().splitlines()
    _interrupt(out)
    for _, path in list_checkpoints(out / "checkpoints")[2:]:
        shutil.rmtree(path)  # A stopped after step 2
    pipeline.train("general1", "tiny", "params.yaml", b, resume="auto", out_dir=out, log=None)
    fp_b = recorded(out)
    _interrupt(out)
    messages = []
    pipeline.train("general1", "tiny", "params.yaml", a, resume="auto", out_dir=out, log=messages.append)
    assert any("restored; resuming" in m for m in messages), messages
    assert recorded(out) == fp_a and fp_b != fp_a
    assert sorted(p.name for p in (out / "checkpoints.superseded").iterdir()) == [fp_b]  # B kept too
    # A's two steps (their log came back with them), then the two it had left, as A logged them.
    got = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in got] == [(r["step"], r["loss"]) for r in map(json.loads, losses_a)]
    assert (out / "final" / "model.safetensors").read_bytes() == weights_a  # as if never interrupted


def test_explicit_resume_from_other_inputs_is_refused(here, tmp_path):
    first, second = tmp_path / "g1", tmp_path / "g2"
    pipeline.train("general1", "tiny", "params.yaml", STEPS, out_dir=first, log=None)
    chained = [*STEPS, f"init_from={json.dumps(str(first / 'final'))}"]
    pipeline.train("general2", "tiny", "params.yaml", chained, out_dir=second, log=None)
    _interrupt(second)

    # The same general2 configuration, but general1 is retrained differently underneath it.
    pipeline.train("general1", "tiny", "params.yaml", [*STEPS, "lr=3e-4"], out_dir=first, force=True, log=None)
    with pytest.raises(TrainingError, match="trained from other inputs"):
        pipeline.train("general2", "tiny", "params.yaml", chained, resume=True, out_dir=second, log=None)


def test_resume_into_another_tracking_store_starts_a_run_there_tagged_with_the_old_one(here, tmp_path, capsys):
    """A checkpoint's MLflow run lives in store A; it resumes where only store B is reachable
    (another node, a moved mlflow.db, the flow's store vs dvc repro's)."""
    from mlflow.tracking import MlflowClient

    from dragonfly.tracking import RESUMED_FROM_TAG, Tracking

    out, a, b = tmp_path / "moved", f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    pipeline.train("general1", "tiny", "params.yaml", STEPS, out_dir=out, tracking=Tracking(a), log=None)
    old = read_state(list_checkpoints(out / "checkpoints")[-1][1])["mlflow_run_id"]
    assert MlflowClient(a).get_run(old).info.status == "FINISHED"
    _interrupt(out)
    capsys.readouterr()
    pipeline.train("general1", "tiny", "params.yaml", STEPS, resume=True, out_dir=out, tracking=Tracking(b), log=None)
    assert f"run {old} of the checkpoint is not in this tracking store" in capsys.readouterr().out
    (run,) = MlflowClient(b).search_runs([e.experiment_id for e in MlflowClient(b).search_experiments()])
    assert run.data.tags[RESUMED_FROM_TAG] == old and run.info.status == "FINISHED"
    assert run.data.params  # the stage's settings, as a fresh run has them


def test_a_half_written_newest_checkpoint_does_not_send_the_good_ones_aside(here, tmp_path, capsys):
    """A preemption can leave the newest checkpoint without its state file (a bucket uploads
    files in any order): the stage resumes from the one before it."""
    out = tmp_path / "half"
    pipeline.train("general1", "tiny", "params.yaml", STEPS, out_dir=out, log=None)
    _interrupt(out)
    (list_checkpoints(out / "checkpoints")[-1][1] / "trainer_state.json").unlink()
    capsys.readouterr()
    pipeline.train("general1", "tiny", "params.yaml", STEPS, resume="auto", out_dir=out, log=None)
    text = capsys.readouterr().out
    assert "resumed general1" in text and "at step 1/2" in text, text
    assert not (out / "checkpoints.superseded").exists()
