"""`dragonfly ablate` for real at CI size: three variants of the tiny profile trained for a
step or two on a small synthetic workspace, evaluated on a few test samples, logged to a
real MLflow sqlite store; then run again to check that finished variants are reused."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from dragonfly.build import build_tiny
from dragonfly.config import ConfigError, Layout, from_dict, load_profile
from dragonfly.data.config import DataConfig
from dragonfly.data.mixture import build_mixture
from dragonfly.data.synth import SynthConfig, write
from dragonfly.eval.evaluator import METRICS_FILE
from dragonfly.pipeline import EvalOptions
from dragonfly.pipeline.ablate import load_variants, run_ablation
from dragonfly.pipeline.overrides import profile_overrides

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ["baseline1", "dragonfly_region", "dragonfly_global"]
# One projector step, two full steps: enough to exercise the chain, not to learn.
OVERRIDES = ["max_steps=1", "global_batch=2", "micro_batch=2", "save_every=100", "stages.general2.max_steps=2"]
LIMIT = 8
EVALUATION = EvalOptions(limit=LIMIT, batch_size=8, progress=False)
EXPERIMENT = "dragonfly-tiny"
# Tiny profile: 4×4 patches + CLS = 17 tokens per tile, + 1 separator.
TOKENS = {
    "baseline1": 90,
    "baseline2": 306,
    "baseline3": 450,
    "dragonfly_region": 306,
    "dragonfly_global": 306,
    "dragonfly_least_similar": 306,
    "dragonfly_index_block": 306,
    "dragonfly_random": 306,
    "high_4x4": 306,
    "high_6x8": 306,
}
ENCODED = {
    "baseline1": 5,
    "baseline2": 17,
    "baseline3": 25,
    "dragonfly_region": 29,
    "dragonfly_global": 29,
    "dragonfly_least_similar": 29,
    "dragonfly_index_block": 29,
    "dragonfly_random": 29,
    "high_4x4": 21,
    "high_6x8": 53,
}


def _workspace(root: Path) -> Path:
    """Synthetic general data, the tiny_general mixture, and params.yaml pointing at them."""
    data = root / "data"
    write(SynthConfig(variant="general", seed=0, n_train=6, n_validation=1, n_test=2), data)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(root=str(data), out_dir=str(data / "mixtures"), synth=[])
    params["data"]["mixtures"] = {"tiny_general": params["data"]["mixtures"]["tiny_general"]}
    params["profiles"]["tiny"]["model"]["tiny"]["vision_from"] = None  # random tower keeps this test fast
    build_mixture(
        DataConfig.from_dict(params["data"]).mixture("tiny_general"), data, data / "mixtures" / "tiny_general"
    )
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ablated(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    params = _workspace(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("DRAGONFLY_TRACKING", "1")
        mp.delenv("DRAGONFLY_PARENT_RUN_ID", raising=False)
        MlflowClient(uri).create_experiment(EXPERIMENT, artifact_location=(root / "art").as_uri())
        first = run_ablation(VARIANTS, "tiny", params, root / "out", OVERRIDES, evaluation=EVALUATION, progress=False)
        # Later calls rewrite the same files; keep what the first one wrote.
        written = {kind: path.read_text() for kind, path in first.files.items() if path.suffix != ".png"}
        parent_env = os.environ.get("DRAGONFLY_PARENT_RUN_ID")
        stamps = {p: p.stat().st_mtime_ns for p in (root / "out").glob("*/*/final/model.safetensors")}
        second = run_ablation(VARIANTS, "tiny", params, root / "out", OVERRIDES, evaluation=EVALUATION, progress=False)
        cli = CliRunner().invoke(
            _app(),
            [
                "ablate",
                "--params",
                str(params),
                "--out",
                str(root / "out"),
                "--limit",
                str(LIMIT),
                "--no-mlflow",
                "--batch-size",
                "8",
                *[a for v in VARIANTS for a in ("--variant", v)],
                *OVERRIDES,
            ],
        )
        yield {
            "root": root,
            "params": params,
            "uri": uri,
            "first": first,
            "second": second,
            "stamps": stamps,
            "cli": cli,
            "written": written,
            "parent_env": parent_env,
        }


def _app():
    from dragonfly.cli import app

    return app


def _row(markdown: str, label: str) -> list[str]:
    """Cells of the first table row starting with `label`, per table."""
    return [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith(f"| {label} |")]


def test_files_written_with_variant_columns_and_visual_tokens(ablated) -> None:
    files = ablated["first"].files
    assert all(path.is_file() for path in files.values())
    assert {p.name for p in files.values()} == {
        "ablation.md",
        "ablation.csv",
        "ablation.json",
        "ablation_synth_general.png",
    }
    assert (
        "![synth_general: accuracy against visual tokens per image](ablation_synth_general.png)"
        in files["markdown"].read_text()
    )
    markdown = ablated["written"]["markdown"]
    for title in ("Table 1", "Table 5", "Table 6"):
        assert title in markdown
    headers = [line for line in markdown.splitlines() if line.startswith("| benchmark | metric |")]
    assert [h.strip("|").split("|")[2:] for h in headers][0] == [" baseline1 ", " dragonfly_region "]
    assert [c.strip() for c in headers[1].strip("|").split("|")[2:]] == ["dragonfly_global", "dragonfly_region"]
    tokens = [[c.strip() for c in row[2:]] for row in _row(markdown, "visual tokens / image")]
    assert tokens == [["90", "306"], ["306", "306"], ["306"]]
    encoded = [[c.strip() for c in row[2:]] for row in _row(markdown, "tiles encoded / image")]
    assert encoded[0] == ["5", "29"]
    for name, result in ablated["first"].variants.items():
        assert (result.visual_tokens, result.tiles_encoded) == (TOKENS[name], ENCODED[name])
        assert result.tiles_kept == TOKENS[name] // 18
        assert result.final_loss is not None and result.train_seconds > 0
    assert "synth_general / vqa_closed" in markdown and "caption_cider" in markdown
    assert len(_row(markdown, "synth_general")) == 3 + 3  # per table: headline + distinct answers


def test_distinct_answers_counted_from_predictions(ablated) -> None:
    out = ablated["root"] / "out"
    for name, result in ablated["first"].variants.items():
        records = [
            json.loads(line)
            for line in (out / name / "eval" / "synth_general" / "predictions.jsonl").read_text().splitlines()
        ]
        pairs = {(r["task"], " ".join(r["prediction"].lower().split())) for r in records}
        assert result.distinct_answers == {"synth_general": len(pairs) / LIMIT}


def test_every_variant_layout_gives_the_paper_token_counts(ablated) -> None:
    """All seven variants, model config only (training baseline3 would not fit CI time)."""
    section = load_profile("tiny", ablated["params"]).model
    base = {"medium_grids": section.layout.medium_grids, "high_grids": section.layout.high_grids}
    for name, layout in load_variants(ablated["params"]).items():
        cfg = build_tiny(section.tiny, from_dict(Layout, {**base, **layout}))[0].config
        assert (cfg.image_seq_length, cfg.num_encoded_tiles) == (TOKENS[name], ENCODED[name]), name


def test_csv_equals_each_variants_metrics_json(ablated) -> None:
    out = ablated["root"] / "out"
    rows = list(csv.DictReader(io.StringIO(ablated["written"]["csv"])))
    assert {r["variant"] for r in rows} == set(VARIANTS)
    for variant in VARIANTS:
        on_disk = json.loads((out / variant / "eval" / "synth_general" / METRICS_FILE).read_text())
        in_csv = {
            r["metric"]: float(r["value"])
            for r in rows
            if r["variant"] == variant and r["benchmark"] == "synth_general"
        }
        assert in_csv == on_disk
        assert on_disk["n"] == LIMIT
        model = {r["metric"]: float(r["value"]) for r in rows if r["variant"] == variant and r["benchmark"] == "model"}
        assert model["visual_tokens"] == TOKENS[variant]
    payload = json.loads(ablated["written"]["json"])
    assert set(payload["variants"]) == set(VARIANTS)


def test_second_run_reuses_finished_variants(ablated) -> None:
    assert ablated["first"].reused == []
    assert ablated["second"].reused == VARIANTS
    after = {p: p.stat().st_mtime_ns for p in (ablated["root"] / "out").glob("*/*/final/model.safetensors")}
    assert after == ablated["stamps"] and len(after) == 2 * len(VARIANTS)
    for name in VARIANTS:
        assert ablated["second"].variants[name].metrics == ablated["first"].variants[name].metrics
    cli = ablated["cli"]
    assert cli.exit_code == 0, cli.output
    assert "reused without retraining: baseline1, dragonfly_region, dragonfly_global" in " ".join(cli.output.split())


def test_changed_eval_settings_reevaluate_without_retraining(ablated, monkeypatch) -> None:
    monkeypatch.chdir(ablated["root"])
    result = run_ablation(
        ["baseline1"],
        "tiny",
        ablated["params"],
        ablated["root"] / "out",
        OVERRIDES,
        evaluation=EvalOptions(limit=4, batch_size=8, progress=False),
        progress=False,
        mlflow=False,
    )
    variant = result.variants["baseline1"]
    assert variant.reused_stages == ["general1", "general2"] and variant.reused_evals == []
    assert variant.metrics["synth_general"]["n"] == 4


def test_mlflow_parent_with_nested_variant_and_stage_runs(ablated) -> None:
    client = MlflowClient(ablated["uri"])
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = client.search_runs([experiment], max_results=500)
    parents = [r for r in runs if r.data.tags.get("dragonfly.ablation") == "parent"]
    assert len(parents) == 2  # one per mlflow-enabled call
    first = ablated["first"].parent_run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first]
    assert sorted(r.info.run_name for r in children) == sorted(VARIANTS)
    assert all(r.info.status == "FINISHED" for r in children)
    artifacts = {a.path for a in client.list_artifacts(first, "ablation")}
    assert artifacts == {
        "ablation/ablation.md",
        "ablation/ablation.csv",
        "ablation/ablation.json",
        "ablation/ablation_synth_general.png",
    }
    for child in children:
        assert child.data.metrics["model.visual_tokens"] == TOKENS[child.info.run_name]
        stage_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == child.info.run_id]
        assert sorted(r.info.run_name for r in stage_runs) == ["general1", "general2"]
    second_children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == ablated["second"].parent_run_id]
    assert {r.data.tags["dragonfly.ablation.reused"] for r in second_children} == {"true"}
    assert ablated["parent_env"] is None  # the variant's run id was set for training only


def test_stage_overrides_apply_to_all_or_one_stage() -> None:
    stages = ["general1", "general2", "med1"]
    given = ["lr=1e-3", "stages.general2.max_steps=300", "data.mixture=x", "data.root=/mnt"]
    assert profile_overrides(given, ["general1", "general2"], stages) == [
        "stages.general1.lr=1e-3",
        "stages.general2.lr=1e-3",
        "stages.general2.max_steps=300",
        "stages.general1.data.mixture=x",
        "stages.general2.data.mixture=x",
        "data.root=/mnt",  # the data section's own key
    ]
    # The old stage-first form, and a stage setting where no stage trains, are refused with the form that works.
    with pytest.raises(ConfigError, match=r"write stages\.general2\.max_steps=300"):
        profile_overrides(["general2.max_steps=300"], ["general1", "general2"], stages)
    with pytest.raises(ConfigError, match=r"trains no stage; write stages\.<stage>\.data\.mixture=x"):
        profile_overrides(["data.mixture=x"], [], stages)
