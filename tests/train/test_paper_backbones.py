"""The paper profile on backbones as the hub holds them: CLIP and SigLIP dual encoders and a
Llama-3 LLM written by transformers 4.45.2 (`tests/fixtures/hub`, `WRITTEN_BY.json`), with
their 4.x tensor names (`vision_model.*`, `text_model.*`) and config keys. `dragonfly init`
and `dragonfly train` as a user types them, one step of each general stage."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dragonfly.inference import load

HUB = Path(__file__).resolve().parents[1] / "fixtures" / "hub"
ONE_STEP = ["max_steps=1", "global_batch=1", "micro_batch=1", "precision=fp32", "num_workers=0"]
ONE_STEP += ["warmup_ratio=0", "data.mixture=tiny_general"]  # a full lr on the one step


@pytest.mark.parametrize("vision", ["clip", "siglip"])
def test_the_paper_profile_builds_and_trains_on_backbones_transformers_4x_wrote(vision, workspace, run_cli, tmp_path):
    sets = [f"model.vision={HUB / vision}", f"model.llm={HUB / 'llama3'}", "model.dtype=float32"]
    sets += [f"runs_dir={tmp_path / 'runs'}"]
    flags = ["--profile", "paper", "--params", str(workspace / "params.yaml")]
    flags += [arg for s in sets for arg in ("--set", s)]
    run_cli("init", str(tmp_path / "init"), *flags, cwd=workspace)
    dual, llm = load_file(HUB / vision / "model.safetensors"), load_file(HUB / "llama3" / "model.safetensors")
    model, processor = load(tmp_path / "init")
    tower = model.vision_tower.state_dict()
    assert tower and all(torch.equal(t, dual[f"vision_model.{name}"]) for name, t in tower.items())
    ours = model.language_model.state_dict()
    assert ours.keys() == llm.keys() and all(torch.equal(ours[k], llm[k]) for k in llm)
    mean = json.loads((HUB / vision / "preprocessor_config.json").read_text())["image_mean"]
    assert processor.image_processor.image_mean == pytest.approx(mean)
    assert model.config.tokens_per_tile == (49 + 1 if vision == "clip" else 49)  # SigLIP has no CLS
    for stage in ("general1", "general2"):
        done = run_cli("train", "--stage", stage, *flags, *ONE_STEP, cwd=workspace)
        assert f"{stage} step 1/1" in done.stdout and "freshly initialised" not in done.stdout
    trained, _ = load(tmp_path / "runs" / "paper" / "general2" / "final")
    after = trained.vision_tower.state_dict()
    assert any(not torch.equal(after[k], tower[k]) for k in tower)  # general2 trains the tower too
    assert any(not torch.equal(v, ours[k]) for k, v in trained.language_model.state_dict().items())
    losses = [json.loads(line)["loss"] for line in (tmp_path / "runs/paper/general2/metrics.jsonl").open()]
    assert len(losses) == 1 and math.isfinite(losses[0])
