"""End to end, nothing trained: a fresh tiny model evaluated on a few synthetic samples,
logged to a real MLflow sqlite store; the files written must match their schema and
`recompute_metrics` must give back metrics.json exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from dragonfly.data.schema import Sample, read_jsonl, user_assistant
from dragonfly.eval import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    EvalOptions,
    evaluate,
    get_benchmark,
    predict,
    recompute_metrics,
)
from dragonfly.eval.scoring import PREDICTION_FIELDS, Prediction, read_predictions
from dragonfly.tracking import Tracker

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

LIMIT = 8


@pytest.fixture(scope="module")
def evaluated(model_dir: Path, synth_data: tuple[Path, Path], tmp_path_factory):
    root, samples_jsonl = synth_data
    work = tmp_path_factory.mktemp("e2e")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    # Artifacts under tmp rather than the default ./mlartifacts of the working directory.
    MlflowClient(uri).create_experiment("eval-test", artifact_location=(work / "art").as_uri())
    tracker = Tracker("eval-test", "e2e", uri=uri)
    out = work / "out"
    options = EvalOptions(root=root, data=samples_jsonl, batch_size=3, limit=LIMIT, max_new_tokens=6, progress=False)
    metrics = evaluate(model_dir, "synth_general", out, options, tracker=tracker)
    tracker.finish()
    return {
        "out": out,
        "metrics": metrics,
        "uri": uri,
        "run_id": tracker.run_id,
        "samples": list(read_jsonl(samples_jsonl)),
    }


def test_files_schema_and_metrics_recomputed_from_predictions(evaluated) -> None:
    out: Path = evaluated["out"]
    lines = (out / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    expected = [s for s in evaluated["samples"] if s["split"] == "test"][:LIMIT]
    assert [r["id"] for r in records] == [s["id"] for s in expected]
    assert {r["task"] for r in records} == {"vqa_closed", "vqa_open", "mcq", "caption"}
    for rec, sample in zip(records, expected, strict=True):
        assert set(rec) == set(PREDICTION_FIELDS)
        assert isinstance(rec["prediction"], str)
        assert rec["references"] == sample["answers"]
        assert rec["prompt"].count("<image>") == len(rec["images"]) == 1
        assert rec["score"], f"{rec['id']} has no per-sample score"
        assert all(isinstance(v, float) for v in rec["score"].values())
        if rec["task"] != "caption":
            assert rec["score"]["correct"] in (0.0, 1.0)
        else:
            assert {"bleu_4", "meteor", "rouge_l", "cider"} <= set(rec["score"])

    on_disk = json.loads((out / METRICS_FILE).read_text())
    assert on_disk == evaluated["metrics"]
    assert all(type(v) is float for v in on_disk.values()), "DVC metrics must be flat floats"
    assert on_disk["n"] == LIMIT
    for key in (
        "accuracy",
        "vqa_closed_accuracy",
        "vqa_open_exact_match",
        "vqa_open_token_f1",
        "mcq_accuracy",
        "caption_cider",
        "caption_meteor",
        "caption_rouge_l",
        "caption_bleu_4",
    ):
        assert key in on_disk
    assert recompute_metrics(out / PREDICTIONS_FILE, "synth_general") == on_disk


def test_recompute_follows_the_predictions_file(evaluated, tmp_path: Path) -> None:
    """Answers set to the references score 1: recompute reads the file, not a cache."""
    records = [
        replace(r, prediction=r.references[0])
        for r in read_predictions(evaluated["out"] / PREDICTIONS_FILE)
        if r.task != "caption"  # keeps the test clear of the METEOR JVM
    ]
    path = tmp_path / PREDICTIONS_FILE
    path.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    again = recompute_metrics(path, "synth_general")
    assert again["accuracy"] == again["mcq_accuracy"] == again["vqa_closed_accuracy"] == 1.0
    assert again["vqa_open_token_f1"] == 1.0 and "caption_cider" not in again


def test_mlflow_run_has_params_metrics_and_both_files(evaluated, tmp_path: Path) -> None:
    client = MlflowClient(evaluated["uri"])
    run = client.get_run(evaluated["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["benchmark"] == "synth_general"
    assert run.data.params["n_samples"] == str(LIMIT)
    assert Path(run.data.params["model_dir"]).is_dir()
    assert run.data.metrics == pytest.approx(evaluated["metrics"])
    listed = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "synth_general")}
    assert listed == {PREDICTIONS_FILE, METRICS_FILE}
    local = Path(client.download_artifacts(run.info.run_id, "synth_general", str(tmp_path)))
    for name in listed:
        assert (local / name).read_bytes() == (evaluated["out"] / name).read_bytes()


def test_multi_image_sample_gets_all_its_images(model_dir: Path, tmp_path: Path) -> None:
    """An IU X-Ray-style study (frontal + lateral) goes through generation as one sample."""
    from dragonfly.inference import load

    for name, color in (("f.png", (200, 200, 200)), ("l.png", (90, 90, 90))):
        Image.new("RGB", (96, 128), color).save(tmp_path / name)
    study = Sample(
        "iu_xray:1",
        "iu_xray",
        "test",
        "report",
        ("f.png", "l.png"),
        user_assistant("x", "No acute disease.", 2),
        ("No acute disease.",),
    )
    single = replace(study, id="iu_xray:2", images=("f.png",), turns=user_assistant("x", "y", 1))
    model, processor = load(model_dir)
    spec = get_benchmark("iu_xray")
    out = predict(
        model,
        processor,
        spec,
        [study, single],
        tmp_path,
        batch_size=2,
        max_new_tokens=3,
        progress=False,
    )
    assert [p.prompt.count("<image>") for p in out] == [2, 1]
    assert all(isinstance(p, Prediction) and p.prediction == p.prediction.strip() for p in out)
