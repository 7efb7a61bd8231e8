"""Converters from each dataset's on-disk format into `Sample`s, by format name.

Every converter is `convert(path, root, **options) -> Converted`: `path` is the dataset
file or folder, `root` the data root that stored image paths are relative to (images
embedded in parquet files are written under `root/images/<source>/`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from dragonfly.config import ConfigError
from dragonfly.data.quarantine import Converted, ConverterError, with_stage
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
from dragonfly.errors import DragonflyError, close_match

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


class UnknownFormatError(DragonflyError, KeyError):
    """A data format name no converter has."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def converter_options(fmt: str) -> list[str]:
    """The options `fmt`'s converter takes (its keyword parameters after path and root,
    without those the format name fixes, like lmms_lab's `benchmark`)."""
    converter = FORMATS[fmt]
    fixed = set(converter.keywords) if isinstance(converter, partial) else set()
    params = list(inspect.signature(converter).parameters.values())[2:]
    return [p.name for p in params if p.name not in fixed]


def _check_options(fmt: str, options: dict[str, Any]) -> None:
    accepted = converter_options(fmt)
    for key in options:
        if key not in accepted:
            raise ConfigError(
                f"format {fmt!r} has no option {key!r}{close_match(key, accepted)}; "
                f"it takes: {', '.join(accepted) or 'none'}"
            )


def convert(fmt: str, path: Path, root: Path, **options: Any) -> Converted:
    """Run `fmt`'s converter; its rejections are marked as found at the convert stage."""
    if fmt not in FORMATS:
        raise UnknownFormatError(
            f"unknown data format {fmt!r}{close_match(fmt, FORMATS)}; known: {', '.join(sorted(FORMATS))}"
        )
    _check_options(fmt, options)
    if not Path(path).exists():  # one message for every converter, before any of them runs
        error = ConverterError(path, f"the {fmt} source here, but nothing exists at this path")
        error.hint = "check the source's path; the synthetic data is written by `dragonfly prepare`"
        raise error
    result = FORMATS[fmt](path, root, **options)
    return Converted(result.samples, with_stage(result.rejections, "convert"))
