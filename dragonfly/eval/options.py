"""How an evaluation reads, generates and scores: one object from the CLI to the evaluator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EvalOptions:
    """Everything an evaluation takes beyond the model and the benchmarks, beyond each
    benchmark's defaults. ``root``: the data root image paths are relative to (the
    pipeline's default: ``params``' ``data.root``; the evaluator's: the current folder);
    ``data``: a samples JSONL, a built mixture or a raw release instead of each benchmark's
    converted file; ``own_data``: what a benchmark that scores your data (``vqa``, ``mcq``,
    ``caption``: no converted file of its own) reads when ``data`` is not given (the
    ablation's mixture); ``split`` and ``sources`` override the benchmark's; ``max_new_tokens``
    every task's answer limit; ``limit`` the first N samples. ``batch_size`` and
    ``progress`` change no number, so they are left out of an evaluation's fingerprint
    (:data:`UNSCORED`)."""

    root: str | Path | None = None
    data: str | Path | None = None
    own_data: str | Path | None = None
    split: str | None = None
    sources: tuple[str, ...] | None = None
    max_new_tokens: int | None = None
    limit: int | None = None
    batch_size: int = 16
    progress: bool = True


UNSCORED = ("batch_size", "progress")
