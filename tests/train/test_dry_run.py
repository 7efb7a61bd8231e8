"""`dragonfly train --dry-run` (issue #14, item 3): the paper model from the shipped
backbone configs on the meta device, offline in seconds; its FLOP formula against torch's
FLOP counter; and the samples that `<image>` expansion pushes over max_length."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dragonfly.pipeline.dryrun import dry_run

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "dragonfly"


def test_paper_dry_run_needs_no_weights_and_prints_the_figures(tmp_path: Path) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home"), "COLUMNS": "200"}
    result = subprocess.run(
        [str(BIN), "train", "--profile", "paper", "--stage", "general1", "--dry-run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    # Llama-3-8B-Instruct and CLIP ViT-B/32's tower, from their configs alone.
    assert re.search(r"llm\s+│\s+8\.03 G\s+│\s+frozen", out) and re.search(r"projector\s+│\s+3\.15 M\s+│\s+yes", out)
    for figure in ("FLOPs per optimiser step", "memory per GPU", "time at 40% MFU", "padding share", "over max_length"):
        assert figure in out, figure
    assert "558,128 samples" in out  # the paper's LLaVA-Pretrain count, as the mixture is not built
    assert not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize("parts", [["projector"], ["projector", "vision", "llm"], ["vision", "projector"]])
def test_the_flop_formula_matches_torchs_counter_within_5_percent(parts) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_step_flops as bench

    model, processor = bench.tiny()
    model.set_attn_implementation("eager")  # the fused CPU attention kernel has no FLOP formula in the counter
    counted, formula, _ = bench.measure(model, bench.batch_for(processor, tempfile.mkdtemp()), parts)
    assert formula == pytest.approx(counted, rel=0.05)


def test_samples_over_max_length_after_image_expansion_are_named(workspace: Path) -> None:
    params = workspace / "params.yaml"
    full = dry_run("general2", "tiny", params, ["model.tiny.vision_from=null"], gpus=1)
    lengths = sorted(length for length, _ in full.lengths)
    assert not full.over_max and lengths[0] > full.image_positions  # every sample has an image
    cut = lengths[len(lengths) // 2]
    short = dry_run(
        "general2", "tiny", params, [f"stages.general2.data.max_length={cut}", "model.tiny.vision_from=null"], gpus=1
    )
    assert len(short.over_max) == sum(length > cut for length in lengths) > 0
    assert all(rid.startswith("synth_general") for rid in short.over_max)
