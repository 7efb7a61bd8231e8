"""Converters from each dataset's on-disk format into `Sample`s, by format name.

Every converter is `convert(path, root, **options) -> Converted`: `path` is the dataset
file or folder, `root` the data root that stored image paths are relative to (images
embedded in parquet files are written under `root/images/<source>/`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from dragonfly.data.quarantine import Converted
from dragonfly.data.sources import (
    biocaption,
    coco,
    llava,
    lmms_lab,
    mimic_cxr,
    native,
    pathvqa,
    roco,
    slake,
    vqa_rad,
)

Converter = Callable[..., Converted]

FORMATS: dict[str, Converter] = {
    "dragonfly_jsonl": native.convert,
    "llava": llava.convert,
    "vqa_rad": vqa_rad.convert,
    "pathvqa": pathvqa.convert,
    "slake": slake.convert,
    "biocaption": biocaption.convert,
    "roco": roco.convert,
    "mimic_cxr": mimic_cxr.convert,
    "coco_captions": coco.convert,
    **{name: partial(lmms_lab.convert, benchmark=name) for name in lmms_lab.BENCHMARKS},
}


def convert(fmt: str, path: Path, root: Path, **options: Any) -> Converted:
    if fmt not in FORMATS:
        raise KeyError(f"unknown data format {fmt!r}; known: {sorted(FORMATS)}")
    return FORMATS[fmt](path, root, **options)
