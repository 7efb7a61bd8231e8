"""A checkpoint folder is data: nothing planted in it runs on --resume, a damaged file is
detected even at the same size, and the NaN guard never saves a state it did not see train.

One short run (8 steps, checkpoints at 4 and 8) is trained through the real `dragonfly`
command; each case works on a copy of it and resumes through the command again."""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dragonfly import safe_load
from dragonfly.errors import DragonflyError
from dragonfly.train import checkpoint
from dragonfly.train.checkpoint import CheckpointError
from dragonfly.train.trainer import TrainingError

RUN = ["train", "--stage", "general2", "--params", "params.yaml"]
CFG = ["init_from=init", "max_steps=8", "save_every=4", "global_batch=4", "micro_batch=2"]
NEWEST, PREVIOUS = "step-000008", "step-000004"
# Every file the trainer writes into a checkpoint on the CPU path (see the coverage test).
FILES = [
    "manifest.json",
    "model.safetensors",
    "optimizer.pt",
    "rng_0.json",
    "scheduler.json",
    "trainer_state.json",
]


class Payload:
    """Unpickling it creates ``marker``: the proof that code from the checkpoint ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def payload_bytes(marker: pathlib.Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"state": Payload(marker)}, buffer)  # what torch.load(weights_only=False) would run
    return buffer.getvalue()


@pytest.fixture(scope="module")
def trained(workspace, run_cli):
    out = workspace / "runs" / "safety"
    run_cli(*RUN, "--out", str(out), *CFG, cwd=workspace)
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    shutil.rmtree(out / "final")  # a resumed run writes it again
    return out


def resume(workspace, out) -> tuple[int, str]:
    # A wide console: rich would otherwise wrap long paths at 80 columns, mid-name.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DRAGONFLY_TRACKING": "0", "COLUMNS": "10000"}
    cmd = [sys.executable, "-m", "dragonfly.cli", *RUN, "--out", str(out), "--resume", *CFG]
    result = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


def resume_in_process(workspace, out, monkeypatch, capsys) -> tuple[int, str]:
    """``resume`` through the console entry point in this process: the same checks and
    training, without a new process's start-up (~5 s) for each planted file."""
    from dragonfly.cli import main

    monkeypatch.chdir(workspace)
    monkeypatch.setenv("DRAGONFLY_TRACKING", "0")
    monkeypatch.setenv("COLUMNS", "10000")
    capsys.readouterr()
    try:
        main([*RUN, "--out", str(out), "--resume", *CFG])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_payload_is_live(tmp_path):
    """The planted bytes do run code when unpickled, so the cases below are not vacuous."""
    marker = tmp_path / "MARKER"
    (tmp_path / "payload.pt").write_bytes(payload_bytes(marker))
    torch.load(tmp_path / "payload.pt", weights_only=False)  # the unsafe load the trainer must never do
    assert marker.exists()


def test_cases_cover_every_checkpoint_file(trained):
    assert sorted(p.name for p in (trained / "checkpoints" / NEWEST).iterdir()) == FILES


@pytest.mark.parametrize("name", [*FILES, "extra.pkl", "extra.pkl (unlisted)"])
def test_planted_pickle_never_runs(workspace, run_copy, tmp_path, name, monkeypatch, capsys):
    marker = tmp_path / "MARKER"
    newest = run_copy / "checkpoints" / NEWEST
    target = name.split(" ")[0]
    (newest / target).write_bytes(payload_bytes(marker))
    if name not in ("manifest.json", "extra.pkl (unlisted)"):
        checkpoint.write_manifest(newest)  # sizes and hashes match: the manifest check cannot save us
    code, output = resume_in_process(workspace, run_copy, monkeypatch, capsys)
    assert not marker.exists(), f"code planted in {target} ran on --resume"
    assert target in output, output[-3000:]
    fell_back = code == 0 and f"skipping checkpoint {newest}" in output and "at step 4/8" in output
    stopped = code != 0 and "no usable checkpoint" in output  # the CheckpointError
    assert fell_back or stopped, output[-3000:]


