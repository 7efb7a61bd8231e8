"""The one way the project reads a torch-pickle file (checkpoints, released weights): ``torch.load(weights_only=True)``.

A checkpoint folder is data, not code: whoever can write to it must not be able to run
anything on resume. ``weights_only=True`` unpickles tensors, containers and plain types
only, and refuses any other class or function. DeepSpeed's own checkpoint files hold four
small classes besides those (read from deepspeed 0.19.8 ``runtime/engine.py``
``_save_checkpoint``/``_save_zero_checkpoint`` and the ZeRO optimisers' ``state_dict``);
they are allowed for files under a checkpoint's ``deepspeed/`` folder, and nowhere else.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import torch

# What torch raises when a file holds anything ``weights_only`` refuses.
Refused = pickle.UnpicklingError

# Suffixes of the formats that may hold a pickle; any such file in a checkpoint is checked
# (or refused when the trainer did not write it), whatever its content claims to be.
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt"})


@functools.cache
def deepspeed_globals() -> tuple:
    """The non-plain classes a DeepSpeed 0.19 ZeRO-1/2 or bf16 checkpoint legitimately holds."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    # LossScaler/DynamicLossScaler: the ZeRO optimiser's `loss_scaler` (floats, ints, a dtype);
    # ZeroStageEnum: its `zero_stage`; fragment_address: `param_slice_mappings` (numel, start).
    return (LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address)


def load(path: str | Path, deepspeed: bool = False, mmap: bool = False):
    """``torch.load`` that can only build tensors and plain types (plus DeepSpeed's four)."""
    allowed = list(deepspeed_globals()) if deepspeed else []
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True, map_location="cpu", mmap=mmap)


def refusal(path: Path, deepspeed: bool = False) -> str | None:
    """Why ``path`` cannot be read without arbitrary unpickling, or None when it can.

    ``mmap=True`` keeps the check cheap: tensor storages are mapped, not read, so only the
    pickled structure is parsed (a multi-GB optimiser shard costs milliseconds)."""
    try:
        load(path, deepspeed=deepspeed, mmap=True)
    except Exception as err:  # noqa: BLE001 — any failure means "not loadable safely"
        return f"{path.name} cannot be read without arbitrary unpickling ({reason(err)})"
    return None


def reason(err: Exception) -> str:
    """The line of torch's long message that says what was refused (e.g. the global's name)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    telling = [line for line in lines if "GLOBAL" in line or "Unsupported" in line or "mmap" in line]
    return (telling or lines)[0][:200]
