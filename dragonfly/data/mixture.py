"""Build a named training mixture: convert, validate, de-duplicate, cap, weight, shuffle, save.

De-duplication, the per-image cap and the sources' weights and caps shape the *training*
split only: validation and test rows are kept as the dataset publishes them (broken rows are
still rejected), so a baseline computed on a test split stays the one the model is scored
on. `filter_eval_splits: true` applies them to every split. A build whose training split
shares an image+question pair with an evaluation split fails (leakage), naming the pairs.

Output folder of a build:
- `dataset/`        HF `datasets` DatasetDict (one Arrow table per split), `save_to_disk`
- `quarantine.jsonl` every rejected or filtered row with source, id, reason, file and row
- `stats.json`       counts per source, task and split, and rejections per reason (DVC metrics)
- `manifest.json`    the build's status, the mixture config, its fingerprint and the data
                     root the image paths are relative to (see `manifest.py`)

A build is written to a temporary sibling folder and swapped in only when it succeeds. A
failed build removes the previous `dataset/` (a trainer must not take it for this
config) and leaves its own quarantine and stats, marked "failed", for inspection.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dragonfly.config import ConfigError, check_keys
from dragonfly.config import from_dict as typed_from_dict
from dragonfly.data.manifest import DATASET, FAILED, OK, content_digest, write_manifest
from dragonfly.data.quarantine import (
    ERROR,
    FILTERED,
    RejectedFractionError,
    Rejection,
    reasons,
    rejected_fraction_error,
    write_quarantine,
)
from dragonfly.data.schema import SPLITS, ImageCheck, Sample, split_origin
from dragonfly.data.sources import convert
from dragonfly.data.validate import validate_samples
from dragonfly.errors import DragonflyError
from dragonfly.files import atomic_dir, atomic_write_json
from dragonfly.model.images import DEFAULT_MAX_IMAGE_PIXELS

QUARANTINE, STATS = "quarantine.jsonl", "stats.json"

# Separate random streams per step, so changing one step's input leaves the others alone.
_STREAM_IMAGE_CAP, _STREAM_WEIGHT, _STREAM_SHUFFLE = 1, 2, 3


@dataclass(frozen=True)
class SourceSpec:
    """One input of a mixture. `weight` scales its sample count (0.5 halves it, 2 repeats
    it twice); `cap` then bounds it. `path` is relative to the data root unless absolute.
    `reject_threshold`: the largest share of this source's rows that may be rejected
    (None: the mixture's `reject_threshold`), so a small broken source cannot hide in a
    large mixture."""

    name: str
    format: str
    path: str
    weight: float = 1.0
    cap: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    reject_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.reject_threshold is not None:
            _check_fraction(f"source {self.name!r}: reject_threshold", self.reject_threshold)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "source.") -> SourceSpec:
        """From a params mapping; ConfigError naming the key (under `where`) when a key is
        unknown, missing or of the wrong type."""
        _require_mapping(d, where)
        check_keys(d, [f.name for f in fields(cls)], where)
        missing = [f.name for f in fields(cls) if _required(f) and f.name not in d]
        if missing:
            raise ConfigError(f"{where.rstrip('.')}: missing key(s) {', '.join(missing)}")
        options = d.get("options") or {}
        _require_mapping(options, f"{where}options")
        return typed_from_dict(cls, {**d, "options": dict(options)}, where)


@dataclass(frozen=True)
class MixtureConfig:
    """`max_image_pixels`: images with more pixels are rejected as `image_too_large`,
    checked on the file header before decoding. The default is the size at which Pillow
    itself refuses an image as a decompression bomb (its MAX_IMAGE_PIXELS x 2).
    `filter_eval_splits`: also de-duplicate, cap and weight validation/test rows.
    `allow_split_overlap`: build even when train and evaluation splits share pairs."""

    name: str
    sources: tuple[SourceSpec, ...]
    seed: int = 0
    # None: every row is kept. The paper's mixtures state their cap (SVIT: 8) in params.yaml;
    # a user's mixture that says nothing loses nothing it did not ask to lose.
    max_per_image: int | None = None
    reject_threshold: float = 0.05
    min_image_size: int = 16
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    validate_images: bool = True
    filter_eval_splits: bool = False
    allow_split_overlap: bool = False

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"mixture {self.name!r}: source names must be unique, got {names}")
        _check_fraction(f"mixture {self.name!r}: reject_threshold", self.reject_threshold)
        if self.max_image_pixels < 1:
            raise ConfigError(f"mixture {self.name!r}: max_image_pixels must be positive, got {self.max_image_pixels}")

    def source_threshold(self, spec: SourceSpec) -> float:
        return self.reject_threshold if spec.reject_threshold is None else spec.reject_threshold

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any], where: str | None = None) -> MixtureConfig:
        """From a params mapping (`data.mixtures.<name>`); unknown keys and values of the
        wrong type are ConfigErrors naming the key and where it is."""
        where = where or f"data.mixtures.{name}."
        _require_mapping(d, where)
        check_keys(d, [f.name for f in fields(cls) if f.name != "name"], where)
        raw_sources = d.get("sources") or []
        if not isinstance(raw_sources, list):
            raise ConfigError(f"{where}sources must be a list of sources")
        sources = tuple(SourceSpec.from_dict(s, f"{where}sources[{i}].") for i, s in enumerate(raw_sources))
        # Scalars go through the typed loader; sources are set after, already built.
        scalars = {k: v for k, v in d.items() if k != "sources"}
        base = typed_from_dict(cls, {**scalars, "name": name, "sources": ()}, where)
        return replace(base, sources=sources)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _require_mapping(d: Any, where: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where.rstrip('.')}: expected a mapping, got {type(d).__name__}")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    dataset_dir: Path
    quarantine_path: Path
    stats_path: Path
    stats: dict[str, Any]


def _instruction_key(sample: Sample) -> tuple[tuple[str, ...], str]:
    return sample.images, " ".join(sample.instruction().lower().split())


def deduplicate(samples: Sequence[Sample]) -> tuple[list[Sample], list[Sample]]:
    """Keep the first sample of each identical image(s)+instruction pair; also return the rest."""
    seen: set[tuple[tuple[str, ...], str]] = set()
    kept, dropped = [], []
    for s in samples:
        key = _instruction_key(s)
        (dropped if key in seen else kept).append(s)
        seen.add(key)
    return kept, dropped


def cap_per_image(
    samples: Sequence[Sample], max_per_image: int | None, rng: np.random.Generator
) -> tuple[list[Sample], list[Sample]]:
    """At most `max_per_image` samples per image set, picked at random (the paper's SVIT rule)."""
    if max_per_image is None:
        return list(samples), []
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, s in enumerate(samples):
        if s.images:
            groups.setdefault(s.images, []).append(i)
    drop: set[int] = set()
    for members in groups.values():
        if len(members) > max_per_image:
            keep = set(rng.choice(members, size=max_per_image, replace=False).tolist())
            drop.update(m for m in members if m not in keep)
    kept = [s for i, s in enumerate(samples) if i not in drop]
    return kept, [s for i, s in enumerate(samples) if i in drop]


def apply_weight(samples: Sequence[Sample], weight: float, cap: int | None, rng: np.random.Generator) -> list[Sample]:
    """round(weight * n) samples (subsampled or repeated), then at most `cap`."""
    n = len(samples)
    target = int(round(weight * n))
    if cap is not None:
        target = min(target, cap)
    if target <= n:
        idx = sorted(rng.choice(n, size=target, replace=False).tolist()) if target < n else range(n)
        return [samples[i] for i in idx]
    out = list(samples)
    copy = 1
    while len(out) < target:
        take = min(n, target - len(out))
        idx = sorted(rng.choice(n, size=take, replace=False).tolist())
        # Repeats get distinct ids so ids stay unique in the built dataset.
        out.extend(_renamed(samples[i], f"{samples[i].id}#rep{copy}") for i in idx)
        copy += 1
    return out


class SplitOverlapError(DragonflyError, ValueError):
    """Training and evaluation splits share image+question pairs: the scores would be leaked."""


def split_overlap(samples: Sequence[Sample]) -> list[tuple[Sample, Sample]]:
    """(train sample, evaluation sample) pairs with the same image(s) and instruction, one
    per evaluation sample; repeats of a training sample count once."""
    train: dict[tuple[tuple[str, ...], str], Sample] = {}
    for s in samples:
        if s.split == "train":
            train.setdefault(_instruction_key(s), s)
    return [(train[k], s) for s in samples if s.split != "train" and (k := _instruction_key(s)) in train]


def _overlap_error(mixture: str, overlap: Sequence[tuple[Sample, Sample]]) -> SplitOverlapError:
    shown = "; ".join(f"{t.id} (train) = {e.id} ({e.split})" for t, e in overlap[:3])
    splits = ", ".join(sorted({e.split for _, e in overlap}))
    return SplitOverlapError(
        f"mixture {mixture!r}: {len(overlap)} {splits} sample(s) have the same image and question as a "
        f"training sample, e.g. {shown}",
        hint="convert each split from its own file (--option split=...), or set allow_split_overlap: true "
        "in the mixture if the overlap is intended",
    )


def _renamed(sample: Sample, new_id: str) -> Sample:
    return Sample(**{**sample.__dict__, "id": new_id})


def _dropped(sample: Sample, reason: str, detail: str) -> Rejection:
    file, row = split_origin(sample.origin)
    return Rejection(sample.source, sample.id, reason, detail, file, row, FILTERED, stage="build")


def _resolve(path: str, root: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _relative_origin(origin: str, root: Path) -> str:
    """Origins inside the data root are stored relative to it, so builds are portable."""
    file, row = split_origin(origin)
    if row is None:
        return origin
    try:
        rel = Path(os.path.relpath(Path(file).resolve(), root.resolve()))
    except ValueError:
        return origin
    return origin if rel.as_posix().startswith("..") else f"{rel.as_posix()}:{row}"


def build_stats(
    cfg: MixtureConfig,
    per_source: dict[str, dict[str, Any]],
    final: Sequence[Sample],
    rejections: Sequence[Rejection],
    n_seen: int,
) -> dict[str, Any]:
    errors = [r for r in rejections if r.kind == ERROR]
    return {
        "mixture": cfg.name,
        "seed": cfg.seed,
        "rows_seen": n_seen,
        "samples": len(final),
        "rejected": len(errors),
        "filtered": len(rejections) - len(errors),
        "rejected_fraction": _fraction(len(errors), n_seen),
        "reject_threshold": cfg.reject_threshold,
        "max_per_image": cfg.max_per_image,
        "per_source": per_source,
        "per_task": dict(sorted(Counter(s.task for s in final).items())),
        "per_split": dict(sorted(Counter(s.split for s in final).items())),
        "rejected_by_reason": reasons(errors),
        "filtered_by_reason": reasons([r for r in rejections if r.kind == FILTERED]),
    }


def _fraction(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def save_dataset(samples: Sequence[Sample], root: Path, target: Path, seed: int, progress: bool = True) -> None:
    """Shuffle each split by seed and write a DatasetDict atomically (tmp dir, then rename);
    without `progress`, `datasets` draws no "Saving the dataset" bars (a log stays readable)."""
    import datasets
    from datasets import Dataset, DatasetDict, Features, List, Value

    features = Features(
        {
            "id": Value("string"),
            "source": Value("string"),
            "split": Value("string"),
            "task": Value("string"),
            "images": List(Value("string")),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "answers": List(Value("string")),
            "choices": List(Value("string")),
            "meta": Value("string"),
            "origin": Value("string"),
        }
    )
    splits: dict[str, Dataset] = {}
    for k, split in enumerate(SPLITS):
        members = [s for s in samples if s.split == split]
        if not members:
            continue
        order = np.random.default_rng([seed, _STREAM_SHUFFLE, k]).permutation(len(members))
        records = []
        for i in order:
            rec = members[int(i)].to_record()
            rec["origin"] = _relative_origin(rec["origin"], root)
            records.append(rec)
        splits[split] = Dataset.from_list(records, features=features)
    switch = not progress and datasets.is_progress_bar_enabled()
    if switch:  # `save_to_disk` has no flag of its own; restored right after
        datasets.disable_progress_bars()
    try:
        with atomic_dir(target) as tmp:
            DatasetDict(splits).save_to_disk(str(tmp))
    finally:
        if switch:
            datasets.enable_progress_bars()


def build_mixture(cfg: MixtureConfig, root: Path, out_dir: Path, progress: bool = False) -> BuildResult:
    """Build `cfg` from sources under `root` into `out_dir`, replacing it only on success.

    Raises RejectedFractionError when the share of rejected rows passes
    `cfg.reject_threshold` overall, or a source's own threshold for that source; filtered
    rows do not count. After any failure `out_dir` has no `dataset/`, its manifest says
    "failed", and the failed build's quarantine and stats (if it got that far) are there.
    """
    # A sibling, so the final rename stays on one file system (absolute: `out_dir` may be ".").
    work = out_dir.absolute().with_name(f"{out_dir.absolute().name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        stats = _build_into(cfg, root, work, out_dir, progress)
        _swap_in(work, out_dir)
    except Exception as exc:
        _record_failure(work, out_dir, cfg, root, exc)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(out_dir, out_dir / DATASET, out_dir / QUARANTINE, out_dir / STATS, stats)


def _build_into(cfg: MixtureConfig, root: Path, work: Path, out_dir: Path, progress: bool) -> dict[str, Any]:
    """Write the whole build into `work`; messages name the files at their final place,
    `out_dir`. Returns the stats."""
    image_check = ImageCheck(cfg.min_image_size, cfg.max_image_pixels) if cfg.validate_images else None
    rejections: list[Rejection] = []
    # Each source's rejections and row count, for its own threshold.
    by_source: dict[str, tuple[list[Rejection], int]] = {}
    per_source: dict[str, dict[str, Any]] = {}
    valid: list[Sample] = []
    n_seen = 0
    for spec in cfg.sources:
        converted = convert(spec.format, _resolve(spec.path, root), root, source=spec.name, **spec.options)
        seen = len(converted.samples) + len(converted.rejections)
        with tqdm(total=len(converted.samples), desc=f"validate {spec.name}", disable=not progress) as bar:
            checked = validate_samples(converted.samples, root, image_check, progress=bar.update)
        bad = converted.rejections + checked.rejections
        by_source[spec.name] = (bad, seen)
        rejections.extend(bad)
        valid.extend(checked.samples)
        n_seen += seen
        n_rejected = sum(r.kind == ERROR for r in bad)
        per_source[spec.name] = {
            "rows": seen,
            "rejected": n_rejected,
            "rejected_fraction": _fraction(n_rejected, seen),
            "reject_threshold": cfg.source_threshold(spec),
            "filtered": sum(r.kind == FILTERED for r in bad),
            "valid": len(checked.samples),
        }
    # Evaluation rows pass through as published unless the mixture asks otherwise.
    shaped = [s for s in valid if cfg.filter_eval_splits or s.split == "train"]
    as_published = [s for s in valid if not (cfg.filter_eval_splits or s.split == "train")]
    deduped, duplicates = deduplicate(shaped)
    capped, over_cap = cap_per_image(deduped, cfg.max_per_image, np.random.default_rng([cfg.seed, _STREAM_IMAGE_CAP]))
    final: list[Sample] = []
    for k, spec in enumerate(cfg.sources):
        mine = [s for s in capped if s.source == spec.name]
        weighted = apply_weight(mine, spec.weight, spec.cap, np.random.default_rng([cfg.seed, _STREAM_WEIGHT, k]))
        kept = weighted + [s for s in as_published if s.source == spec.name]
        final.extend(kept)
        stats = per_source[spec.name]
        stats["duplicates"] = sum(s.source == spec.name for s in duplicates)
        stats["over_image_cap"] = sum(s.source == spec.name for s in over_cap)
        # Samples the weight and cap added (repeats, > 0) or removed (< 0): with it the
        # columns add up, rows - rejected - filtered - duplicates - over_image_cap + weighting = samples.
        stats["weighting"] = len(weighted) - len(mine)
        stats["samples"] = len(kept)
        stats["per_split"] = dict(sorted(Counter(s.split for s in kept).items()))

    # Intentional drops are still written down, as filtered rows, never lost silently.
    rejections.extend(_dropped(s, "duplicate_pair", "same image(s) and instruction") for s in duplicates)
    rejections.extend(
        _dropped(s, "over_image_cap", f"more than {cfg.max_per_image} samples per image") for s in over_cap
    )
    overlap = [] if cfg.allow_split_overlap else split_overlap(final)
    write_quarantine(rejections, work / QUARANTINE)
    stats = build_stats(cfg, per_source, final, rejections, n_seen)
    # Stats and quarantine are written before failing, so the bad rows can be inspected.
    failure = _threshold_failure(cfg, rejections, n_seen, by_source, out_dir / QUARANTINE)
    if failure is None and overlap:
        failure = _overlap_error(cfg.name, overlap)
    stats["split_overlap"] = len(overlap)
    stats["status"] = FAILED if failure else OK
    atomic_write_json(work / STATS, stats, indent=2, sort_keys=True)
    if failure:
        raise failure

    save_dataset(final, root, work / DATASET, cfg.seed, progress)
    write_manifest(work, cfg, root, OK, content=content_digest(final, root))
    return stats


def _threshold_failure(
    cfg: MixtureConfig,
    rejections: Sequence[Rejection],
    n_seen: int,
    by_source: dict[str, tuple[list[Rejection], int]],
    quarantine_path: Path,
) -> RejectedFractionError | None:
    """The first threshold the build breaks: the mixture's, then each source's own."""
    failure = rejected_fraction_error(rejections, n_seen, cfg.reject_threshold, quarantine_path)
    for spec in cfg.sources:
        if failure is not None:
            return failure
        bad, seen = by_source[spec.name]
        failure = rejected_fraction_error(bad, seen, cfg.source_threshold(spec), quarantine_path, source=spec.name)
    return failure


def _swap_in(work: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the finished build in `work` (two renames; the old is removed)."""
    old = work.with_name(f"{out_dir.absolute().name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    work.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _record_failure(work: Path, out_dir: Path, cfg: MixtureConfig, root: Path, exc: Exception) -> None:
    """Leave `out_dir` with no dataset a trainer could take, and with what the failed build
    wrote (quarantine, stats) plus a manifest marked failed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / DATASET, ignore_errors=True)
    for name in (QUARANTINE, STATS):
        (out_dir / name).unlink(missing_ok=True)
        if (work / name).is_file():
            (work / name).replace(out_dir / name)
    write_manifest(out_dir, cfg, root, FAILED, error=str(exc))
