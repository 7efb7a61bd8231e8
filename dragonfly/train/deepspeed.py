"""The distributed engine: accelerate everywhere, DeepSpeed ZeRO-1 on GPUs.

``make_accelerator`` is the single place that decides the engine, from the stage's
``engine`` setting: ``auto`` is DeepSpeed when CUDA is present (the paper profile on
8×H100), else plain accelerate, single- or multi-process on gloo (``torchrun`` on a CPU);
``deepspeed`` forces ZeRO on a CPU too (gloo). The DeepSpeed config is generated from the
stage config so batch sizes, clipping and precision cannot drift apart from it.
docs/deepspeed.md says how accumulation, clipping and the logged norm match across engines.
"""

from __future__ import annotations

import shlex

import torch

from dragonfly.train.config import StageConfig


def deepspeed_config(stage: StageConfig, world_size: int, bf16: bool | None = None) -> dict:
    """ZeRO stage-1 config for ``stage`` on ``world_size`` GPUs (optimizer and scheduler stay ours).
    ``bf16``: the precision the run really uses (default: the stage's)."""
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
        "bf16": {"enabled": stage.precision == "bf16" if bf16 is None else bf16},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def engine_of(stage: StageConfig) -> str:
    """The engine ``stage`` runs on: ``deepspeed`` or ``plain`` (``auto``: DeepSpeed where CUDA is)."""
    if stage.engine == "auto":
        return "deepspeed" if torch.cuda.is_available() else "plain"
    return stage.engine


def make_accelerator(stage: StageConfig):
    """The Accelerator for ``stage``, which owns gradient accumulation on both engines.

    ``gradient_accumulation_steps`` goes to the Accelerator, and the trainer wraps every
    micro-batch in ``accelerator.accumulate``, so ``sync_gradients`` is true on the last
    micro-batch of a step only. On the plain engine ``accelerator.backward`` divides the loss
    by the steps once; on DeepSpeed it does not, the engine does (by its config's equal
    ``gradient_accumulation_steps``), and the engine's clip + optimiser step runs inside that
    last backward. Dividing in the trainer as well, or building the Accelerator without the
    steps (``sync_gradients`` always true: an engine step per micro-batch), breaks DeepSpeed.
    """
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    cuda = torch.cuda.is_available()
    deepspeed = engine_of(stage) == "deepspeed"
    if deepspeed:
        _single_process_env()
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else _env_world()
    precision = "bf16" if (stage.precision == "bf16" and cuda) else "no"
    plugin, handlers = None, []
    if deepspeed:
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(stage, world, bf16=precision == "bf16"))
        if not cuda:
            # accelerate gives DeepSpeed no backend off CUDA, and then counts one process.
            handlers.append(InitProcessGroupKwargs(backend="gloo"))
    return Accelerator(
        # cpu=True would make accelerate drop the DeepSpeed plugin; without CUDA the device is the CPU anyway.
        cpu=not cuda and not deepspeed,
        mixed_precision=precision,
        deepspeed_plugin=plugin,
        gradient_accumulation_steps=stage.accumulation(world),
        kwargs_handlers=handlers,
    )


def _single_process_env() -> None:
    """DeepSpeed reads its rank from the environment (else it tries MPI): a run started
    without torchrun is rank 0 of 1, on a free local port."""
    import os

    if "LOCAL_RANK" in os.environ:
        return
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(port))


def _env_world() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


# How long torchrun lets its workers finish the step and save after it forwards a SIGTERM,
# before it kills them (its default, 30 s, is less than a paper-profile step and ZeRO save).
SIGTERM_GRACE_S = 600


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
    parts += [f"--shutdown-timeout={SIGTERM_GRACE_S}"]
    if nodes > 1:
        parts += [f"--node_rank={node_rank}", f"--master_addr={master_addr}", f"--master_port={port}"]
    parts += ["-m", "dragonfly.cli", "train", "--stage", stage, "--profile", profile, "--resume", *(extra or [])]
    return " ".join(p if p.startswith("$") or "=$" in p else shlex.quote(p) for p in parts)
