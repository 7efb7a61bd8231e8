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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from dragonfly.errors import CheckpointError  # noqa: F401  (re-exported: raised here, caught by the trainer)
from dragonfly.train import safe_load

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
FORMAT = 2  # 1: accelerate's pickled state with sizes only (refused: it needs unpickling)
DEEPSPEED_DIR = "deepspeed"  # written by DeepSpeed's engine; its .pt files may hold 4 DS classes
_NAME = re.compile(r"^step-(\d{6,})$")
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


def write_manifest(directory: Path, hashes: dict[str, str] | None = None) -> None:
    """Size and SHA-256 of every file. ``hashes`` are the digests computed while writing (no
    second read); any other file (safetensors, DeepSpeed shards, other ranks' files) is hashed
    here, right after it was written, so it is read back from the page cache, not the disk."""
    hashes = hashes or {}
    files = {}
    for name in _files(directory):
        path = directory / name
        files[name] = {"size": path.stat().st_size, "sha256": hashes.get(name) or sha256_file(path)}
    (directory / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}, indent=1))


def _read_manifest(directory: Path) -> tuple[dict | None, str | None]:
    """The manifest's file table, or why there is none usable."""
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
    return files, None


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
    files, why = _read_manifest(directory)
    if why:
        return why
    if STATE not in files:
        return f"no {STATE}"
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


def resume_point(root: Path, log: Callable[[str], object] = print) -> Path | None:
    """The checkpoint to resume from; None when there is none at all (a first run). When there
    are checkpoints but none passes, stop: silently training from scratch would throw away the
    run the user asked to continue."""
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
    return found


def read_state(directory: Path) -> dict:
    return json.loads((directory / STATE).read_text())


def begin(root: Path, step: int) -> Path:
    """A fresh temporary directory for the checkpoint of ``step``."""
    tmp = root / (checkpoint_name(step) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, state: dict, keep_last: int, hashes: dict[str, str] | None = None) -> Path:
    """Write the state and manifest, fsync, rename into place, prune old checkpoints."""
    text = json.dumps(state, indent=1).encode()
    (tmp / STATE).write_bytes(text)
    write_manifest(tmp, {**(hashes or {}), STATE: hashlib.sha256(text).hexdigest()})
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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
