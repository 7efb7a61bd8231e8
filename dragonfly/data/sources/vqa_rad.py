"""VQA-RAD (flaviagammarino/vqa-rad on the HF hub): parquet with image bytes."""

from __future__ import annotations

from pathlib import Path

from dragonfly.data.quarantine import Converted
from dragonfly.data.sources import medvqa_parquet

OPTIONS = medvqa_parquet.OPTIONS
SPLIT = medvqa_parquet.SPLIT


def convert(path: Path, root: Path, source: str = "vqa_rad") -> Converted:
    return medvqa_parquet.convert(path, root, source)
