"""The SkyPilot task files (sky/), their launcher (sky/launch.py) and a preemption on CPU.

SkyPilot lives in its own environment (`make sky`, .venv-sky): its parser reads every task
file in a subprocess of that environment, offline. The launcher runs in this one, as it does
on a node; a preemption is the task's own `run` script started on the tiny profile, killed
with SIGKILL (its whole process group, as a lost VM takes everything) and started again on
the same checkpoint folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dragonfly.train import checkpoint

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

REPO = Path(__file__).resolve().parents[1]
SKY = REPO / "sky"
SKY_PYTHON = REPO / ".venv-sky" / "bin" / "python"
TASKS = ["train.yaml", "train-managed.yaml", "eval.yaml", "pipeline.yaml"]
MANAGED = ["train-managed.yaml", "eval.yaml", "pipeline.yaml"]
STAGES = ["general1", "general2", "med1", "med2", "med3"]
BUCKETS = [("DATA_BUCKET", "s3://dragonfly-test-data"), ("CKPT_BUCKET", "dragonfly-test-runs")]
# What SkyPilot 0.14.1 reads inside resources.job_recovery; it passes any other key through
# silently (for server-side plugins), so a typo like max_restart_on_errors would do nothing.
RECOVERY_KEYS = {"strategy", "max_restarts_on_errors", "recover_on_exit_codes"}

# Run in .venv-sky: each file through SkyPilot's own loader, as `sky launch --env ...` does.
LOADER = r"""
import json, sys
import sky.jobs.recovery_strategy  # registers the recovery strategies
from sky.utils import dag_utils, registry

overrides = json.loads(sys.argv[1])
report = {"strategies": sorted(registry.JOBS_RECOVERY_STRATEGY_REGISTRY), "files": {}}
for path in sys.argv[2:]:
    try:  # as written, without --env: the buckets have no default
        dag_utils.load_chain_dag_from_yaml(path)
        plain = None
    except ValueError as err:
        plain = str(err)
    dag = dag_utils.load_chain_dag_from_yaml(path, env_overrides=[tuple(o) for o in overrides])
    tasks = []
    for task in dag.tasks:
        (res,) = task.resources
        tasks.append({
            "name": task.name,
            "num_nodes": task.num_nodes,
            "envs": dict(task.envs),
            "inline_secrets": sorted(task.secrets),
            "secret_refs": sorted(ref.name for ref in task.managed_secret_refs),
            "accelerators": res.accelerators,
            "use_spot": res.use_spot,
            "job_recovery": res.job_recovery,
            "mounts": {k: s.to_yaml_config() for k, s in task.storage_mounts.items()},
            "run": task.run,
        })
    report["files"][path] = {"dag": dag.name, "plain_from_yaml_error": plain, "tasks": tasks}
