"""The one sample schema every data source is converted into.

A `Sample` is one conversation about zero or more images. Image paths are relative to a
data root so a built dataset can move between machines with its images. Tables of
samples are validated with a pandera model (`table.py`); rows that fail are turned into rejections
with a reason (see `quarantine.py`) instead of stopping a build.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dragonfly.files import read_jsonl as read_jsonl  # re-exported: samples files are JSON Lines
from dragonfly.files import write_jsonl
from dragonfly.model.constants import IMAGE_TOKEN
from dragonfly.model.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageLoadError,
    ImageTooLargeError,
    load_image,
)

ROLES: tuple[str, ...] = ("user", "assistant", "system")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
TASKS: tuple[str, ...] = ("caption", "vqa_closed", "vqa_open", "mcq", "report", "text_only")
DEFAULT_MIN_IMAGE_SIZE = 16


@dataclass(frozen=True)
class Turn:
    role: str
    text: str


@dataclass(frozen=True)
class Sample:
    """One training or evaluation example.

    `answers` are the reference strings an evaluator compares against (for `mcq`, the
    option letter); `choices` are the option texts of an `mcq`. `meta` keeps
    source-specific fields (answer type, modality, ...) as strings.
    """

    id: str
    source: str
    split: str
    task: str
    images: tuple[str, ...]
    turns: tuple[Turn, ...]
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    # "file:row" the sample came from, so a rejection can point back to the input.
    origin: str = ""

    def messages(self) -> list[dict[str, str]]:
        """Chat messages in the shape `apply_chat_template` and the trainer expect."""
        return [{"role": t.role, "content": t.text} for t in self.turns]

    def instruction(self) -> str:
        """The first user turn: with the images, what identifies a sample for de-duplication."""
        for t in self.turns:
            if t.role == "user":
                return t.text
        return ""

    def to_record(self) -> dict[str, Any]:
        """A flat, Arrow-friendly dict (meta as sorted JSON so bytes are deterministic)."""
        return {
            "id": self.id,
            "source": self.source,
            "split": self.split,
            "task": self.task,
            "images": list(self.images),
            "messages": self.messages(),
            "answers": list(self.answers),
            "choices": list(self.choices),
            "meta": json.dumps(dict(self.meta), sort_keys=True, ensure_ascii=False),
            "origin": self.origin,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Sample:
        meta = rec.get("meta") or {}
        if isinstance(meta, str):
            meta = json.loads(meta) if meta else {}
        return cls(
            id=str(rec["id"]),
            source=str(rec["source"]),
            split=str(rec["split"]),
            task=str(rec["task"]),
            images=tuple(str(p) for p in rec.get("images") or ()),
            turns=tuple(Turn(str(m["role"]), str(m["content"])) for m in rec["messages"]),
            answers=tuple(str(a) for a in rec.get("answers") or ()),
            choices=tuple(str(c) for c in rec.get("choices") or ()),
            meta={str(k): str(v) for k, v in dict(meta).items()},
            origin=str(rec.get("origin") or ""),
        )


def user_assistant(question: str, answer: str, n_images: int, system: str | None = None) -> tuple[Turn, ...]:
    """A single-round conversation with one placeholder per image at the start of the question."""
    prefix = (IMAGE_TOKEN + "\n") * n_images
    turns = [Turn("user", prefix + question.strip()), Turn("assistant", answer.strip())]
    if system:
        turns.insert(0, Turn("system", system))
    return tuple(turns)


def qa_sample(
    id: str,
    source: str,
    split: str,
    task: str,
    images: Sequence[str],
    question: str,
    answer: str,
    *,
    answers: Sequence[str] | None = None,
    choices: Sequence[str] = (),
    meta: Mapping[str, str] | None = None,
    origin: str = "",
) -> Sample:
    """A one-question, one-answer sample (`user_assistant` turns, a placeholder per image).
    `answers` (the references) default to the answer itself, or none when it is empty."""
    return Sample(
        id=id,
        source=source,
        split=split,
        task=task,
        images=tuple(images),
        turns=user_assistant(question, answer, len(images)),
        answers=tuple(answers) if answers is not None else ((answer,) if answer else ()),
        choices=tuple(choices),
        meta=meta if meta is not None else {},
        origin=origin,
    )


def split_origin(origin: str) -> tuple[str, int | None]:
    """A sample's origin `"file:row"` as (file, row); (origin, None) when it has no row."""
    file, _, row = origin.rpartition(":")
    if file and row.isdigit():
        return file, int(row)
    return origin, None


# --- image validation -------------------------------------------------------------------


@dataclass(frozen=True)
class ImageCheck:
    """`max_pixels` is checked on the file's header, before the image is decoded."""

    min_size: int = DEFAULT_MIN_IMAGE_SIZE
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


NAME_MAX, PATH_MAX = 255, 4096  # Linux's limits, in bytes


def image_path_problem(path: Path) -> str | None:
    """Why ``path`` can name no image file at all (a NUL byte, a name or path over the
    system's limits, a symbolic link that loops or leads nowhere), else None. Checked on the
    path itself, so a bad row is quarantined instead of stopping a whole conversion."""
    text = str(path)
    if "\x00" in text:
        return "the path holds a NUL byte"
    size = len(text.encode(errors="surrogateescape"))
    if size >= PATH_MAX:
        return f"the path is {size} bytes long (the limit is {PATH_MAX - 1})"
    if any(len(part.encode(errors="surrogateescape")) > NAME_MAX for part in path.parts):
        return f"a name in the path is over {NAME_MAX} bytes"
    if path.is_symlink() and not path.exists():
        return "a symbolic link that loops or leads nowhere"
    return None


def image_problem(path: Path, check: ImageCheck) -> tuple[str, str] | None:
    """(reason, detail) when the image cannot be used for training, else None."""
    if why := image_path_problem(path):
        return "bad_image_path", why
    if not path.is_file():
        return "missing_image", f"no file at {path}"
    try:
        img = load_image(path, check.max_pixels)
    except ImageTooLargeError as exc:
        return "image_too_large", exc.reason
    except ImageLoadError as exc:
        return "unreadable_image", exc.reason
    if min(img.size) < check.min_size:
        return "image_too_small", f"{img.width}x{img.height} < {check.min_size} px"
    return None


def sample_image_problem(
    sample: Sample, root: Path, check: ImageCheck, cache: dict[str, tuple[str, str] | None]
) -> tuple[str, str] | None:
    """First image problem of a sample; `cache` avoids decoding an image shared by samples."""
    for rel in sample.images:
        if rel not in cache:
            cache[rel] = image_problem(root / rel, check)
        problem = cache[rel]
        if problem is not None:
            return problem[0], f"{rel}: {problem[1]}"
    return None


def write_samples_jsonl(samples: Iterable[Sample], path: Path) -> int:
    """Write `samples` (meta as a JSON object) atomically; returns how many."""
    return write_jsonl(path, (_jsonl_record(s) for s in samples), ensure_ascii=False, sort_keys=True)


def _jsonl_record(sample: Sample) -> dict[str, Any]:
    rec = sample.to_record()
    rec["meta"] = dict(sample.meta)
    return rec
