"""Samples already in the project's schema, one JSON record per line (what `synth` and
`convert` write)."""

from __future__ import annotations

import json
from pathlib import Path

from dragonfly.data.quarantine import Converted, ConverterError
from dragonfly.data.schema import Sample
from dragonfly.data.sources._common import malformed, read_lines

OPTIONS = {"source": "replace every record's source name (default: keep each record's own)"}
SPLIT = "per row: each record's own split field"


def convert(path: Path, root: Path, source: str | None = None) -> Converted:
    if not path.is_file():
        raise ConverterError(path, "a samples .jsonl file")
    out = Converted()
    for row, line in enumerate(read_lines(path)):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            sample = Sample.from_record(rec)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            out.rejections.append(malformed(source or "native", f"row{row}", path, row, f"a sample record ({exc})"))
            continue
        if source:
            sample = Sample(**{**sample.__dict__, "source": source})
        out.samples.append(Sample(**{**sample.__dict__, "origin": f"{path}:{row}"}))
    return out