print(json.dumps(report))
"""


@pytest.fixture(scope="session")
def loaded(sky_env) -> dict:
    paths = [str(SKY / name) for name in TASKS]
    result = subprocess.run(
        [str(sky_env), "-c", LOADER, json.dumps(BUCKETS), *paths], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["files"] = {Path(k).name: v for k, v in report["files"].items()}
    return report


def raw(name: str) -> list[dict]:
    """The YAML documents of a task file, as written (no SkyPilot involved)."""
    return [doc for doc in yaml.safe_load_all((SKY / name).read_text()) if doc]


def test_every_task_file_loads_with_skypilots_parser(loaded):
    files = loaded["files"]
    assert set(files) == set(TASKS)
    for name, entry in files.items():
        # The buckets have no default: without `--env` SkyPilot refuses, naming one.
        assert "'DATA_BUCKET' is None" in entry["plain_from_yaml_error"], name
        for task in entry["tasks"]:
            assert task["envs"]["DATA_BUCKET"] == "s3://dragonfly-test-data"
    assert [t["name"] for t in files["pipeline.yaml"]["tasks"]] == STAGES
    assert files["pipeline.yaml"]["dag"] == "dragonfly-paper"  # the first document names the chain
    for name in ("train.yaml", "train-managed.yaml", "pipeline.yaml"):
        for task in files[name]["tasks"]:
            assert task["accelerators"] == {"H100": 8} and task["num_nodes"] == 1, name
    assert files["eval.yaml"]["tasks"][0]["accelerators"] == {"H100": 1}
    stages = [t["envs"]["STAGE"] for t in files["pipeline.yaml"]["tasks"]]
    assert stages == STAGES


def recovery_problems(recovery, strategies: list[str]) -> list[str]:
    """What SkyPilot's client would let through unchecked in a job_recovery mapping."""
    if not isinstance(recovery, dict):
        return [f"job_recovery is {recovery!r}, not a mapping with strategy and max_restarts_on_errors"]
    problems = [f"unknown key {key!r}" for key in sorted(set(recovery) - RECOVERY_KEYS)]
    if str(recovery.get("strategy", "")).lower() not in strategies:
        problems.append(f"strategy {recovery.get('strategy')!r} is not one of {strategies}")
    restarts = recovery.get("max_restarts_on_errors")
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 1:
        problems.append(f"max_restarts_on_errors {restarts!r} is not a positive integer")
    return problems


