"""The manifest of a built mixture, and the check a trainer runs before reading the build.

`manifest.json` records whether the build finished ("status": "ok" or "failed"), the
mixture config it was built from, the data root and a fingerprint of the config. A
trainer given the config it expects refuses a build that failed, is missing, or was
built from a different config, instead of silently training on an old dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dragonfly.errors import DragonflyError
from dragonfly.files import atomic_write_json

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dragonfly.data.mixture import MixtureConfig
    from dragonfly.data.schema import Sample

MANIFEST = "manifest.json"
DATASET = "dataset"
OK, FAILED = "ok", "failed"
# At most this many differing keys are spelled out in a stale-dataset message.
_MAX_DIFFS = 5


class StaleDatasetError(DragonflyError):
    """A build folder a trainer must not read: unfinished, failed or from another config."""


class DatasetNotFoundError(DragonflyError, FileNotFoundError):
    """No built dataset where the trainer looks for one."""


class MissingSplitError(DragonflyError, KeyError):
    """A built dataset without the split a stage trains on."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def config_record(cfg: MixtureConfig) -> dict[str, Any]:
    """The mixture config as plain JSON values (tuples become lists), as stored."""
    return json.loads(json.dumps(asdict(cfg), sort_keys=True))


def fingerprint(cfg: MixtureConfig) -> str:
    """sha256 of the canonical JSON of the mixture config."""
    canonical = json.dumps(config_record(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def data_root(manifest_path: Path) -> Path:
    """The data root a build's image paths are relative to (stored relative to the manifest)."""
    return (manifest_path.parent / json.loads(manifest_path.read_text())["data_root"]).resolve()


def content_digest(samples: Sequence[Sample], root: Path) -> str:
    """sha256 of what a build holds: every sample (its text and image paths, in order) and
    the size of every image it references. A rebuild from changed sources is a new digest
    even when the mixture config is the same, so a stage trained on the old build is not
    taken as up to date. Images by size (a stat, not a read), so a deterministic
    regeneration of the same images keeps the digest."""
    digest = hashlib.sha256()
    sizes: dict[str, int] = {}
    for sample in samples:
        digest.update(json.dumps(sample.to_record(), sort_keys=True, default=str).encode("utf-8"))
        for image in sample.images:
            if image not in sizes:
                path = root / image
                sizes[image] = path.stat().st_size if path.is_file() else -1
    digest.update(json.dumps(sorted(sizes.items())).encode("utf-8"))
    return digest.hexdigest()


def write_manifest(
    out_dir: Path, cfg: MixtureConfig, root: Path, status: str, error: str | None = None, content: str | None = None
) -> Path:
    manifest: dict[str, Any] = {
        "status": status,
        "mixture": config_record(cfg),
        "fingerprint": fingerprint(cfg),
        # Relative to this manifest's folder, so the same build is the same bytes in every
        # clone and still finds its images from any working directory.
        "data_root": os.path.relpath(root.resolve(), out_dir.resolve()),
    }
    if content is not None:
        manifest["content"] = content
    if error is not None:
        manifest["error"] = error
    path = out_dir / MANIFEST
    atomic_write_json(path, manifest, indent=2, sort_keys=True)
    return path


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"sources[0].path": ..., "seed": ...}: every leaf of a JSON value by its dotted key."""
    if isinstance(value, dict):
        items = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, v in items:
        out.update(_flatten(v, key))
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key old → new' for every leaf that differs between two stored configs."""
    absent = "(absent)"
    a, b = _flatten(old), _flatten(new)
    return [
        f"{key} {json.dumps(a.get(key, absent))} → {json.dumps(b.get(key, absent))}"
        for key in sorted(set(a) | set(b))
        if a.get(key, absent) != b.get(key, absent)
    ]


def _not_ok(manifest: dict[str, Any]) -> str:
    status = manifest.get("status")
    if status == FAILED:
        return f"failed: {manifest.get('error', 'unknown error')}"
    if status is None:
        return "predates build status records"
    return f"has status {status!r}"


def verify_dataset(out_dir: Path, expected: MixtureConfig) -> Path:
    """`out_dir/dataset` when `out_dir` holds a finished build of exactly `expected`;
    StaleDatasetError saying why not otherwise."""
    hint = f"dragonfly data build --mixture {expected.name}"
    path = out_dir / MANIFEST
    if not path.is_file():
        raise StaleDatasetError(f"{out_dir} has no {MANIFEST}: not a finished build", hint=hint)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("status") != OK:
        raise StaleDatasetError(f"the last build in {out_dir} {_not_ok(manifest)}", hint=hint)
    changes = config_changes(manifest.get("mixture") or {}, config_record(expected))
    if changes:
        shown = "; ".join(changes[:_MAX_DIFFS])
        more = f"; and {len(changes) - _MAX_DIFFS} more" if len(changes) > _MAX_DIFFS else ""
        raise StaleDatasetError(
            f"{out_dir} was built from another config of mixture {expected.name!r}: {shown}{more}",
            hint=hint,
        )
    dataset = out_dir / DATASET
    if not dataset.is_dir():
        raise StaleDatasetError(f"{out_dir} has a manifest but no {DATASET}/ folder", hint=hint)
    return dataset
