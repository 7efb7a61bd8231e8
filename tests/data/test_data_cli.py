from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from dragonfly.cli.data import app

runner = CliRunner()


def test_cli_synth_build_stats_validate(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {
        "root": str(tmp_path / "data"), "out_dir": str(tmp_path / "mixtures"),
        "synth": [{"variant": "general", "n_train": 4, "n_validation": 1, "n_test": 1}],
        "mixtures": {"mini": {"seed": 3, "reject_threshold": 0.0, "sources": [
            {"name": "synth_general", "format": "dragonfly_jsonl", "path": "synth/general/samples.jsonl"}]}},
    }}))  # fmt: skip
    for cmd in ("convert", "validate", "build", "synth", "stats"):
        assert runner.invoke(app, [cmd, "--help"]).exit_code == 0
    assert runner.invoke(app, ["synth", "--params", str(params)]).exit_code == 0
    result = runner.invoke(app, ["build", "--params", str(params), "--mixture", "mini"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "mixtures/mini/stats.json").read_text())
    assert stats["samples"] == 24 and stats["seed"] == 3
    assert "mixture mini (seed 3)" in runner.invoke(app, ["stats", str(tmp_path / "mixtures/mini")]).output
    samples = tmp_path / "data/synth/general/samples.jsonl"
    ok = runner.invoke(app, ["validate", str(samples), "--root", str(tmp_path / "data")])
    assert ok.exit_code == 0 and "24 of 24 samples valid" in ok.output
    # A missing image makes the zero-threshold build fail with a clear message.
    (tmp_path / "data/synth/general/train/00000.png").unlink()
    failed = runner.invoke(app, ["build", "--params", str(params), "--mixture", "mini"])
    assert failed.exit_code == 1 and "reject_threshold" in failed.output
