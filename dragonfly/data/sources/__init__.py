"""Converters from each dataset's on-disk format into `Sample`s, by format name.

Every converter is `convert(path, root, **options) -> Converted`: `path` is the dataset
file or folder, `root` the data root that stored image paths are relative to (images
embedded in parquet files are written under `root/images/<source>/`).

Each converter's module describes itself for `dragonfly data formats`: its docstring's
first paragraph says what it reads, `OPTIONS` what each option means and `SPLIT` how a
sample's split is decided; the defaults come from the signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

from dragonfly.config import ConfigError
from dragonfly.data.quarantine import Converted, ConverterError, Rejection, with_stage
from dragonfly.data.schema import image_path_problem, split_origin
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


@dataclass(frozen=True)
class OptionInfo:
    """One converter option: its name, default (None when the converter works it out) and meaning."""

    name: str
    default: Any
    help: str


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UnknownFormatError(
            f"unknown data format {fmt!r}{close_match(fmt, FORMATS)}; known: {', '.join(sorted(FORMATS))}"
        )


def _module(fmt: str) -> ModuleType:
    converter = FORMATS[fmt]
    module = inspect.getmodule(converter.func if isinstance(converter, partial) else converter)
    assert module is not None, fmt
    return module


def summary(fmt: str) -> str:
    """What `fmt` reads: the module's `SUMMARIES[fmt]` when one module serves several
    formats, else the first paragraph of its docstring, on one line."""
    _check_format(fmt)
    module = _module(fmt)
    if fmt in getattr(module, "SUMMARIES", {}):
        return module.SUMMARIES[fmt]
    doc = inspect.getdoc(module) or ""
    return " ".join(doc.split("\n\n")[0].split())


def split_rule(fmt: str) -> str:
    """How `fmt`'s converter decides each sample's split (its module's `SPLIT`)."""
    _check_format(fmt)
    return getattr(_module(fmt), "SPLIT", "")


def describe(fmt: str) -> list[OptionInfo]:
    """`fmt`'s options in signature order, with defaults and the help of its module's
    `OPTIONS` ('' for an option it does not describe, which a test forbids)."""
    _check_format(fmt)
    helps: dict[str, str] = getattr(_module(fmt), "OPTIONS", {})
    params = inspect.signature(FORMATS[fmt]).parameters
    return [OptionInfo(name, params[name].default, helps.get(name, "")) for name in converter_options(fmt)]


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
                f"it takes: {', '.join(accepted) or 'none'}",
                hint=f"what each option means: dragonfly data formats {fmt}",
            )


def convert(fmt: str, path: Path, root: Path, **options: Any) -> Converted:
    """Run `fmt`'s converter; its rejections are marked as found at the convert stage."""
    _check_format(fmt)
    _check_options(fmt, options)
    if not Path(path).exists():  # one message for every converter, before any of them runs
        error = ConverterError(path, f"the {fmt} source here, but nothing exists at this path")
        error.hint = "check the source's path; the synthetic data is written by `dragonfly prepare`"
        raise error
    result = FORMATS[fmt](path, root, **options)
    good, bad = _bad_image_paths(result.samples, Path(root))
    return Converted(good, with_stage([*result.rejections, *bad], "convert"))


def _bad_image_paths(samples, root: Path) -> tuple[list, list[Rejection]]:
    """Samples whose image paths can name no file (``image_path_problem``) become rejections."""
    good, bad = [], []
    for sample in samples:
        why = next(((rel, w) for rel in sample.images if (w := image_path_problem(root / rel))), None)
        if why is None:
            good.append(sample)
        else:
            file, row = split_origin(sample.origin)
            bad.append(Rejection(sample.source, sample.id, "bad_image_path", f"{why[0]!r}: {why[1]}", file, row))
    return good, bad
