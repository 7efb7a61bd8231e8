"""Validate converted samples: table rules (pandera) first, then the image files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from dragonfly.data.quarantine import Converted, Rejection
from dragonfly.data.schema import ImageCheck, Sample, sample_image_problem, split_origin


def reject(sample: Sample, reason: str, detail: str) -> Rejection:
    file, row = split_origin(sample.origin)
    return Rejection(
        source=sample.source,
        id=sample.id,
        reason=reason,
        detail=detail,
        file=file,
        row=row,
        stage="validate",
    )


def missing_images(samples: Sequence[Sample], root: Path) -> tuple[list[str], int]:
    """(image paths with no file under `root`, number of distinct image paths), in order of
    first use: a cheap existence check (no decoding) to run right after converting."""
    paths = list(dict.fromkeys(p for s in samples for p in s.images))
    return [p for p in paths if not (root / p).is_file()], len(paths)


def validate_samples(
    samples: Sequence[Sample],
    root: Path,
    image_check: ImageCheck | None = ImageCheck(),
    progress: Callable[[int], None] | None = None,
) -> Converted:
    """Split `samples` into good ones and rejections; `image_check=None` skips decoding images."""
    from dragonfly.data.table import table_problems  # pandas + pandera: ~1 s, only where data is validated

    problems = table_problems(samples)
    out = Converted()
    cache: dict[str, tuple[str, str] | None] = {}
    for i, sample in enumerate(samples):
        problem = problems.get(i)
        if problem is None and image_check is not None:
            problem = sample_image_problem(sample, root, image_check, cache)
        if problem is None:
            out.samples.append(sample)
        else:
            out.rejections.append(reject(sample, *problem))
        if progress is not None:
            progress(1)
    return out
