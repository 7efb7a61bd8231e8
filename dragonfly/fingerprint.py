"""The one skip rule of the pipeline: a step is skipped when the fingerprint it would record
matches the one its output already records.

A fingerprint hashes the step's resolved configuration, the fingerprints (or content
hashes) of its inputs, and the code version. Inputs that are themselves step outputs are
named by *their* recorded fingerprint, so a chain of multi-GB checkpoints is never
re-read to decide a skip.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dragonfly.files import atomic_write_json

RECORD = "fingerprint.json"
_PACKAGE = Path(__file__).resolve().parent


@functools.cache
def code_version(parts: tuple[str, ...] = ()) -> str:
    """sha256 of the package sources a step runs (``parts``: files or folders relative to
    the package; all of it when empty). An edit to them is a new version, which a git
    commit id would miss for uncommitted changes; an edit elsewhere (the CLI, the report)
    retrains nothing."""
    paths = [_PACKAGE / part for part in parts] or [_PACKAGE]
    files = sorted({f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py"))})
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """sha256 of a (small) file's bytes, or 'absent'."""
    path = Path(path)
    if not path.is_file():
        return "absent"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(config: Any, inputs: Mapping[str, str] | None = None, code: tuple[str, ...] = ()) -> str:
    """The fingerprint of a step: its configuration (JSON-able), inputs and code (see
    :func:`code_version`)."""
    payload = {"config": config, "inputs": dict(sorted((inputs or {}).items())), "code": code_version(code)}
    canonical = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def details(out_dir: str | Path) -> dict:
    """Everything ``out_dir``'s record holds (fingerprint, files, the step's details), or {}."""
    try:
        saved = json.loads((Path(out_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def recorded(out_dir: str | Path) -> str | None:
    """The fingerprint ``out_dir`` records, or None when it records none."""
    path = Path(out_dir) / RECORD
    try:
        return json.loads(path.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record(out_dir: str | Path, value: str, outputs: str | Path | None = None, **details: Any) -> None:
    """Write the fingerprint beside the output, atomically (written last: a step that died
    before this point is never mistaken for a finished one), with the size of every file
    under ``outputs`` so an output damaged or deleted later is not taken as done."""
    out_dir = Path(out_dir)
    files = {}
    if outputs is not None:
        files = {
            p.relative_to(out_dir).as_posix(): p.stat().st_size
            for p in sorted(Path(outputs).rglob("*"))
            if p.is_file() and not p.name.startswith("fingerprint.")
        }
    atomic_write_json(
        out_dir / RECORD, {"fingerprint": value, "files": files, **details}, indent=1, sort_keys=True, default=str
    )


def record_stamp(out_dir: str | Path) -> tuple[int, int] | None:
    """Which write of ``out_dir``'s record is there (inode, modification time), or None. A
    step that found its output up to date leaves the record as it was; one that ran rewrote
    it (:func:`record` replaces the file), so a caller compares stamps before and after the
    call instead of computing the step's fingerprint a second time."""
    try:
        stat = (Path(out_dir) / RECORD).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def up_to_date(out_dir: str | Path, value: str) -> bool:
    """True when ``out_dir`` records ``value`` and every output file it listed is still there
    with its size: the one test of "skip this step"."""
    out_dir = Path(out_dir)
    try:
        saved = json.loads((out_dir / RECORD).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or saved.get("fingerprint") != value or not saved.get("files"):
        return False
    return all(
        (out_dir / name).is_file() and (out_dir / name).stat().st_size == size for name, size in saved["files"].items()
    )
