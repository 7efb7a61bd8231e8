"""A few trainer steps through the real `dragonfly train` command, a checkpoint, and a resume
from it that must match the uninterrupted run bit for bit (benchmarks/gpu_check.py).

The workspace is the tiny profile on freshly generated synthetic data (a handful of
images). The reference run trains STEPS steps and saves every SAVE_EVERY; the resumed run
starts from a copy of the reference's first checkpoint (its weights, AdamW state,
scheduler and every RNG, CUDA's included) and trains the rest. Both runs' losses and final
weights are compared exactly. If they differ, a second uninterrupted run says whether the
kernels themselves are not repeatable (then resume is not to blame).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from gpu_check_models import PARAMS

STEPS, SAVE_EVERY = 4, 2
STAGE = "general2"


def workspace(root: Path) -> Path:
    """Synthetic general data and its mixture under `root`, and a params.yaml pointing there."""
    from dragonfly.pipeline import prepare_data

    params = yaml.safe_load(PARAMS.read_text())
    data = params["data"]
    general = next(s for s in data["synth"] if s["variant"] == "general")
    data["synth"] = [general | {"n_train": 8, "n_validation": 2, "n_test": 2}]
    data["root"], data["out_dir"] = str(root / "data"), str(root / "data" / "mixtures")
    data["mixtures"] = {"tiny_general": data["mixtures"]["tiny_general"]}
    tiny = params["profiles"]["tiny"]
    tiny["runs_dir"] = str(root / "runs")
    tiny["model"]["tiny"]["vision_from"] = None  # the pretrained tiny tower is another pipeline step
    path = root / "params.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    prepare_data(path, ["tiny_general"])
    return path


def overrides(cuda: bool) -> list[str]:
    """Tiny budgets; bf16 on CUDA; the plain engine (DeepSpeed is not on the GPU machine)."""
    return [
        "init_from=init",
        f"max_steps={STEPS}",
        f"save_every={SAVE_EVERY}",
        "global_batch=4",
        "micro_batch=2",
        "log_every=1",
        "warmup_ratio=0",
        "lr=1e-3",
        "engine=plain",
        f"precision={'bf16' if cuda else 'fp32'}",
    ]


def train(params: Path, out: Path, cuda: bool, resume: bool = False) -> float:
    """One `dragonfly train` process; returns its seconds. Fails with its output's tail."""
    cmd = [sys.executable, "-m", "dragonfly.cli", "train", "--stage", STAGE, "--params", str(params)]
    cmd += ["--out", str(out), "--no-progress", *(["--resume"] if resume else []), *overrides(cuda)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DRAGONFLY_TRACKING": "0"}
    began = time.perf_counter()
    done = subprocess.run(cmd, cwd=params.parent, env=env, capture_output=True, text=True, timeout=150)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - began


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def weight_difference(a: Path, b: Path) -> float:
    """The largest absolute difference between two final models' weights (0.0: identical)."""
    from safetensors.torch import load_file

    left, right = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    if left.keys() != right.keys():
        return float("inf")
    return max(float((left[k].double() - right[k].double()).abs().max()) for k in left)


def compare(reference: Path, other: Path) -> dict:
    ref, got = losses(reference), losses(other)
    later = [s for s in ref if s > SAVE_EVERY]
    return {
        "loss_max_diff": max((abs(ref[s] - got.get(s, float("nan"))) for s in later), default=float("nan")),
        "weights_max_diff": weight_difference(reference, other),
        "steps": sorted(got),
    }


def trainer_check(root: Path, cuda: bool) -> dict:
    """Reference run, resume from its first checkpoint, and the comparison."""
    from dragonfly.train.checkpoint import checkpoint_name

    params = workspace(root)
    reference, resumed = root / "reference", root / "resumed"
    seconds = {"reference": train(params, reference, cuda)}
    first = checkpoint_name(SAVE_EVERY)
    rng = json.loads((reference / "checkpoints" / first / "rng_0.json").read_text())
    shutil.copytree(reference / "checkpoints" / first, resumed / "checkpoints" / first)
    seconds["resumed"] = train(params, resumed, cuda, resume=True)
    result = compare(reference, resumed)
    result["bit_exact"] = result["loss_max_diff"] == 0.0 and result["weights_max_diff"] == 0.0
    result["verdict"] = "resume is bit-exact"
    if not result["bit_exact"]:  # is it resume, or do the kernels differ run to run?
        again = root / "repeat"
        seconds["repeat"] = train(params, again, cuda)
        result["repeat_run"] = compare(reference, again)
        result["verdict"] = (
            "resume differs while two uninterrupted runs agree: resume loses some state"
            if result["repeat_run"]["weights_max_diff"] == 0.0
            else "two uninterrupted runs differ too: the kernels are not deterministic, so resume cannot be bit-exact"
        )
    return result | {
        "steps": STEPS,
        "checkpoint": first,
        "cuda_rng_in_checkpoint": "cuda" in rng if cuda else None,  # a CPU run has none to save
        "precision": "bf16" if cuda else "fp32",
        "engine": "plain",
        "seconds": seconds,
        "reference_losses": losses(reference),
    }
