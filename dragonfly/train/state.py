"""The training state inside a checkpoint, written and read without arbitrary unpickling.

accelerate's ``save_state``/``load_state`` pickle the scheduler and RNG states and unpickle
them in full, which is why they are not used. Here every file has a format that cannot
carry code, or is read with ``weights_only=True``:

=========================  =======================================  =========================
file                       written by                               read by
=========================  =======================================  =========================
``model.safetensors``      rank 0, ``safetensors.torch.save_model``  ``safetensors.load_model``
``optimizer.pt``           rank 0, ``torch.save(state_dict)``        ``torch.load(weights_only)``
``scheduler.json``         rank 0, ``json`` of ``state_dict()``      ``json``
``rng_<rank>.json``        every rank: python, numpy, torch, CUDA    ``json``
``deepspeed/state/*.pt``   DeepSpeed path only: the engine (all       the engine, its reads
                           ranks), model + ZeRO optimiser shards      routed to ``safe_load``
=========================  =======================================  =========================

With DDP the model and optimiser are identical on every rank, so rank 0 writes them and every
rank reads them; the RNG differs per rank, so each rank writes and reads its own.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from dragonfly import safe_load
from dragonfly.train.checkpoint import DEEPSPEED_DIR, CheckpointError

MODEL = "model.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.json"
DEEPSPEED_TAG = "state"


def rng_name(rank: int) -> str:
    return f"rng_{rank}.json"


def uses_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def unwrap(accelerator, model):
    """The model inside the engine's wrappers. ``accelerator.unwrap_model`` imports DeepSpeed
    whenever it is installed (to test for its engine class): seconds and a "Setting
    accelerator to CPU" warning in every run that never uses it. So only a DeepSpeed run goes
    through it; otherwise the wrappers are DDP's (``.module``) and torch.compile's
    (``._orig_mod``), in either order."""
    if uses_deepspeed(accelerator):
        return accelerator.unwrap_model(model)
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def model_state_dict(accelerator, model) -> dict:
    """The full model state dict; accelerate's ``get_state_dict`` unwraps as above (DeepSpeed's import)."""
    if uses_deepspeed(accelerator):
        return accelerator.get_state_dict(model)
    return unwrap(accelerator, model).state_dict()


def save(directory: Path, accelerator, model, optimizer, scheduler) -> dict[str, str]:
    """Write this rank's share of the state; every rank calls it (DeepSpeed's save is
    collective). Returns the SHA-256 of the files hashed as they were written."""
    from safetensors.torch import save_model

    hashes = {}
    main = accelerator.is_main_process
    if uses_deepspeed(accelerator):
        model.save_checkpoint(str(directory / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, save_latest=False)
    elif main:
        # save_model drops the duplicates of tied weights (safetensors refuses shared storage).
        save_model(unwrap(accelerator, model), str(directory / MODEL))
        hashes[OPTIMIZER] = _torch_save_hashed(optimizer.state_dict(), directory / OPTIMIZER)
    if main:
        hashes[SCHEDULER] = _write_json(directory / SCHEDULER, scheduler.state_dict())
    rng = rng_name(accelerator.process_index)
    hashes[rng] = _write_json(directory / rng, capture_rng())
    return hashes


def load(directory: Path, accelerator, model, optimizer, scheduler, log: Callable[[str], object]) -> None:
    """Restore what :func:`save` wrote. ``directory`` has passed ``checkpoint.problem`` (on rank
    0), so every pickle-format file in it already loaded with ``weights_only=True``."""
    if uses_deepspeed(accelerator):
        _load_deepspeed(directory, model)
    else:
        _load_plain(directory, accelerator, model, optimizer)
    scheduler.load_state_dict(json.loads((directory / SCHEDULER).read_text()))
    rng = directory / rng_name(accelerator.process_index)
    if rng.is_file():
        restore_rng(json.loads(rng.read_text()))
    else:  # more processes than the run that saved it (micro_batch may change on resume)
        log(f"{directory.name} has no {rng.name}: rank {accelerator.process_index} keeps its seeded RNG")


def _load_plain(directory: Path, accelerator, model, optimizer) -> None:
    from safetensors.torch import load_model

    if not (directory / MODEL).is_file():
        raise CheckpointError(
            f"{directory} has no {MODEL} (written by DeepSpeed?); resume it on the engine that wrote it"
        )
    unwrapped = unwrap(accelerator, model)
    load_model(
        unwrapped,
        str(directory / MODEL),
        strict=True,
        device=str(next(unwrapped.parameters()).device),
    )
    optimizer.load_state_dict(safe_load.load(directory / OPTIMIZER))


def _load_deepspeed(directory: Path, engine) -> None:
    if not (directory / DEEPSPEED_DIR / DEEPSPEED_TAG).is_dir():
        raise CheckpointError(
            f"{directory} has no {DEEPSPEED_DIR}/{DEEPSPEED_TAG} (written without "
            "DeepSpeed?); resume it on the engine that wrote it"
        )
    with _safe_reads(engine):
        path, _ = engine.load_checkpoint(
            str(directory / DEEPSPEED_DIR),
            tag=DEEPSPEED_TAG,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
    if path is None:
        raise CheckpointError(f"DeepSpeed could not load {directory / DEEPSPEED_DIR}")


@contextlib.contextmanager
def _safe_reads(engine) -> Iterator[None]:
    """Route the engine's checkpoint reads through ``safe_load`` for one load.

    DeepSpeed's ``TorchCheckpointEngine.load`` unpickles in full; every model and ZeRO
    optimiser file of a (non-MoE) load goes through ``engine.checkpoint_engine.load``, so
    replacing that one method makes DeepSpeed itself read with ``weights_only=True`` (plus
    its four classes), with no gap between a check and the real read."""
    reader = engine.checkpoint_engine
    reader.load = lambda path, map_location=None: safe_load.load(path, deepspeed=True)
    try:
        yield
    finally:
        del reader.load  # back to the class's method


def capture_rng() -> dict:
    """Every RNG a step may draw from, as JSON-able values (byte states in base64)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if torch.cuda.is_available() and len(state.get("cuda", [])) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode()


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _write_json(path: Path, value) -> str:
    data = json.dumps(value).encode()  # raises on anything but plain types: nothing else is kept
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


class _HashingWriter:
    """A write-only file that hashes the bytes on their way to disk (no read-back)."""

    def __init__(self, fh):
        self.fh, self.digest = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def _torch_save_hashed(obj, path: Path) -> str:
    with open(path, "wb") as fh:
        writer = _HashingWriter(fh)
        torch.save(obj, writer)
    return writer.digest.hexdigest()
