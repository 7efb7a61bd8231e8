"""The `eval` command and the evaluator's refusals: unknown benchmark, judge not
configured (skipped, never faked), no matching data."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dragonfly.cli.eval import app
from dragonfly.data.synth import SynthConfig, write
from dragonfly.eval import (
    BENCHMARKS,
    METRICS_FILE,
    PREDICTIONS_FILE,
    EvalOptions,
    NoSamplesError,
    UnknownBenchmarkError,
    evaluate,
    get_benchmark,
)

runner = CliRunner()


def test_unknown_benchmark_lists_the_known_ones(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownBenchmarkError) as err:
        get_benchmark("vqa-rad")
    message = str(err.value)
    assert "unknown benchmark 'vqa-rad'" in message
    assert all(name in message for name in BENCHMARKS)
    with pytest.raises(UnknownBenchmarkError):
        evaluate(model_dir, "nope", tmp_path / "out", EvalOptions(root=tmp_path))
    result = runner.invoke(app, ["--model", str(model_dir), "--benchmark", "nope"])
    assert result.exit_code == 2
    assert "unknown benchmark" in result.output and "vqa_rad" in result.output


def test_judge_benchmark_without_endpoint_is_skipped_not_faked(no_judge, tmp_path: Path) -> None:
    out = tmp_path / "mmvet"
    (out / PREDICTIONS_FILE).parent.mkdir(parents=True)
    (out / PREDICTIONS_FILE).write_text("stale\n")
    # Neither model nor data exist: a skipped benchmark must not need them.
    result = evaluate(tmp_path / "no-model", "mmvet", out, EvalOptions(root=tmp_path / "no-data"))
    assert set(result) == {"skipped"}
    assert "DRAGONFLY_JUDGE_BASE_URL" in result["skipped"] and "skipped" in result["skipped"]
    assert json.loads((out / METRICS_FILE).read_text()) == result
    assert not (out / PREDICTIONS_FILE).exists()

    cli = runner.invoke(
        app,
        [
            "--model",
            str(tmp_path / "no-model"),
            "--benchmark",
            "mmvet",
            "--out",
            str(tmp_path / "cli"),
            "--no-progress",
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert "mmvet skipped" in cli.output and "DRAGONFLY_JUDGE_MODEL" in cli.output
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert "skipped" in summary["mmvet"]


def test_cli_single_benchmark_writes_files(model_dir: Path, synth_data, tmp_path: Path) -> None:
    root, samples = synth_data
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "--model",
            str(model_dir),
            "--benchmark",
            "synth_general_mcq",
            "--data",
            str(samples),
            "--root",
            str(root),
            "--out",
            str(out),
            "--limit",
            "2",
            "--batch-size",
            "2",
            "--max-new-tokens",
            "3",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "synth_general_mcq" / METRICS_FILE).read_text())
    assert metrics["n"] == 2.0 and 0.0 <= metrics["accuracy"] <= 1.0
    assert len((out / "synth_general_mcq" / PREDICTIONS_FILE).read_text().splitlines()) == 2
    assert json.loads((out / "summary.json").read_text()) == {"synth_general_mcq": metrics}


def test_cli_all_runs_what_is_found_under_root(model_dir: Path, tmp_path: Path) -> None:
    """No --data: every benchmark whose converted JSONL sits at its default path."""
    root = tmp_path / "data"
    write(
        SynthConfig(
            variant="biomedical",
            n_train=0,
            n_validation=0,
            n_test=1,
            sizes=((160, 128),),
            tasks=("vqa_closed", "vqa_open"),
        ),
        root,
    )
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "--model",
            str(model_dir),
            "--root",
            str(root),
            "--out",
            str(out),
            "--max-new-tokens",
            "3",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert set(json.loads((out / "summary.json").read_text())) == {"synth_biomedical"}
    metrics = json.loads((out / "synth_biomedical" / METRICS_FILE).read_text())
    assert metrics["n"] == 2.0 and "vqa_open_token_f1" in metrics and "mcq_n" not in metrics

    empty = runner.invoke(app, ["--model", str(model_dir), "--root", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "found no converted benchmark" in empty.output


def test_no_matching_samples_says_what_the_data_holds(model_dir: Path, synth_data) -> None:
    root, samples = synth_data
    with pytest.raises(NoSamplesError, match=r"synth_general/test/mcq: 2"):
        evaluate(model_dir, "vqa_rad", root / "unused", EvalOptions(root=root, data=samples))
    with pytest.raises(NoSamplesError):
        evaluate(model_dir, "synth_general", root / "unused", EvalOptions(root=root, data=samples, split="train"))


def test_app_mounts_as_a_single_eval_command(model_dir: Path) -> None:
    root_app = typer.Typer()

    @root_app.command()
    def other() -> None:  # a second command, as in the real `dragonfly` app
        pass

    root_app.add_typer(app, name="eval")
    result = runner.invoke(root_app, ["eval", "--help"])
    assert result.exit_code == 0 and "--benchmark" in result.output and "--mlflow" in result.output


def test_specs_are_consistent() -> None:
    from dragonfly.data.sources import FORMATS
    from dragonfly.eval.scoring import SCORERS

    for spec in BENCHMARKS.values():
        assert spec.format in FORMATS, spec.name
        assert all(g.scorer in SCORERS for g in spec.groups), spec.name
        assert all(spec.max_tokens(t) > 0 for t in spec.tasks)
        assert replace(spec) == spec


def test_cli_goes_through_the_pipeline_step_and_skips_a_repeat(model_dir: Path, synth_data, tmp_path: Path) -> None:
    """`dragonfly eval` is `pipeline.evaluate`: the same call again is skipped by its
    fingerprint, a changed option or --force evaluates again."""
    root, samples = synth_data
    out = tmp_path / "out"
    args = [
        "--model",
        str(model_dir),
        "--benchmark",
        "synth_general_vqa_open",
        "--data",
        str(samples),
        "--root",
        str(root),
        "--out",
        str(out),
        "--limit",
        "2",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "2",
        "--no-progress",
    ]
    assert runner.invoke(app, args).exit_code == 0
    predictions = out / "synth_general_vqa_open" / PREDICTIONS_FILE
    first = predictions.stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "up to date" in " ".join(again.output.split())
    assert predictions.stat().st_mtime_ns == first
    assert runner.invoke(app, [*args, "--limit", "1"]).exit_code == 0
    assert len(predictions.read_text().splitlines()) == 1
    forced = runner.invoke(app, [*args, "--limit", "1", "--force"])
    assert forced.exit_code == 0 and "up to date" not in " ".join(forced.output.split())