def test_same_size_corruption_falls_back(workspace, run_copy):
    weights = run_copy / "checkpoints" / NEWEST / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10  # one bit of the last tensor's data; the size and the header stay valid
    weights.write_bytes(bytes(data))
    code, output = resume(workspace, run_copy)
    assert code == 0, output[-3000:]
    assert "model.safetensors does not match its SHA-256" in output and "at step 4/8" in output


def test_resume_into_nan_weights_saves_nothing(workspace, run_copy):
    # A checkpoint at step 6 whose weights are NaN, with a correct manifest: intact, just bad.
    # (Made from step 4; step 8, the end of this run, goes, so resume has steps to train.)
    root = run_copy / "checkpoints"
    shutil.rmtree(root / NEWEST)
    bad = root / "step-000006"
    shutil.copytree(root / PREVIOUS, bad)
    state = checkpoint.read_state(bad)
    (bad / checkpoint.STATE).write_text(json.dumps({**state, "step": 6}))
    with safe_open(bad / "model.safetensors", "pt") as fh:
        metadata = fh.metadata()
    weights = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in load_file(bad / "model.safetensors").items()
    }
    save_file(weights, bad / "model.safetensors", metadata=metadata)
    checkpoint.write_manifest(bad)
    manifest = (bad / checkpoint.MANIFEST).read_bytes()
    code, output = resume(workspace, run_copy)
    assert "resumed general2" in output and "at step 6/8" in output, output[-3000:]
    assert code != 0 and "non-finite loss at step 6" in output
    assert "nothing was saved" in output and "saved the last good state" not in output
    assert f"go back to {root / PREVIOUS}" in output  # the checkpoint to go back to
    assert (bad / checkpoint.MANIFEST).read_bytes() == manifest  # not rewritten as "good"
    assert [p.name for _, p in checkpoint.list_checkpoints(root)] == [PREVIOUS, "step-000006"]


def test_all_checkpoints_bad_stops_naming_the_files(run_copy, tmp_path):
    root = run_copy / "checkpoints"
    for name in (PREVIOUS, NEWEST):
        (root / name / "optimizer.pt").write_bytes(payload_bytes(tmp_path / "MARKER"))
        checkpoint.write_manifest(root / name)
    with pytest.raises(CheckpointError, match=rf"{NEWEST}.*optimizer.pt.*{PREVIOUS}.*optimizer.pt"):
        checkpoint.resume_point(root, lambda _: None)
    assert not (tmp_path / "MARKER").exists()
    assert checkpoint.resume_point(tmp_path / "nothing-here") is None  # a first run starts afresh


def test_errors_are_dragonfly_errors():
    assert issubclass(CheckpointError, DragonflyError) and issubclass(TrainingError, DragonflyError)


# The DeepSpeed path (CUDA only) hands checkpoint files to the engine, which reads them with
# weights_only=False; checkpoint.problem() loads each first with weights_only=True.


def test_weights_only_check_refuses_payloads_and_accepts_tensors(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "evil.pt").write_bytes(payload_bytes(marker))
    torch.save({"module": {"w": torch.ones(2)}, "step": 3, "shape": torch.Size([2])}, tmp_path / "good.pt")
    why = safe_load.refusal(tmp_path / "evil.pt", deepspeed=True)
    assert why is not None and "evil.pt" in why and "GLOBAL" in why
    assert safe_load.refusal(tmp_path / "good.pt") is None
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02}q\x00.")  # a raw pickle: not what torch.save writes
    assert safe_load.refusal(tmp_path / "legacy.pt") is not None
    assert not marker.exists()


