"""The distributed engine: accelerate everywhere, DeepSpeed ZeRO-1 on GPUs.

``make_accelerator`` is the single place that decides the engine: DeepSpeed when CUDA is
present (the paper profile on 8×H100), else plain accelerate, single- or multi-process on
gloo (``torchrun`` on a CPU). The DeepSpeed config is generated from the stage config so
batch sizes, clipping and precision cannot drift apart from it.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Iterator

import torch

from dragonfly.train.config import StageConfig


def deepspeed_config(stage: StageConfig, world_size: int) -> dict:
    """ZeRO stage-1 config for ``stage`` on ``world_size`` GPUs (optimizer and scheduler stay ours)."""
    return {
        "train_batch_size": stage.global_batch,
        "train_micro_batch_size_per_gpu": stage.micro_batch,
        "gradient_accumulation_steps": stage.accumulation(world_size),
        "gradient_clipping": stage.grad_clip,
        "zero_optimization": {
            "stage": stage.zero_stage,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": 5e8,
        },
        "bf16": {"enabled": stage.precision == "bf16"},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def make_accelerator(stage: StageConfig, use_deepspeed: bool | None = None):
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin

    cuda = torch.cuda.is_available()
    use_deepspeed = cuda if use_deepspeed is None else use_deepspeed
    plugin = None
    if use_deepspeed:
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else _env_world()
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(stage, world))
    precision = "bf16" if (stage.precision == "bf16" and cuda) else "no"
    # Accumulation is done by the trainer (no_sync on all but the last micro-batch).
    return Accelerator(cpu=not cuda, mixed_precision=precision, deepspeed_plugin=plugin)


@contextlib.contextmanager
def unprobed() -> Iterator[None]:
    """A block that handles no DeepSpeed engine runs without importing DeepSpeed.

    accelerate's ``extract_model_from_parallel``, behind ``Accelerator.unwrap_model`` and
    transformers' ``save_pretrained``, imports DeepSpeed whenever it is installed only to
    test ``isinstance(model, DeepSpeedEngine)``: seconds, and a "Setting accelerator to CPU"
    warning, in runs that never use it. Inside the block that probe says "not installed"; a
    model in no DeepSpeed engine unwraps the same. Where DeepSpeed is loaded already (its
    own runs) nothing changes."""
    import accelerate.utils.other as other

    probe = getattr(other, "is_deepspeed_available", None)
    if probe is None or "deepspeed" in sys.modules:  # another accelerate layout (then only slower), or paid for
        yield
        return
    other.is_deepspeed_available = lambda: False
    try:
        yield
    finally:
        other.is_deepspeed_available = probe


def _env_world() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_command(
    stage: str,
    profile: str = "paper",
    nodes: int = 1,
    gpus_per_node: int = 8,
    master_addr: str = "$MASTER_ADDR",
    node_rank: str = "$NODE_RANK",
    port: int = 29500,
    extra: list[str] | None = None,
) -> str:
    """The torchrun line that runs ``stage`` on ``nodes`` × ``gpus_per_node`` GPUs."""
    parts = ["torchrun", f"--nnodes={nodes}", f"--nproc_per_node={gpus_per_node}"]
    if nodes > 1:
        parts += [f"--node_rank={node_rank}", f"--master_addr={master_addr}", f"--master_port={port}"]
    parts += ["-m", "dragonfly.cli", "train", "--stage", stage, "--profile", profile, "--resume", *(extra or [])]
    return " ".join(p if p.startswith("$") or "=$" in p else shlex.quote(p) for p in parts)
