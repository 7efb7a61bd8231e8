"""Exact resume after SIGKILL, fallback past a damaged checkpoint, and real two-process
training under torchrun (gloo on 127.0.0.1), each run through the real `dragonfly` command."""

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from safetensors.torch import load_file

from dragonfly.train import checkpoint

RUN = ["train", "--stage", "general2", "--params", "params.yaml"]
CFG = ["init_from=init", "epochs=2", "lr=1e-3", "global_batch=4", "micro_batch=2", "warmup_ratio=0.1"]


def _losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def _weights(out):
    return load_file(out / "final" / "model.safetensors")


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference(workspace, run_cli):
    """An uninterrupted 12-step run."""
    out = workspace / "runs" / "reference"
    run_cli(*RUN, "--out", str(out), *CFG, "max_steps=12", "save_every=4", cwd=workspace)
    return out


def test_sigkill_then_resume_matches_uninterrupted_run(workspace, run_cli, reference, tmp_path):
    out = tmp_path / "killed"
    env = {"DRAGONFLY_TRACKING": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    proc = run_cli(*RUN, "--out", str(out), *CFG, "max_steps=12", "save_every=4", cwd=workspace, env=env, wait=False)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-000004").is_dir():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_before = max(_losses(out))
    assert steps_before < 12, "the run finished before it could be killed"
    run_cli(*RUN, "--out", str(out), "--resume", *CFG, "max_steps=12", "save_every=4", cwd=workspace, env=env)

    expected, got = _losses(reference), _losses(out)
    assert sorted(got) == list(range(1, 13))
    for step in expected:
        assert abs(expected[step] - got[step]) < 1e-6, (step, expected[step], got[step])
    assert _max_diff(_weights(reference), _weights(out)) < 1e-6

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["dragonfly-tiny"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the resumed run continued the same run
    history = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "loss")
    assert {m.step for m in history} == set(range(1, 13))


def _preempted(cmd: list[str], cwd, out, logged: int) -> tuple[str, subprocess.Popen]:
    """Run ``cmd`` in a process group of its own; once ``logged`` steps are in its metrics,
    SIGTERM the whole group, as a scheduler preempting the job does. (stderr, process)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DRAGONFLY_TRACKING": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.time() + 300
    while not (out / "metrics.jsonl").is_file() or len((out / "metrics.jsonl").read_text().splitlines()) < logged:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)
    return proc.communicate(timeout=300)[1], proc


def test_sigterm_finishes_the_step_saves_and_resume_matches_uninterrupted_run(workspace, run_cli, reference, tmp_path):
    """As a scheduler preempts: SIGTERM to the whole process group (DataLoader worker included),
    with no periodic checkpoint due before the end."""
    out = tmp_path / "preempted"
    args = [*RUN, "--out", str(out), *CFG, "max_steps=12", "save_every=100", "num_workers=1"]
    stderr, proc = _preempted([sys.executable, "-m", "dragonfly.cli", *args], workspace, out, logged=3)
    assert proc.returncode == 143, stderr[-3000:]
    assert "stopped by SIGTERM after step" in stderr and "Traceback" not in stderr
    saved = [step for step, _ in checkpoint.list_checkpoints(out / "checkpoints")]
    assert saved == [max(_losses(out))] and saved[0] < 12  # the step under way, finished and saved
    run_cli(*args, "--resume", cwd=workspace)
    expected, got = _losses(reference), _losses(out)
    assert sorted(got) == list(range(1, 13))
    assert max(abs(expected[step] - got[step]) for step in expected) < 1e-6
    assert _max_diff(_weights(reference), _weights(out)) < 1e-6


def test_sigterm_under_torchrun_saves_one_agreed_step(workspace, free_port, tmp_path):
    """Both ranks stop after the same step whenever the signal reaches each: one complete
    checkpoint with both ranks' RNG states (torchrun's own agent reports the signal itself)."""
    out = tmp_path / "preempted-ddp"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1"]
    launch += [f"--master_port={free_port()}", "-m", "dragonfly.cli"]
    args = [*RUN, "--out", str(out), *CFG, "max_steps=12", "save_every=100"]
    stderr, _ = _preempted([*launch, *args], workspace, out, logged=2)
    assert "stopped by SIGTERM after step" in stderr, stderr[-3000:]
    saved = checkpoint.list_checkpoints(out / "checkpoints")
    assert [step for step, _ in saved] == [max(_losses(out))]
    assert checkpoint.problem(saved[0][1]) is None
    assert {p.name for p in saved[0][1].glob("rng_*.json")} == {"rng_0.json", "rng_1.json"}


def test_truncated_newest_checkpoint_falls_back(workspace, run_cli, reference, tmp_path):
    out = tmp_path / "damaged"
    run_cli(*RUN, "--out", str(out), *CFG, "max_steps=12", "save_every=4", "keep_last=2", cwd=workspace)
    kept = [step for step, _ in checkpoint.list_checkpoints(out / "checkpoints")]
    assert kept == [8, 12]
    newest = out / "checkpoints" / "step-000012" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    assert "model.safetensors is" in checkpoint.problem(newest.parent)
    assert checkpoint.latest_valid(out / "checkpoints", lambda _: None).name == "step-000008"
    (out / "final" / "model.safetensors").unlink()
    result = run_cli(*RUN, "--out", str(out), "--resume", *CFG, "max_steps=12", "save_every=4", cwd=workspace)
    assert "skipping checkpoint" in result.stdout and "at step 8/12" in result.stdout
    assert _max_diff(_weights(reference), _weights(out)) < 1e-6


def test_two_processes_match_one(workspace, run_cli, reference, tmp_path):
    out = tmp_path / "ddp"
    env = {"DRAGONFLY_TRACKING": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    # Same global batch (4): one process accumulates 2 micro-batches, two processes take one each.
    run_cli(*RUN, "--out", str(out), *CFG, "max_steps=12", "save_every=6", cwd=workspace, env=env, torchrun=2)
    assert _max_diff(_weights(reference), _weights(out)) < 1e-5  # float summation order differs across ranks
    for step, loss in _losses(reference).items():
        assert abs(_losses(out)[step] - loss) < 1e-5
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 12  # rank 0 alone logs
    saved = out / "checkpoints" / "step-000012"
    assert checkpoint.problem(saved) is None
    assert {p.name for p in saved.glob("rng_*.json")} == {"rng_0.json", "rng_1.json"}  # one RNG state per rank
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["dragonfly-tiny"], output_format="list")
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"


def test_paper_deepspeed_config_is_accepted(workspace):
    from deepspeed.runtime.config import DeepSpeedConfig

    from dragonfly.config import load_profile
    from dragonfly.train.config import load_stage
    from dragonfly.train.deepspeed import deepspeed_config, launch_command

    profile = load_profile("paper", workspace / "params.yaml")
    for name, batch in (("general1", 64), ("general2", 16)):
        stage = load_stage(profile, name)
        parsed = DeepSpeedConfig(deepspeed_config(stage, 1))  # the parser sees a world of one process here
        assert parsed.train_batch_size == batch and parsed.zero_optimization_stage == 1
        assert parsed.gradient_clipping == 1.0
        eight = deepspeed_config(stage, 8)
        assert eight["train_micro_batch_size_per_gpu"] * eight["gradient_accumulation_steps"] * 8 == batch
    with pytest.raises(AssertionError, match="train_batch_size is not equal"):
        DeepSpeedConfig({**deepspeed_config(load_stage(profile, "general1"), 1), "train_batch_size": 63})
    cmd = launch_command("general2", "paper", nodes=2, gpus_per_node=8)
    assert cmd.startswith("torchrun --nnodes=2 --nproc_per_node=8") and "--resume" in cmd
    assert "--shutdown-timeout=600" in cmd  # time to finish the step and save after a SIGTERM


def test_a_second_run_into_the_same_folder_is_refused_naming_the_first(workspace, run_cli, tmp_path):
    out = tmp_path / "dual"
    long = ["epochs=1000", "max_steps=20000", "save_every=1000"]  # still running when the second starts
    first = run_cli(*RUN, "--out", str(out), *CFG, *long, cwd=workspace, wait=False)
    deadline = time.time() + 300
    while not (out / "metrics.jsonl").is_file():
        assert first.poll() is None and time.time() < deadline, first.stdout.read()[-3000:]
        time.sleep(0.02)
    second = run_cli(*RUN, "--out", str(out), *CFG, *long, "lr=3e-4", cwd=workspace, check=False)
    assert first.poll() is None, "the first run ended before the second could meet it"
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert f"{out} is being trained by another run (pid {first.pid} on " in second.stderr
    first.send_signal(signal.SIGTERM)  # the first run, untouched, stops cleanly (and lets go)
    assert first.wait(timeout=300) == 143
    from filelock import FileLock

    from dragonfly.train.stage_lock import lock_path

    with FileLock(lock_path(out), timeout=0):  # the folder is free again
        pass
