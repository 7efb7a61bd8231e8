"""Build a named training mixture: convert, validate, de-duplicate, cap, weight, shuffle, save.

Output folder of a build:
- `dataset/`        HF `datasets` DatasetDict (one Arrow table per split), `save_to_disk`
- `quarantine.jsonl` every rejected or filtered row with source, id, reason, file and row
- `stats.json`       counts per source, task and split, and rejections per reason (DVC metrics)
- `manifest.json`    the mixture config and the data root the image paths are relative to
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dragonfly.data.quarantine import (
    ERROR,
    FILTERED,
    Rejection,
    check_rejected_fraction,
    reasons,
    write_quarantine,
)
from dragonfly.data.schema import SPLITS, ImageCheck, Sample
from dragonfly.data.sources import convert
from dragonfly.data.validate import validate_samples

# Separate random streams per step, so changing one step's input leaves the others alone.
_STREAM_IMAGE_CAP, _STREAM_WEIGHT, _STREAM_SHUFFLE = 1, 2, 3


@dataclass(frozen=True)
class SourceSpec:
    """One input of a mixture. `weight` scales its sample count (0.5 halves it, 2 repeats
    it twice); `cap` then bounds it. `path` is relative to the data root unless absolute."""

    name: str
    format: str
    path: str
    weight: float = 1.0
    cap: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SourceSpec:
        return cls(**{**d, "options": dict(d.get("options") or {})})


@dataclass(frozen=True)
class MixtureConfig:
    name: str
    sources: tuple[SourceSpec, ...]
    seed: int = 0
    max_per_image: int | None = 8
    reject_threshold: float = 0.05
    min_image_size: int = 16
    validate_images: bool = True

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"mixture {self.name!r}: source names must be unique, got {names}")
        if not 0.0 <= self.reject_threshold <= 1.0:
            raise ValueError(f"reject_threshold must be in [0, 1], got {self.reject_threshold}")

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> MixtureConfig:
        sources = tuple(SourceSpec.from_dict(s) for s in d.get("sources", []))
        return cls(
            name=name, **{**{k: v for k, v in d.items() if k != "sources"}, "sources": sources}
        )


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


def apply_weight(
    samples: Sequence[Sample], weight: float, cap: int | None, rng: np.random.Generator
) -> list[Sample]:
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


def _renamed(sample: Sample, new_id: str) -> Sample:
    return Sample(**{**sample.__dict__, "id": new_id})


def _dropped(sample: Sample, reason: str, detail: str) -> Rejection:
    file, _, row = sample.origin.rpartition(":")
    return Rejection(
        sample.source,
        sample.id,
        reason,
        detail,
        file,
        int(row) if row.isdigit() else None,
        FILTERED,
    )


def _resolve(path: str, root: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _relative_origin(origin: str, root: Path) -> str:
    """Origins inside the data root are stored relative to it, so builds are portable."""
    file, sep, row = origin.rpartition(":")
    if not sep:
        return origin
    try:
        rel = Path(os.path.relpath(Path(file).resolve(), root.resolve()))
    except ValueError:
        return origin
    return origin if rel.as_posix().startswith("..") else f"{rel.as_posix()}:{row}"


def build_stats(
    cfg: MixtureConfig,
    per_source: dict[str, dict[str, int]],
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
        "rejected_fraction": round(len(errors) / n_seen, 6) if n_seen else 0.0,
        "reject_threshold": cfg.reject_threshold,
        "per_source": per_source,
        "per_task": dict(sorted(Counter(s.task for s in final).items())),
        "per_split": dict(sorted(Counter(s.split for s in final).items())),
        "rejected_by_reason": reasons(errors),
        "filtered_by_reason": reasons([r for r in rejections if r.kind == FILTERED]),
    }


def save_dataset(samples: Sequence[Sample], root: Path, target: Path, seed: int) -> None:
    """Shuffle each split by seed and write a DatasetDict atomically (tmp dir, then rename)."""
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
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    DatasetDict(splits).save_to_disk(str(tmp))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def build_mixture(
    cfg: MixtureConfig, root: Path, out_dir: Path, progress: bool = False
) -> BuildResult:
    """Build `cfg` from sources under `root` into `out_dir`.

    Raises RejectedFractionError (after writing the quarantine and stats) when the share
    of rejected rows passes `cfg.reject_threshold`; filtered rows do not count.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    image_check = ImageCheck(cfg.min_image_size) if cfg.validate_images else None
    rejections: list[Rejection] = []
    per_source: dict[str, dict[str, int]] = {}
    valid: list[Sample] = []
    n_seen = 0
    for spec in cfg.sources:
        converted = convert(
            spec.format, _resolve(spec.path, root), root, source=spec.name, **spec.options
        )
        seen = len(converted.samples) + len(converted.rejections)
        with tqdm(
            total=len(converted.samples), desc=f"validate {spec.name}", disable=not progress
        ) as bar:
            checked = validate_samples(converted.samples, root, image_check, progress=bar.update)
        bad = converted.rejections + checked.rejections
        rejections.extend(bad)
        valid.extend(checked.samples)
        n_seen += seen
        per_source[spec.name] = {
            "rows": seen,
            "rejected": sum(r.kind == ERROR for r in bad),
            "filtered": sum(r.kind == FILTERED for r in bad),
            "valid": len(checked.samples),
        }
    deduped, duplicates = deduplicate(valid)
    capped, over_cap = cap_per_image(
        deduped, cfg.max_per_image, np.random.default_rng([cfg.seed, _STREAM_IMAGE_CAP])
    )
    final: list[Sample] = []
    for k, spec in enumerate(cfg.sources):
        mine = [s for s in capped if s.source == spec.name]
        weighted = apply_weight(
            mine, spec.weight, spec.cap, np.random.default_rng([cfg.seed, _STREAM_WEIGHT, k])
        )
        final.extend(weighted)
        stats = per_source[spec.name]
        stats["duplicates"] = sum(s.source == spec.name for s in duplicates)
        stats["over_image_cap"] = sum(s.source == spec.name for s in over_cap)
        stats["samples"] = len(weighted)

    # Intentional drops are still written down, as filtered rows, never lost silently.
    rejections.extend(
        _dropped(s, "duplicate_pair", "same image(s) and instruction") for s in duplicates
    )
    rejections.extend(
        _dropped(s, "over_image_cap", f"more than {cfg.max_per_image} samples per image")
        for s in over_cap
    )
    quarantine_path = out_dir / "quarantine.jsonl"
    write_quarantine(rejections, quarantine_path)
    stats = build_stats(cfg, per_source, final, rejections, n_seen)
    stats_path = out_dir / "stats.json"
    stats_path.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    check_rejected_fraction(stats["rejected"], n_seen, cfg.reject_threshold, quarantine_path)

    dataset_dir = out_dir / "dataset"
    save_dataset(final, root, dataset_dir, cfg.seed)
    manifest = {"data_root": str(root.resolve()), "mixture": asdict(cfg)}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return BuildResult(out_dir, dataset_dir, quarantine_path, stats_path, stats)
