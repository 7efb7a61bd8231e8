"""Atomic, self-checking training checkpoints: the directory, its manifest, its verification.

A checkpoint is a directory ``step-000123`` holding the training state (see
:mod:`dragonfly.train.state` for what each file is) and ``trainer_state.json`` (step, data
position, MLflow run, config). It is written as ``step-000123.tmp`` and renamed only when
complete, with a manifest of every file's size and SHA-256 written last, so a crash mid-write
leaves either the previous checkpoint or a ``.tmp`` directory that resume ignores. On resume
a checkpoint is used only when every file matches the manifest (size first, cheap, then the
hash), every JSON/safetensors file parses, every pickle-format file loads with
``weights_only=True``, and no pickle-format file is there that the trainer did not write;
otherwise resume falls back to the checkpoint before it, naming the file.

The manifest is the completion marker, and it is checked, not merely present: on a bucket
mounted with SkyPilot's ``MOUNT_CACHED`` every file is uploaded after it is closed, in no
fixed order, so after a preemption the newest checkpoint may hold the manifest but not yet
the weights (or the reverse). The sizes and hashes make it fail the check either way. The
manifest also records the world size that wrote it: every rank's own files must be listed
(on a multi-node run another node's files reach rank 0's view of the bucket only once they
are uploaded), and DeepSpeed's per-rank ZeRO shards resume only on that world size.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dragonfly import safe_load
from dragonfly.errors import CheckpointError

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
FORMAT = 2  # 1: accelerate's pickled state with sizes only (refused: it needs unpickling)
DEEPSPEED_DIR = "deepspeed"  # written by DeepSpeed's engine; its .pt files may hold 4 DS classes
_NAME = re.compile(r"^step-(\d{6,})$")
# DeepSpeed's ZeRO optimiser shard of one data-parallel rank ("bf16_zero_pp_rank_3_mp_rank_00_optim_states.pt").
_ZERO_SHARD = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")
# How long rank 0 waits for other ranks' files to appear before it writes the manifest. Only a
# multi-node run on a bucket mounted per node ever waits (single node: the files are local).
RANK_FILES_WAIT = 120.0
_CHUNK = 16 * 2**20


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path, hashes: dict[str, str] | None = None, world_size: int | None = None) -> None:
    """Size and SHA-256 of every file. ``hashes`` are the digests computed while writing (no
    second read); any other file (safetensors, DeepSpeed shards, other ranks' files) is hashed
    here, right after it was written, so it is read back from the page cache, not the disk.
    ``world_size``: the processes that wrote it (then each one's files must be listed)."""
    hashes = hashes or {}
    files = {}
    for name in _files(directory):
        path = directory / name
        files[name] = {"size": path.stat().st_size, "sha256": hashes.get(name) or sha256_file(path)}
    manifest = {"format": FORMAT, "files": files}
    if world_size is not None:
        manifest["world_size"] = world_size
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _read_manifest(directory: Path) -> tuple[dict | None, str | None]:
    """The manifest (its file table checked), or why there is none usable."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None, "no manifest (incomplete write)"
    try:
        data = json.loads(manifest.read_text())
        files = data["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        return None, f"{MANIFEST} is unreadable ({type(err).__name__}: {str(err)[:100]})"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None, (
            f"{MANIFEST}: written by an older dragonfly (accelerate's pickled state, which resume no longer unpickles)"
        )
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return None, f"{MANIFEST} is unreadable (bad file table)"
    return data, None


def _shard_ranks(names) -> set[int]:
    return {int(m.group(1)) for name in names if (m := _ZERO_SHARD.search(name))}


def _missing_rank(names, world_size) -> str | None:
    """The first rank whose own files are not among ``names`` (its RNG state; under ZeRO its
    optimiser shard too), for a checkpoint written by ``world_size`` processes."""
    if not isinstance(world_size, int):  # written before the world size was recorded
        return None
    names = set(names)
    shards = _shard_ranks(names)
    for rank in range(world_size):
        if f"rng_{rank}.json" not in names:  # state.rng_name (state imports this module, not the reverse)
            return f"rank {rank}'s rng_{rank}.json"
        if shards and rank not in shards:
            return f"rank {rank}'s ZeRO optimiser shard"
    return None


def _unlisted_pickles(directory: Path, files: dict) -> str | None:
    for name in _files(directory):
        if name not in files and Path(name).suffix in safe_load.PICKLE_SUFFIXES:
            return f"{name} is not in the manifest (not written by the trainer) and may hold a pickle"
    return None


def _size_mismatch(directory: Path, files: dict) -> str | None:
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            return f"missing {name}"
        if path.stat().st_size != entry.get("size"):
            return f"{name} is {path.stat().st_size} bytes, manifest says {entry.get('size')}"
    return None


def _hash_mismatch(directory: Path, files: dict) -> str | None:
    for name, entry in files.items():
        if sha256_file(directory / name) != entry.get("sha256"):
            return f"{name} does not match its SHA-256 in the manifest (changed after it was written)"
    return None


def _unreadable(directory: Path, files: dict) -> str | None:
    """Each file parses as what its suffix says, and no pickle needs more than weights_only."""
    for name in files:
        path, suffix = directory / name, Path(name).suffix
        if suffix == ".json":
            try:
                json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as err:
                return f"{name} is not valid JSON ({str(err)[:100]})"
        elif suffix == ".safetensors":
            if why := _safetensors_problem(path):
                return f"{name} is not a valid safetensors file ({why})"
        elif suffix in safe_load.PICKLE_SUFFIXES and (
            why := safe_load.refusal(path, deepspeed=name.startswith(DEEPSPEED_DIR + "/"))
        ):
            return why
    return None


def _safetensors_problem(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:  # parses and bounds-checks the header only
            fh.keys()
    except Exception as err:  # noqa: BLE001 — whatever the parser rejects, the file is unusable
        return str(err)[:100]
    return None


def problem(directory: Path) -> str | None:
    """Why ``directory`` is not a usable checkpoint, or None when it is. Cheap checks first."""
    manifest, why = _read_manifest(directory)
    if why:
        return why
    files = manifest["files"]
    if STATE not in files:
        return f"no {STATE}"
    if missing := _missing_rank(files, manifest.get("world_size")):
        return (
            f"{missing} is not in the manifest of a {manifest['world_size']}-process checkpoint "
            "(another node's file, not yet uploaded when rank 0 committed?)"
        )
    for check in (_unlisted_pickles, _size_mismatch, _hash_mismatch, _unreadable):
        if why := check(directory, files):
            return why
    return None


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_valid(root: Path, log: Callable[[str], object] = print) -> Path | None:
    """The newest checkpoint that passes its checks; broken ones are reported and skipped."""
    for _, path in reversed(list_checkpoints(root)):
        why = problem(path)
        if why is None:
            return path
        log(f"skipping checkpoint {path}: {why}")
    return None


def world_size_problem(directory: Path, world_size: int) -> str | None:
    """Why ``directory`` cannot resume on ``world_size`` processes, or None. The plain
    checkpoint is world-size independent: rank 0 writes the whole model and optimiser state
    (identical on every rank under DDP), each rank only its RNG, and the batches are a
    function of the step, not of the world size (a rank with no saved RNG keeps its seeded
    one). DeepSpeed ZeRO partitions the optimiser state: each rank loads the shard of its own
    rank, which does not exist, or holds another partition, on another world size."""
    manifest, why = _read_manifest(directory)
    if why:
        return None  # not a checkpoint that resume would use at all
    shards = _shard_ranks(manifest["files"])
    if not shards or len(shards) == world_size:
        return None
    return (
        f"{directory} holds DeepSpeed ZeRO optimiser shards of {len(shards)} processes (one per rank) "
        f"and cannot resume on {world_size}: relaunch on {len(shards)} processes (nodes × GPUs per node)"
    )


def _running_world() -> int:
    """The world size of this process's torch.distributed group (1 when there is none)."""
    if "torch.distributed" not in sys.modules:  # never imported: no process group
        return 1
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def resume_point(root: Path, log: Callable[[str], object] = print, world_size: int | None = None) -> Path | None:
    """The checkpoint to resume from; None when there is none at all (a first run). When there
    are checkpoints but none passes, stop: silently training from scratch would throw away the
    run the user asked to continue. A checkpoint that cannot resume on ``world_size`` (default:
    this process group's) stops too: an older one was written by the same run."""
    skipped: list[str] = []

    def note(message: str) -> None:
        skipped.append(message)
        log(message)

    found = latest_valid(root, note)
    if found is None and skipped:
        raise CheckpointError(
            f"--resume: no usable checkpoint in {root} ({'; '.join(skipped)})",
            hint=f"restore a good copy of one, or delete {root} to train from the start",
        )
    if found is not None and (why := world_size_problem(found, world_size or _running_world())):
        raise CheckpointError(f"--resume: {why}", hint=f"or train into a fresh --out (or move {root} aside)")
    return found


def read_state(directory: Path) -> dict:
    return json.loads((directory / STATE).read_text())


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (a full disk): one line for a person, and
    ``transient`` for the flow, which retries it (space may come back; the retry resumes)."""

    transient = True


def _write_failure(err: BaseException) -> str | None:
    """'disk full' / 'cannot write (...)' when ``err`` is a failed write: an OSError, or what
    safetensors (SafetensorError) and torch.save (RuntimeError) raise for one; else None."""
    text = str(err)
    full = getattr(err, "errno", None) == errno.ENOSPC or "No space left" in text or "StorageFull" in text
    if full:
        return "disk full"
    writer = type(err).__name__ == "SafetensorError" or (isinstance(err, RuntimeError) and "write" in text)
    return (
        f"cannot write ({text.splitlines()[0] if text else type(err).__name__})"
        if isinstance(err, OSError) or writer
        else None
    )


@contextlib.contextmanager
def writing(root: Path, step: int) -> Iterator[None]:
    """Around the save of ``step``: a failed write (a full disk) removes its temporary folder
    and becomes one error naming the last good checkpoint, which ``--resume`` continues."""
    try:
        yield
    except Exception as err:
        why = _write_failure(err)
        if why is None:
            raise
        shutil.rmtree(root / (checkpoint_name(step) + ".tmp"), ignore_errors=True)
        good = list_checkpoints(root)
        last = good[-1][1] if good else "none: nothing was saved yet"
        raise CheckpointWriteError(
            f"{why} while saving step {step} in {root}; the last good checkpoint is {last}",
            hint="free space (or train into another --out), then --resume",
        ) from None


def begin(root: Path, step: int) -> Path:
    """A fresh temporary directory for the checkpoint of ``step``."""
    tmp = root / (checkpoint_name(step) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, state: dict, keep_last: int, hashes: dict[str, str] | None = None) -> Path:
    """Write the state and manifest (last), fsync, rename into place, prune old checkpoints."""
    text = json.dumps(state, indent=1).encode()
    (tmp / STATE).write_bytes(text)
    world = _running_world()
    _await_rank_files(tmp, world)
    write_manifest(tmp, {**(hashes or {}), STATE: hashlib.sha256(text).hexdigest()}, world_size=world)
    for path in tmp.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(final.parent)  # the rename itself survives a power cut only once its directory is synced
    if keep_last > 0:
        for _, old in list_checkpoints(final.parent)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _await_rank_files(tmp: Path, world_size: int, timeout: float = RANK_FILES_WAIT) -> None:
    """Wait until every rank's files are visible here. The ranks have closed them (a barrier
    precedes the commit), but on a bucket mounted per node another node's files appear only
    once uploaded. After ``timeout`` the manifest is written anyway: it then lacks that
    rank's files, and resume skips the checkpoint naming them."""
    deadline = time.monotonic() + timeout
    while _missing_rank(_files(tmp), world_size) and time.monotonic() < deadline:
        time.sleep(1.0)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
