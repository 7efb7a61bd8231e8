"""One training run per stage folder at a time, on a machine.

Two runs into one ``--out`` would interleave ``metrics.jsonl`` and overwrite each other's
checkpoints and final model while both reported success. Rank 0 holds an OS file lock
(filelock's ``FileLock``: released by the kernel when its process dies, so a killed run
leaves no stale lock) for the whole run. The lock lives in the machine's temporary folder,
named after the stage folder's real path, not in the stage folder: checkpoints often live on
a bucket mount, where a lock file left by a preempted node would stop the node that resumes
the job, and where OS locks do not reach across machines anyway. A note beside the lock names
its holder (pid, host, folder, start) for the error a second run gets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from dragonfly.errors import DragonflyError


class StageBusyError(DragonflyError):
    """Another run on this machine is training into the same folder."""


def lock_path(out: Path) -> Path:
    key = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:20]
    # Per user: a folder another user created first would not be writable (its umask).
    return Path(tempfile.gettempdir()) / f"dragonfly-locks-{os.getuid()}" / f"{key}.lock"


def _holder(note: Path) -> str:
    try:
        info = json.loads(note.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError):
        return "a run that left no note"


_HELD: dict[Path, int] = {}  # lock paths this process holds, and how deeply: re-entrant


def launcher_rank_zero() -> bool:
    """Whether this is rank 0 of the launch, before any process group exists: torchrun's
    ``RANK`` (the launcher's contract, as torch.distributed itself reads it), else a single process."""
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def held(out: Path, main: bool) -> Iterator[None]:
    """Hold ``out`` for this run (rank 0 only: the other ranks are the same run). Re-entrant:
    the pipeline holds the folder while it sorts old checkpoints, the trainer while it trains."""
    if not main:
        yield
        return
    path = lock_path(out)
    if path in _HELD:  # this process holds it already (the pipeline, around the trainer)
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    note = path.with_suffix(".json")
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StageBusyError(
            f"{out} is being trained by another run ({_holder(note)})",
            hint="wait for it to finish, or train into another --out",
        ) from None
    _HELD[path] = 1
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        note.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "out": str(out), "since": since}))
        yield
    finally:
        del _HELD[path]
        note.unlink(missing_ok=True)
        lock.release()
