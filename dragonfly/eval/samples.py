"""Where a benchmark's samples come from, and which of them it evaluates.

`load_samples` reads (see the list in `dragonfly.eval.benchmarks`): a converted samples
JSONL, a built mixture / saved DatasetDict, or a raw release through the benchmark's
converter. `select_samples` narrows them to the benchmark's split, sources and tasks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dragonfly.data.manifest import data_root as manifest_data_root
from dragonfly.data.schema import Sample
from dragonfly.data.sources import convert
from dragonfly.errors import DragonflyError
from dragonfly.eval.benchmarks import BenchmarkSpec
from dragonfly.files import read_jsonl


class NoSamplesError(DragonflyError, LookupError):
    """The data holds no sample the benchmark can evaluate; says what the data does hold."""


@dataclass(frozen=True)
class Loaded:
    samples: list[Sample]
    root: Path  # image paths in `samples` are relative to this
    origin: str  # how they were read, for logs and MLflow params


def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file() or (path / "dataset" / "dataset_dict.json").is_file()
    )


def _from_dataset(path: Path, split: str | None) -> tuple[list[Sample], Path | None]:
    """Samples of `split` (every split when None or absent) and the manifest's data root."""
    from datasets import load_from_disk

    manifest = path / "manifest.json"
    data_root = manifest_data_root(manifest) if manifest.is_file() else None
    dataset_dir = path / "dataset" if (path / "dataset").is_dir() else path
    dd = load_from_disk(str(dataset_dir))
    splits = [split] if split in dd else list(dd)
    return [Sample.from_record(rec) for name in splits for rec in dd[name]], data_root


def load_samples(
    spec: BenchmarkSpec,
    data: Path | None,
    root: Path,
    split: str | None = None,
    every_split: bool = False,
) -> Loaded:
    """Samples for `spec` from `data` (or the spec's default converted JSONL under `root`).

    From a mixture only `split` (default: the spec's) is read, or all with `every_split`.
    Image paths resolve against the data root named in the mixture's manifest while that
    directory exists (it is where the build found them), else against `root` — for a
    mixture moved to another machine.
    """
    if data is None and scores_own_data(spec):
        raise NoSamplesError(
            f"benchmark {spec.name!r} scores your data: pass --data (a built mixture folder or a samples JSONL)"
        )
    path = data if data is not None else root / spec.default_path
    if not path.exists():
        raise NoSamplesError(
            f"no data for benchmark {spec.name!r} at {path}: pass --data (a samples JSONL, "
            f"a built mixture, or the raw release for converter {spec.format!r})"
        )
    if path.is_file() and path.suffix == ".jsonl":
        return Loaded([Sample.from_record(rec) for rec in read_jsonl(path)], root, f"jsonl:{path}")
    if is_dataset_dir(path):
        samples, data_root = _from_dataset(path, None if every_split else split or spec.split)
        use_root = data_root if data_root is not None and data_root.is_dir() else root
        return Loaded(samples, use_root, f"dataset:{path}")
    converted = convert(spec.format, path, root, **dict(spec.convert_options))
    return Loaded(converted.samples, root, f"{spec.format}:{path}")


def scores_own_data(spec: BenchmarkSpec) -> bool:
    """Whether `spec` has no converted file of its own and reads the data it is given."""
    return not spec.default_path


def _holdings(samples: Sequence[Sample]) -> str:
    counts = Counter((s.source, s.split, s.task) for s in samples)
    shown = ", ".join(f"{src}/{sp}/{t}: {n}" for (src, sp, t), n in sorted(counts.items())[:20])
    return shown or "nothing"


def select_samples(
    spec: BenchmarkSpec,
    samples: Sequence[Sample],
    split: str | None = None,
    sources: Sequence[str] | None = None,
    limit: int | None = None,
    origin: str = "",
) -> list[Sample]:
    """The samples `spec` evaluates, in input order: its split (or `split`), its source
    names (or `sources`), its tasks, with images when it requires them; then the first
    `limit`. Raises `NoSamplesError` naming what the data (read from `origin`) holds when
    nothing is left."""
    split = split or spec.split
    accepted = set(sources or spec.sources)  # empty: a generic benchmark takes any source
    chosen = [
        s
        for s in samples
        if s.split == split
        and (not accepted or s.source in accepted)
        and s.task in spec.tasks
        and (s.images or not spec.require_images)
    ]
    if not chosen:
        where = f"source in {sorted(accepted)} and " if accepted else ""
        raise NoSamplesError(
            f"benchmark {spec.name!r} found no samples{f' in {origin}' if origin else ''} with split {split!r}, "
            f"{where}task in {list(spec.tasks)}; the data holds (source/split/task): {_holdings(samples)}. "
            "Use --source / --split to pick others, or --data for other data."
        )
    unanswered = [s.id for s in chosen if not s.answers]
    if unanswered:
        raise ValueError(f"samples without reference answers cannot be scored: {unanswered[:10]}")
    return chosen[:limit] if limit is not None else chosen
