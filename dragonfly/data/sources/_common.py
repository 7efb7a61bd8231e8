"""Helpers shared by the converters: reading text files, answer normalisation, paths, HF
parquet rows."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from dragonfly.data.prompts import MCQ_SUFFIX, SHORT_SUFFIX, letters, mcq_prompt  # noqa: F401  (the converters' API)
from dragonfly.data.quarantine import FILTERED, ConverterError, Rejection
from dragonfly.files import atomic_write_bytes

_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validate": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
    "testmini": "test",
}


# --- text files -------------------------------------------------------------------------
# Every converter reads its JSON/JSONL/CSV/TSV through these, so a file that is not UTF-8
# is a ConverterError naming the file and the byte, never a bare UnicodeDecodeError.


def read_text(path: Path) -> str:
    """The whole file as UTF-8 text (gunzipped first when it ends in .gz)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConverterError(path, f"a readable file ({exc})") from None
    where = "byte offset"
    if path.suffix == ".gz":
        data = gzip.decompress(data)
        where = "byte offset (decompressed)"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConverterError(path, f"UTF-8 text; invalid byte 0x{data[exc.start]:02x} at {where} {exc.start}") from None


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file without their newlines (row k is line k, as for a file)."""
    return read_text(path).split("\n")


def read_json(path: Path, expected: str) -> Any:
    """A UTF-8 JSON file; `expected` describes it in the error when it is not valid JSON."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ConverterError(path, f"{expected} ({exc})") from None


def read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """A UTF-8 CSV file (or .csv.gz) as a frame; `kwargs` go to `pandas.read_csv`."""
    return pd.read_csv(io.StringIO(read_text(path)), **kwargs)


# --- answers and prompts ----------------------------------------------------------------


def yes_no(answer: str) -> str | None:
    """'Yes', ' YES.', 'no' -> 'yes'/'no'; None when the answer is not a yes/no answer."""
    token = answer.strip().strip(".!").strip().lower()
    # Only the words themselves: "1"/"0" are real numeric answers in ChartQA and VQA-RAD.
    return token if token in ("yes", "no") else None


def closed_or_open(answer: str) -> tuple[str, str]:
    """(task, answer): yes/no answers become `vqa_closed` with the normalised answer."""
    yn = yes_no(answer)
    return ("vqa_closed", yn) if yn is not None else ("vqa_open", answer.strip())


def answer_text(value: Any) -> str:
    """Answers arrive as str, int or float; 12.0 -> '12', 0.57 -> '0.57', None -> ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def normalise_split(name: str, file: str | Path = "") -> str:
    split = _SPLIT_ALIASES.get(name.strip().lower())
    if split is None:
        raise ConverterError(file, f"a split name in {sorted(set(_SPLIT_ALIASES))}, got {name!r}")
    return split


def split_in_name(path: Path) -> str | None:
    """The split a file name says with its first word, or None when it says none:
    'train.json', 'test_questions.jsonl', 'val2017.json', 'dev-set.json' (digits right
    after the word are a year or version). Only the name: a folder called 'dev' or 'test'
    is as often a workspace as a split, and a wrong guess would be silent."""
    head = re.split(r"[-_.\s]", path.name)[0]
    return _SPLIT_ALIASES.get(re.sub(r"\d+$", "", head).lower())


def split_from_filename(path: Path) -> str:
    """HF hub parquet shards are named '<split>-00000-of-00001-<hash>.parquet'."""
    stem = path.name.split(".")[0]
    head = re.split(r"[-_]", stem)[0]
    return normalise_split(head, path)


def rel_to_root(path: Path, root: Path) -> str:
    """Image paths are stored relative to the data root, with forward slashes. Symbolic links
    are not followed (a linked image keeps the link's own path, not its target's outside the
    root), and nothing here touches the file system: a path no file can have is quarantined
    by the caller (``bad_image_path``), not raised here."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def missing_keys(rec: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    return [k for k in keys if k not in rec]


def malformed(source: str, rid: str, file: Path, row: int, expected: str) -> Rejection:
    return Rejection(
        source=source,
        id=rid,
        reason="malformed_row",
        detail=f"expected {expected}",
        file=str(file),
        row=row,
    )


def filtered(source: str, rid: str, file: Path, row: int, reason: str, detail: str) -> Rejection:
    return Rejection(source=source, id=rid, reason=reason, detail=detail, file=str(file), row=row, kind=FILTERED)


# --- HF hub parquet ---------------------------------------------------------------------


def parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise ConverterError(path, "a .parquet file or a directory containing .parquet files")
    return files


def parquet_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(file, row index within file, row) for every row; checks the columns up front."""
    for file in parquet_files(path):
        try:
            table = pq.read_table(file)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ConverterError(file, f"a readable parquet file ({exc})") from None
        absent = [c for c in required if c not in table.column_names]
        if absent:
            raise ConverterError(file, f"columns {list(required)}; missing {absent} (has {table.column_names})")
        for i, row in enumerate(table.to_pylist()):
            yield file, i, row


def _image_suffix(data: bytes, hint: str) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:4] in (b"GIF8",):
        return ".gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if len(data) > 132 and data[128:132] == b"DICM":
        return ".dcm"
    suffix = Path(hint).suffix.lower()
    return suffix if suffix else ".img"


def store_image_bytes(image: Any, root: Path, subdir: str) -> str | None:
    """Write an HF `Image` struct {bytes, path} under root/subdir, named by content hash.

    Content naming makes a shared image (many questions, one picture) one file, and makes
    the image+instruction de-duplication see identical pictures as identical.
    """
    if not isinstance(image, Mapping) or not image.get("bytes"):
        return None
    data: bytes = image["bytes"]
    name = hashlib.sha1(data).hexdigest()[:20] + _image_suffix(data, str(image.get("path") or ""))
    target = root / subdir / name
    if not target.exists():
        atomic_write_bytes(target, data)
    return f"{subdir}/{name}"
