"""Throughput of `dragonfly data build` on the default tiny data (both synthetic variants).

Peer in the same run: the same build with image validation off, so the ratio shows what
decoding every image costs. Run: .venv/bin/python benchmarks/bench_data_build.py
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dragonfly.data.config import default_data_config  # noqa: E402
from dragonfly.data.mixture import build_mixture  # noqa: E402
from dragonfly.data.synth import write  # noqa: E402


def timed_build(mixture, root: Path, out: Path, repeats: int) -> tuple[float, int]:
    best = float("inf")
    n = 0
    for r in range(repeats):
        start = time.perf_counter()
        result = build_mixture(mixture, root, out / str(r))
        best = min(best, time.perf_counter() - start)
        n = result.stats["samples"]
    return best, n


def main(repeats: int = 3) -> None:
    cfg = default_data_config()
    tiny = cfg.mixture("tiny")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        start = time.perf_counter()
        for synth in cfg.synth:
            write(synth, root)
        synth_s = time.perf_counter() - start
        n_images = sum(sum(s.counts().values()) for s in cfg.synth)
        with_images, n = timed_build(tiny, root, root / "with", repeats)
        without, _ = timed_build(replace(tiny, validate_images=False), root, root / "without", repeats)
    print(f"synthetic generation: {n_images} images in {synth_s:.2f} s ({n_images / synth_s:.0f} images/s)")
    print(f"build, image validation on : {n} samples in {with_images:.2f} s = {n / with_images:.0f} samples/s")
    print(f"build, image validation off: {n} samples in {without:.2f} s = {n / without:.0f} samples/s")
    print(f"ratio on/off: {without / with_images:.2f}x of the no-validation throughput")


if __name__ == "__main__":
    main()
