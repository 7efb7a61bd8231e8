"""LLaVA conversation JSON: LLaVA-Pretrain 558K, ShareGPT4V, ALLaVA, SVIT, LLaVA-Med.

Each record is {"id", "image" (str, list of str, or absent for text-only),
"conversations": [{"from": "human"|"gpt"|"system", "value": ...}, ...]}; image paths are
relative to an image folder (by default the JSON file's own folder).

The split is never assumed: the `split` option, else the file name's first word
(`train*.json`, `test*`, `val*`/`dev*`), else a ConverterError asking for the option, so
a test file converted without `split=test` cannot silently become training data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dragonfly.data.quarantine import Converted, ConverterError
from dragonfly.data.schema import Sample, Turn
from dragonfly.data.sources._common import (
    malformed,
    normalise_split,
    read_json,
    read_lines,
    rel_to_root,
    split_in_name,
)

OPTIONS = {
    "source": "source name stored in every sample and its id prefix",
    "split": "train, validation or test (default: from the file name, see below)",
    "task": "task of samples with images, e.g. 'caption' for LLaVA-Pretrain (default: vqa_open)",
    "image_folder": "where the records' image paths start: a folder beside the JSON file or under the data root, "
    "or absolute (default: the JSON file's folder)",
}
SPLIT = (
    "the `split` option; else the file name's first word: train*.json(l) -> train, val*/dev* -> validation, "
    "test* -> test (e.g. train.json, test_questions.json, val2017.json; folder names are not read); "
    "else an error asking for --option split=train|validation|test"
)

_ROLE = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_ROLE["system"] = "system"


def _records(path: Path) -> list[Any]:
    expected = "a LLaVA conversation JSON list"
    if path.suffix != ".jsonl":
        data = read_json(path, expected)
    else:
        try:
            data = [json.loads(line) for line in read_lines(path) if line.strip()]
        except json.JSONDecodeError as exc:
            raise ConverterError(path, f"{expected} ({exc})") from None
    if not isinstance(data, list):
        raise ConverterError(path, f"a JSON list of records, got {type(data).__name__}")
    return data


def _image_folder(path: Path, root: Path, image_folder: str | Path | None) -> Path:
    """Where the records' image paths start.

    By default the JSON file's own folder, as given (relative to the working directory like
    `path`; `path` already includes the data root when a mixture resolved it). A relative
    `image_folder` is looked up beside the JSON file first, then under the data root.
    """
    if image_folder is None:
        return path.parent
    folder = Path(image_folder)
    if folder.is_absolute():
        return folder
    candidates = (path.parent / folder, root / folder)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise ConverterError(
        path,
        f"image_folder {str(image_folder)!r} to be a folder beside the JSON file or under the "
        f"data root, but neither {candidates[0]} nor {candidates[1]} exists",
    )


def _split(path: Path, split: str | None) -> str:
    if split:
        return normalise_split(split, path)
    named = split_in_name(path)
    if named is None:
        error = ConverterError(
            path, "a file name that says the split (train*, val*/dev*, test*), or --option split=train|validation|test"
        )
        error.hint = "in a mixture, give the source `options: {split: train}` (or validation, test)"
        raise error
    return named


def convert(
    path: Path,
    root: Path,
    source: str = "llava",
    split: str | None = None,
    task: str | None = None,
    image_folder: str | Path | None = None,
) -> Converted:
    """Options: see `OPTIONS`; `image_folder` is resolved by `_image_folder`."""
    folder = _image_folder(path, root, image_folder)
    records = _records(path)  # a file that is not LLaVA JSON says so before the split is asked for
    split = _split(path, split)
    out = Converted()
    for row, rec in enumerate(records):
        given = rec.get("id") if isinstance(rec, dict) else None
        rid = f"{source}:{f'row{row}' if given is None or given == '' else given}"  # a null id: the row's
        if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list):
            out.rejections.append(malformed(source, rid, path, row, 'a record with a "conversations" list'))
            continue
        turns: list[Turn] = []
        bad = None
        if isinstance(given, bool) or not isinstance(given, str | int | None):
            out.rejections.append(malformed(source, rid, path, row, 'an "id" that is a string or an integer'))
            continue
        for k, msg in enumerate(rec["conversations"]):
            if not isinstance(msg, dict) or msg.get("from") not in _ROLE:
                bad = f'conversations[{k}] with "from" in {sorted(_ROLE)} and a "value"'
                break
            if not isinstance(msg.get("value"), str | None):  # a list or object would be stored as its repr
                bad = f'conversations[{k}]["value"] as text, not a {type(msg["value"]).__name__}'
                break
            turns.append(Turn(_ROLE[msg["from"]], str(msg.get("value") or "").strip()))
        if bad:
            out.rejections.append(malformed(source, rid, path, row, bad))
            continue
        raw_images = rec.get("image")
        raw = [] if raw_images is None or raw_images == "" else raw_images
        raw = raw if isinstance(raw, list) else [raw]
        if not all(isinstance(p, str) and p for p in raw):  # an object or number is no path
            out.rejections.append(malformed(source, rid, path, row, '"image" as a path or a list of paths'))
            continue
        images: list[str] = raw
        assistant = [t.text for t in turns if t.role == "assistant"]
        out.samples.append(
            Sample(
                id=rid,
                source=source,
                split=split,
                task="text_only" if not images else (task or "vqa_open"),
                images=tuple(rel_to_root(folder / p, root) for p in images),
                turns=tuple(turns),
                answers=(assistant[-1],) if assistant else (),
                origin=f"{path}:{row}",
            )
        )
    return out
