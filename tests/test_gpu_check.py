"""The GPU check's smoke mode (`benchmarks/gpu_check.sh OUT --smoke`) on the CPU: every
section runs on cut-down shapes and writes its JSON and markdown, so the script a GPU
session runs (benchmarks/README.md, "GPU check") does not rot between GPU runs. No timing
is asserted, only that each figure is there, finite and, where a tolerance is stated, within it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

REPO = Path(__file__).resolve().parents[1]
PARTS = {"vision", "projector", "llm"}
STEP_PARTS = ("h2d", "vision_forward", "selection", "llm_forward", "llm_backward", "vision_backward", "optimiser")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> subprocess.CompletedProcess:
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    done.out = out
    return done


@pytest.fixture(scope="module")
def smoke(run) -> tuple[dict, str]:
    """(the JSON, the markdown) the smoke run wrote, whatever its exit status."""
    return json.loads((run.out / "gpu_check.json").read_text()), (run.out / "gpu_check.md").read_text()


def test_every_section_ran_in_smoke_mode(run, smoke):
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]  # 1: an error or a figure out of tolerance
    assert (run.out / "gpu_check.log").is_file()
    results, _ = smoke
    assert results["errors"] == {}
    assert set(results["sections"]) == {"tiny", "trainer", "paper", "step"}
    assert results["meta"]["mode"] == "smoke"
    assert results["meta"]["packages"]["transformers"]  # version and where it was imported from


@pytest.mark.parametrize("model", ["tiny", "paper"])
def test_bf16_agrees_with_fp32_within_the_stated_tolerance(smoke, model):
    agreement = smoke[0]["sections"][model]["agreement"]
    tolerance = agreement["tolerance"]
    assert tolerance["why"]
    assert math.isfinite(agreement["loss_fp32"]) and math.isfinite(agreement["loss_bf16"])
    assert 0 <= agreement["loss_rel"] <= tolerance["loss_rel"]
    assert set(agreement["grads"]) == PARTS  # general2: every part trains
    for grads in agreement["grads"].values():
        assert 0 < grads["rel"] <= tolerance["grad_rel"]  # bf16 differs, but only by rounding
        assert 0.99 < grads["cos"] <= 1 + 1e-9
    assert agreement["same_tiles"] and agreement["within_tolerance"]


@pytest.mark.parametrize("model", ["tiny", "paper"])
def test_zoom_decisions_are_counted_on_real_images(smoke, model):
    zoom = smoke[0]["sections"][model]["zoom"]
    assert zoom["model_matches_regions"]  # the per-region emulation reproduces the model's choice
    assert zoom["images"] >= 1 and zoom["regions"] >= zoom["images"]
    for key in ("flips_fp32_scoring", "flips_bf16_scoring", "near_tie_flips"):
        assert 0 <= zoom[key] <= zoom["regions"]
    assert 0 <= zoom["flip_rate"] <= 1 and isinstance(zoom["fp32_scoring_needed"], bool)


def test_the_trainer_resumes_bit_exact(smoke):
    trainer = smoke[0]["sections"]["trainer"]
    assert trainer["bit_exact"]
    assert trainer["loss_max_diff"] == 0.0 and trainer["weights_max_diff"] == 0.0
    assert trainer["steps"] == 4 and len(trainer["reference_losses"]) == 4


def test_the_step_is_split_by_part_beside_the_dry_run(smoke):
    step = smoke[0]["sections"]["step"]
    assert step["positions_per_sample"] == 300 + 867 - 1  # the dry run's text + one image's positions
    for part in STEP_PARTS:
        assert math.isfinite(step["ms"][part]) and step["ms"][part] >= 0
    # The parts tile the step without overlap: together no longer than it, and it no longer than the wall time.
    assert sum(step["ms"][p] for p in STEP_PARTS) <= step["ms"]["gpu_step"] * 1.001 <= step["ms"]["wall"] * 1.001
    assert step["ms"]["data_wait"] >= 0 and step["tokens_per_s"] > 0
    dry = step["dry_run"]
    assert dry["flops"] > dry["llm_flops"] > 0 and dry["memory_total"] > 0 and dry["step_s"] > 0
    assert set(dry["memory"]) == {"weights", "gradients", "optimizer", "activations"}
    assert 0 < step["mfu"]["datasheet"] < step["mfu"]["measured_peak"]


def test_the_markdown_has_every_table_row(smoke):
    _, markdown = smoke
    for row in (
        "| loss, bf16 vs fp32 (relative) | tiny |",
        "| gradient of vision, bf16 vs fp32 (relative L2) | paper |",
        "| paper | 4 / ",
        "| resume bit-exact | yes |",
        "| step time (ms) |",
        "| tokens/s |",
        "| data wait (ms, mean / max) |",
        "| selection (ms) |",
        "| LLM backward (ms) |",
        "| optimiser (ms) |",
        "| MFU, whole step (of 989 / 790 TFLOP/s) |",
        "| MFU, LLM forward + backward (of 989 / 790 TFLOP/s) |",
        "| peak memory (GB) |",
    ):
        assert row in markdown, row
    assert "failed" not in markdown