def test_managed_jobs_recover_with_keys_skypilot_reads(loaded, sky_env, tmp_path):
    for name in MANAGED:
        for task in loaded["files"][name]["tasks"]:
            assert task["use_spot"] is True, name
            assert recovery_problems(task["job_recovery"], loaded["strategies"]) == [], name
    assert loaded["files"]["train.yaml"]["tasks"][0]["job_recovery"] is None  # an interactive cluster
    # Why the check is ours: SkyPilot accepts a misspelt key without a word.
    typo = raw("train-managed.yaml")[0]
    typo["resources"]["job_recovery"] = {"strategy": "EAGER_NEXT_REGION", "max_restart_on_errors": 3}
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(typo))
    result = subprocess.run(
        [str(sky_env), "-c", LOADER, json.dumps(BUCKETS), str(tmp_path / "typo.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (task,) = json.loads(result.stdout.strip().splitlines()[-1])["files"][str(tmp_path / "typo.yaml")]["tasks"]
    assert recovery_problems(task["job_recovery"], loaded["strategies"]) == [
        "unknown key 'max_restart_on_errors'",
        "max_restarts_on_errors None is not a positive integer",
    ]


def test_data_and_checkpoints_live_on_buckets(loaded):
    for name in TASKS:
        for task in loaded["files"][name]["tasks"]:
            data, ckpt = task["mounts"]["/data"], task["mounts"]["/ckpt"]
            assert data["source"] == "s3://dragonfly-test-data" and data["mode"] == "MOUNT_CACHED"
            assert data["config"]["mount_cached"]["read_only"] is True
            assert ckpt["name"] == "dragonfly-test-runs" and ckpt["mode"] == "MOUNT_CACHED"
            assert '"$CKPT_DIR/' in task["run"], name  # outputs go to the bucket's mount, nowhere else


SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|TRACKING_URI", re.I)
SECRET_TEXT = [
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # a Hugging Face token
    re.compile(r"://[^/\s:@]+:[^/\s@]+@"),  # credentials inside a URI
    re.compile(r"(?i)(token|secret|password|api_key)[ \t]*[:=][ \t]*['\"]?[A-Za-z0-9+/_-]{12,}"),
]


def test_no_secret_value_is_written_in_any_file(loaded):
    for name in TASKS:
        text = (SKY / name).read_text()
        for pattern in SECRET_TEXT:
            assert not pattern.search(text), (name, pattern.pattern)
        for doc in raw(name):
            if "secrets" in doc:
                assert all(value is None for value in doc["secrets"].values()), name  # filled by --secret only
            for key, value in (doc.get("envs") or {}).items():
                assert not (SECRET_NAME.search(key) and value), (name, key)  # no secret hides among the envs
        for task in loaded["files"][name]["tasks"]:
            assert task["inline_secrets"] == [], name
            wanted = ["MLFLOW_TRACKING_URI"] if name == "eval.yaml" else ["HF_TOKEN", "MLFLOW_TRACKING_URI"]
            assert task["secret_refs"] == wanted, name


def test_managed_and_pipeline_tasks_are_the_training_task():
    """Three files say the same thing; only these differences are allowed."""
    (train,), (managed,) = raw("train.yaml"), raw("train-managed.yaml")
    resources = dict(managed["resources"])
    assert resources.pop("use_spot") is True and resources.pop("job_recovery")
    assert resources == train["resources"]
    strip = {"name", "resources"}
    assert {k: v for k, v in managed.items() if k not in strip} == {k: v for k, v in train.items() if k not in strip}
    header, *stages = raw("pipeline.yaml")
    assert header == {"name": "dragonfly-paper"}
    for doc, stage in zip(stages, STAGES, strict=True):
        assert doc["name"] == stage and doc["envs"]["STAGE"] == stage
        doc = {**doc, "envs": {**doc["envs"], "STAGE": managed["envs"]["STAGE"]}}
        assert {k: v for k, v in doc.items() if k != "name"} == {k: v for k, v in managed.items() if k != "name"}


def run_script(name: str = "train.yaml", dry_run: bool = False) -> str:
    """The task's own `run`, optionally with the launcher's --dry-run (nothing else changed)."""
    script = raw(name)[0]["run"]
    return script.replace("sky/launch.py", "sky/launch.py --dry-run") if dry_run else script


def node_env(envs: dict, **values) -> dict:
    """The task's envs, as SkyPilot exports them on a node, plus the SKYPILOT_* of one node."""
    defaults = {k: ("" if v is None else str(v)) for k, v in raw("train.yaml")[0]["envs"].items()}
    return {**os.environ, **defaults, **envs, **{k: str(v) for k, v in values.items()}}


def run_launch(env: dict, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_launch_line_for_two_nodes_of_eight_gpus():
    ips = "192.0.2.10\n192.0.2.11\n"  # documentation addresses (RFC 5737): nothing is contacted
    tail = (
        "-m dragonfly.cli train --stage general2 --profile paper --resume --params params.yaml "
        "--out /ckpt/runs/paper/general2 --set runs_dir=/ckpt/runs --set data.root=/data "
        "--set data.out_dir=/data/mixtures"
    )
    for rank in (0, 1):
        env = node_env(
            {"STAGE": "general2"},
            SKYPILOT_NODE_RANK=rank,
            SKYPILOT_NODE_IPS=ips,
            SKYPILOT_NUM_NODES=2,
            SKYPILOT_NUM_GPUS_PER_NODE=8,
        )
        result = run_launch(env, run_script(dry_run=True))
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == (
            f"torchrun --nnodes=2 --nproc_per_node=8 --shutdown-timeout=600 --node_rank={rank} --master_addr=192.0.2.10 "
            f"--master_port=29500 {tail}"
        )
    single = node_env({"STAGE": "general2", "TRAIN_ARGS": "max_steps=50"}, SKYPILOT_NUM_GPUS_PER_NODE=8)
    result = run_launch(single, run_script(dry_run=True))
    assert result.stdout.strip() == f"torchrun --nnodes=1 --nproc_per_node=8 --shutdown-timeout=600 {tail} max_steps=50"
    wrong = node_env({}, SKYPILOT_NODE_IPS="192.0.2.10", SKYPILOT_NUM_NODES=2)
    result = run_launch(wrong, run_script(dry_run=True))
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "error: SKYPILOT_NODE_IPS lists 1 address(es) but SKYPILOT_NUM_NODES is 2"
    ]


# The preemption: the tiny profile, 1 node × 1 process on CPU, a short general2.
TRAIN_ARGS = "init_from=init epochs=2 lr=1e-3 global_batch=4 micro_batch=2 warmup_ratio=0.1 max_steps=24 save_every=4"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("train_conftest_for_sky", REPO / "tests/train/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("sky-workspace")
    module.make_workspace(root)  # synthetic data, mixtures, params.yaml; a random vision tower (fast)
    return root


def tiny_env(workspace: Path, bucket: Path, processes: int = 1) -> dict:
    """One CPU node as SkyPilot would describe it; the "bucket" is a local folder."""
    return node_env(
        {
            "STAGE": "general2",
            "PROFILE": "tiny",
            "PARAMS": str(workspace / "params.yaml"),
            "DATA_DIR": str(workspace / "data"),
            "CKPT_DIR": str(bucket),
            "TRAIN_ARGS": TRAIN_ARGS,
            "DRAGONFLY_TRACKING": "0",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "PET_MASTER_PORT": str(_free_port()),  # torchrun's --master_port: no clash with other runs
            "COLUMNS": "10000",  # rich would wrap long paths mid-name
        },
        SKYPILOT_NODE_RANK=0,
        SKYPILOT_NODE_IPS="127.0.0.1",
        SKYPILOT_NUM_NODES=1,
        SKYPILOT_NUM_GPUS_PER_NODE=processes,
    )


def stage_dir(bucket: Path) -> Path:
    return bucket / "runs" / "tiny" / "general2"


def weights(bucket: Path) -> dict:
    return load_file(stage_dir(bucket) / "final" / "model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory) -> Path:
    """The same run, uninterrupted, through the same run script."""
    bucket = tmp_path_factory.mktemp("reference-bucket")
    result = run_launch(tiny_env(workspace, bucket), run_script(), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return bucket


def start_and_kill(workspace: Path, bucket: Path) -> None:
    """The run script on 1 process, SIGKILLed once checkpoint step-000008 is committed."""
    proc = subprocess.Popen(
        ["bash", "-c", run_script()],
        cwd=REPO,
        env=tiny_env(workspace, bucket),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: bash, torchrun and the worker die together
    )
    deadline = time.time() + 300
    while not (stage_dir(bucket) / "checkpoints" / "step-000008").is_dir():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # a preempted VM: nothing gets to clean up
    proc.wait()
    proc.stdout.close()
    assert not (stage_dir(bucket) / "final").exists(), "the run finished before it could be killed"


@pytest.fixture(scope="module")
def killed(workspace, tmp_path_factory) -> Path:
    bucket = tmp_path_factory.mktemp("killed") / "bucket"
    start_and_kill(workspace, bucket)
    return bucket


@pytest.mark.slow
def test_preemption_resumes_from_the_newest_complete_checkpoint(workspace, reference, killed, tmp_path):
    bucket = tmp_path / "bucket"
    shutil.copytree(killed, bucket)
    ckpts = stage_dir(bucket) / "checkpoints"
    newest = checkpoint.list_checkpoints(ckpts)[-1][0]
    # What MOUNT_CACHED can leave after a preemption: newer checkpoints half uploaded, one
    # with its manifest but truncated weights, one whose manifest never arrived.
    src = ckpts / checkpoint.checkpoint_name(newest)
    truncated, unmarked = (ckpts / checkpoint.checkpoint_name(newest + k) for k in (4, 8))
    shutil.copytree(src, truncated)
    (truncated / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:1000])
    shutil.copytree(src, unmarked)
    (unmarked / checkpoint.MANIFEST).unlink()

    result = run_launch(tiny_env(workspace, bucket), run_script(), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    log = result.stdout
    assert f"skipping checkpoint {unmarked}: no manifest" in log
    assert f"skipping checkpoint {truncated}: model.safetensors is 1000 bytes" in log
    assert f"from {src} at step {newest}/24" in log
    assert max_diff(weights(reference), weights(bucket)) < 1e-6  # exactly the uninterrupted run


@pytest.mark.slow
def test_plain_checkpoint_resumes_on_another_world_size(workspace, reference, killed, tmp_path):
    """The plain accelerate checkpoint is world-size independent: killed on 1 process,
    finished on 2 (same global batch, 1 micro-batch each), the weights agree."""
    bucket = tmp_path / "bucket"
    shutil.copytree(killed, bucket)
    newest = checkpoint.list_checkpoints(stage_dir(bucket) / "checkpoints")[-1][1]
    assert checkpoint.world_size_problem(newest, 2) is None
    result = run_launch(tiny_env(workspace, bucket, processes=2), run_script(), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"resumed general2 from {newest}" in result.stdout
    assert max_diff(weights(reference), weights(bucket)) < 1e-5  # float summation order differs across ranks


def deepspeed_like(plain: Path, out: Path, ranks: int) -> Path:
    """A checkpoint laid out as DeepSpeed ZeRO writes it on ``ranks`` processes (tiny shards)."""
    shutil.copytree(plain, out)
    for rank in range(ranks):
        shard = out / checkpoint.DEEPSPEED_DIR / "state" / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
        shard.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"optimizer_state_dict": {"fp32": torch.zeros(4)}}, shard)
        if rank:
            shutil.copy(out / "rng_0.json", out / f"rng_{rank}.json")
    checkpoint.write_manifest(out, world_size=ranks)
    return out


def test_deepspeed_shards_are_refused_on_another_world_size(workspace, reference, tmp_path):
    bucket = tmp_path / "bucket"
    shutil.copytree(reference, bucket)
    out = stage_dir(bucket)
    shutil.rmtree(out / "final")  # unfinished: the stage would resume
    (out / "fingerprint.json").unlink()
    ckpts = out / "checkpoints"
    newest = checkpoint.list_checkpoints(ckpts)[-1][1]
    sharded = deepspeed_like(newest, ckpts / "step-000028", ranks=2)
    assert checkpoint.problem(sharded) is None  # a complete checkpoint of 2 processes
    assert checkpoint.resume_point(ckpts, lambda _: None, world_size=2) == sharded
    with pytest.raises(checkpoint.CheckpointError, match="shards of 2 processes .* cannot resume on 1"):
        checkpoint.resume_point(ckpts, lambda _: None, world_size=1)  # what rank 0 of the trainer checks
    assert checkpoint.world_size_problem(newest, 1) is None and checkpoint.world_size_problem(newest, 16) is None

    result = run_launch(tiny_env(workspace, bucket), run_script(), timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    error, hint = result.stderr.strip().splitlines()
    assert error == (
        f"error: {sharded} holds DeepSpeed ZeRO optimiser shards of 2 processes (one per rank) and "
        "cannot resume on 1: relaunch on 2 processes (nodes × GPUs per node)"
    )
    assert hint.startswith("hint: or train into a fresh --runs-dir")
    assert "torchrun" not in result.stdout  # refused on the head node, before any rank started


def test_a_rank_missing_from_the_manifest_makes_the_checkpoint_incomplete(reference, tmp_path):
    """A multi-node checkpoint whose other node's files had not reached rank 0's view of the
    bucket when it committed is skipped, naming the rank."""
    ckpts = stage_dir(reference) / "checkpoints"
    newest = checkpoint.list_checkpoints(ckpts)[-1][1]
    two = tmp_path / "step-000028"
    shutil.copytree(newest, two)
    checkpoint.write_manifest(two, world_size=2)  # rank 1's rng_1.json never arrived
    assert checkpoint.problem(two) == (
        "rank 1's rng_1.json is not in the manifest of a 2-process checkpoint "
        "(another node's file, not yet uploaded when rank 0 committed?)"
    )
    assert checkpoint.problem(newest) is None
    assert json.loads((newest / checkpoint.MANIFEST).read_text())["world_size"] == 1  # recorded by the trainer
