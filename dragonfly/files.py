"""Small file helpers: atomic writes (a `<name>.tmp` sibling, then a rename) and JSON Lines.

A leaf module: it imports nothing from `dragonfly`, so every layer may use it. Text is
UTF-8; the write helpers create the parent folder. An atomic write leaves either the old
file or the new one, never half of one; a failed write removes its temporary file.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


@contextmanager
def _replacing(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write; renamed onto `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with _replacing(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """`text` exactly as given (no newline added), UTF-8."""
    with _replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj: Any, **dumps_kwargs: Any) -> None:
    """`json.dumps(obj, **dumps_kwargs)` and a trailing newline."""
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """One JSON value per line; blank lines are skipped."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]], **dumps_kwargs: Any) -> int:
    """Write `rows` atomically, one `json.dumps(row, **dumps_kwargs)` a line; returns how many."""
    n = 0
    with _replacing(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, **dumps_kwargs) + "\n")
            n += 1
    return n


def append_jsonl(path: str | Path, row: Mapping[str, Any], **dumps_kwargs: Any) -> None:
    """Add one line to a JSON Lines file (created when absent)."""
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, **dumps_kwargs) + "\n")


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """The path of a fresh `<target>.tmp` folder (not yet created) to write a folder into;
    when the block succeeds it replaces `target`, otherwise it is left for inspection."""
    target = Path(target)
    tmp = _tmp(target)
    if tmp.exists():
        shutil.rmtree(tmp)
    yield tmp
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