def test_deepspeed_classes_are_allowed_only_under_deepspeed(tmp_path):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    shard = {
        "optimizer_state_dict": {
            "loss_scaler": LossScaler(1.0),
            "zero_stage": ZeroStageEnum(1),
            "param_slice_mappings": [{"w": fragment_address(numel=2, start=0)}],
        }
    }
    ckpt = tmp_path / "step-000001"
    for name in ("deepspeed/state/zero_pp_rank_0_mp_rank_00_optim_states.pt", "optimizer.pt"):
        (ckpt / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save(shard, ckpt / name)
    (ckpt / "trainer_state.json").write_text("{}")
    checkpoint.write_manifest(ckpt)
    why = checkpoint.problem(ckpt)
    assert why is not None and why.startswith("optimizer.pt") and "LossScaler" in why
    (ckpt / "optimizer.pt").unlink()
    checkpoint.write_manifest(ckpt)
    assert checkpoint.problem(ckpt) is None


@pytest.mark.slow
def test_real_deepspeed_checkpoint_passes_the_check(tmp_path):
    """A ZeRO-1 checkpoint written by DeepSpeed's engine on CPU (gloo, one process): its files
    need exactly the allowed classes (and fail the check without them)."""
    pytest.importorskip("deepspeed")
    script = tmp_path / "write.py"
    script.write_text(_DEEPSPEED_WRITER)
    env = {
        **os.environ,
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29517",
        "TORCH_EXTENSIONS_DIR": str(_repo() / ".torch_extensions"),
    }
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ds"), str(tmp_path / "MARKER")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted((tmp_path / "ds" / "deepspeed" / "state").glob("*.pt"))
    assert [f.name for f in files] == [
        "mp_rank_00_model_states.pt",
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ]
    for path in files:
        assert safe_load.refusal(path, deepspeed=True) is None
    assert "LossScaler" in safe_load.refusal(files[1], deepspeed=False)
    # The engine itself read both files back through safe_load, then refused a planted payload
    # (the writer script loads, plants, loads again; see _DEEPSPEED_WRITER).
    assert "clean load ok" in result.stdout and "payload refused" in result.stdout
    assert not (tmp_path / "MARKER").exists()


def _repo() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[2]


_DEEPSPEED_WRITER = """
import sys, torch, deepspeed
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
config = {"train_batch_size": 2, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
          "gradient_clipping": 1.0, "zero_optimization": {"stage": 1}, "bf16": {"enabled": False},
          "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=config)
engine.backward(engine(torch.randn(2, 8)).sum())
engine.step()
engine.save_checkpoint(sys.argv[1] + "/deepspeed", tag="state", save_latest=False)

import pathlib
from dragonfly.train import state
saved = [p.detach().clone() for p in engine.module.parameters()]
for p in engine.module.parameters():
    p.data.zero_()
state._load_deepspeed(pathlib.Path(sys.argv[1]), engine)
assert all(torch.equal(a, b) for a, b in zip(saved, engine.module.parameters()))
assert "load" not in vars(engine.checkpoint_engine)  # the engine's own reader is back
print("clean load ok")

class Payload:
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(sys.argv[2]),))

import shutil
planted = pathlib.Path(sys.argv[1] + "-planted")
shutil.copytree(sys.argv[1], planted)
torch.save({"optimizer_state_dict": Payload()}, planted / "deepspeed/state/zero_pp_rank_0_mp_rank_00_optim_states.pt")
try:
    state._load_deepspeed(planted, engine)
except Exception as err:
    print("payload refused:", type(err).__name__)
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 5 MB file system: room for two small checkpoints, not for a third (root mounts it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5M", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_while_saving_names_the_last_good_checkpoint_and_leaves_no_partial_one(
    workspace, run_cli, small_disk
):
    out = small_disk / "run"
    args = ["train", "--stage", "general1", "--out", str(out), "max_steps=6", "save_every=1", "keep_last=0"]
    result = run_cli(*args, "global_batch=2", "micro_batch=2", cwd=workspace, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    saved = checkpoint.list_checkpoints(out / "checkpoints")
    assert saved and lines[0] == (
        f"error: disk full while saving step {saved[-1][0] + 1} in {out / 'checkpoints'}; "
        f"the last good checkpoint is {saved[-1][1]}"
    )
    assert not list((out / "checkpoints").glob("*.tmp"))  # the partial one is gone, space is free again
    assert checkpoint.problem(saved[-1][1]) is None
