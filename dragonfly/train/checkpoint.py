"""Atomic, self-checking training checkpoints.

A checkpoint is a directory ``step-000123`` holding the accelerate state (model, optimiser,
per-rank RNG), the scheduler and ``trainer_state.json`` (step, data position, MLflow run).
It is written as ``step-000123.tmp`` and renamed only when complete, with a manifest of
file sizes written last, so a crash mid-write leaves either the previous checkpoint or a
``.tmp`` directory that resume ignores; a file truncated later fails the manifest check
and resume falls back to the checkpoint before it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{6,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def write_manifest(directory: Path) -> None:
    files = {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def problem(directory: Path) -> str | None:
    """Why ``directory`` is not a usable checkpoint, or None when it is."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return "no manifest (incomplete write)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as err:
        return f"unreadable manifest: {err}"
    for name, size in files.items():
        path = directory / name
        if not path.is_file():
            return f"missing {name}"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, manifest says {size}"
    if STATE not in files:
        return f"no {STATE}"
    return None


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_valid(root: Path, log=print) -> Path | None:
    """The newest checkpoint that passes its manifest; broken ones are reported and skipped."""
    for _, path in reversed(list_checkpoints(root)):
        why = problem(path)
        if why is None:
            return path
        log(f"skipping checkpoint {path}: {why}")
    return None


def read_state(directory: Path) -> dict:
    return json.loads((directory / STATE).read_text())


def begin(root: Path, step: int) -> Path:
    """A fresh temporary directory for the checkpoint of ``step``."""
    tmp = root / (checkpoint_name(step) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, state: dict, keep_last: int) -> Path:
    """Write the state and manifest, fsync, rename into place, prune old checkpoints."""
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    write_manifest(tmp)
    for path in tmp.rglob("*"):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep_last > 0:
        for _, old in list_checkpoints(final.parent)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final
