"""Rejected rows: never dropped silently, always written with their source, id and reason."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from dragonfly.data.schema import Sample
from dragonfly.errors import DragonflyError
from dragonfly.files import read_jsonl, write_jsonl

ERROR = "error"
# Rows left out on purpose (e.g. SLAKE's Chinese questions): quarantined and counted like
# errors, but they do not count towards the reject threshold.
FILTERED = "filtered"


@dataclass(frozen=True)
class Rejection:
    source: str
    id: str
    reason: str
    detail: str = ""
    file: str = ""
    row: int | None = None
    kind: str = ERROR
    # Where the row was rejected: "convert", "validate" or "build" ("" in files written
    # before stages were recorded). Each command writes its own quarantine file.
    stage: str = ""


def with_stage(rejections: Iterable[Rejection], stage: str) -> list[Rejection]:
    """The rejections stamped with `stage` (converters do not know which command runs them)."""
    return [replace(r, stage=stage) for r in rejections]


@dataclass
class Converted:
    """What a converter or a validation step returns: the good samples and the rejections."""

    samples: list[Sample] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


class ConverterError(DragonflyError, ValueError):
    """A file a converter does not understand: names the file, the row and what was expected."""

    def __init__(self, file: str | Path, expected: str, row: int | str | None = None) -> None:
        self.file = str(file)
        self.row = row
        self.expected = expected
        where = self.file if row is None else f"{self.file}, row {row}"
        super().__init__(f"{where}: expected {expected}")


class RejectedFractionError(DragonflyError, RuntimeError):
    """The build rejected more rows than the configured threshold allows."""


def quarantine_file(samples: Path, stage: str) -> Path:
    """`X.jsonl` -> `X.<stage>-quarantine.jsonl`: the quarantine a command writes beside X."""
    return samples.with_suffix(f".{stage}-quarantine.jsonl")


def write_quarantine(rejections: Iterable[Rejection], path: Path) -> int:
    return write_jsonl(path, (asdict(r) for r in rejections), ensure_ascii=False, sort_keys=True)


def read_quarantine(path: Path) -> list[Rejection]:
    """Read a quarantine file; keys this version does not know are ignored, missing ones
    (e.g. `stage` in older files) take their defaults."""
    known = {f.name for f in fields(Rejection)}
    return [Rejection(**{k: v for k, v in rec.items() if k in known}) for rec in read_jsonl(path)]


def reasons(rejections: Sequence[Rejection]) -> dict[str, int]:
    return dict(sorted(Counter(r.reason for r in rejections).items()))


def rejected_fraction_error(
    rejections: Sequence[Rejection],
    n_total: int,
    threshold: float,
    quarantine_path: Path,
    source: str | None = None,
) -> RejectedFractionError | None:
    """The error to raise when the error rejections (filtered rows do not count) are more
    than `threshold` of `n_total` rows, else None; `source` names a single source."""
    errors = [r for r in rejections if r.kind == ERROR]
    fraction = len(errors) / n_total if n_total else 0.0
    if fraction <= threshold:
        return None
    scope = f"source {source!r}: " if source else ""
    top = ", ".join(f"{reason} {n}" for reason, n in Counter(r.reason for r in errors).most_common(3))
    setting = f"the reject_threshold of source {source!r}" if source else "reject_threshold"
    return RejectedFractionError(
        f"{scope}{len(errors)} of {n_total} rows rejected ({fraction:.1%}), above the "
        f"reject_threshold of {threshold:.1%}; see {quarantine_path} (top reasons: {top})",
        hint=f"fix the rows listed in the quarantine, or raise {setting}",
    )
