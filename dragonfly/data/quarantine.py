"""Rejected rows: never dropped silently, always written with their source, id and reason."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dragonfly.data.schema import Sample

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


@dataclass
class Converted:
    """What a converter or a validation step returns: the good samples and the rejections."""

    samples: list[Sample] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    def extend(self, other: Converted) -> None:
        self.samples.extend(other.samples)
        self.rejections.extend(other.rejections)


class ConverterError(ValueError):
    """A file a converter does not understand: names the file, the row and what was expected."""

    def __init__(self, file: str | Path, expected: str, row: int | str | None = None) -> None:
        self.file = str(file)
        self.row = row
        self.expected = expected
        where = self.file if row is None else f"{self.file}, row {row}"
        super().__init__(f"{where}: expected {expected}")


class RejectedFractionError(RuntimeError):
    """The build rejected more rows than the configured threshold allows."""


def write_quarantine(rejections: Iterable[Rejection], path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for r in rejections:
            fh.write(json.dumps(asdict(r), ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def read_quarantine(path: Path) -> list[Rejection]:
    with path.open(encoding="utf-8") as fh:
        return [Rejection(**json.loads(line)) for line in fh if line.strip()]


def reasons(rejections: Sequence[Rejection]) -> dict[str, int]:
    return dict(sorted(Counter(r.reason for r in rejections).items()))


def check_rejected_fraction(
    n_rejected: int, n_total: int, threshold: float, quarantine_path: Path | None = None
) -> float:
    """Raise RejectedFractionError when rejected/total exceeds `threshold`; return the fraction."""
    fraction = n_rejected / n_total if n_total else 0.0
    if fraction > threshold:
        where = f"; see {quarantine_path}" if quarantine_path else ""
        raise RejectedFractionError(
            f"{n_rejected} of {n_total} rows rejected ({fraction:.1%}), above the "
            f"reject_threshold of {threshold:.1%}{where}"
        )
    return fraction
