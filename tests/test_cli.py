"""The `dragonfly` console command, run for real."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from dragonfly.cli import app

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

BIN = Path(sys.executable).parent / "dragonfly"
runner = CliRunner()


def _run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=env, timeout=300)


def _subcommands():
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    names += [g.name for g in app.registered_groups]
    return names


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_has_help(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_init_then_predict_on_a_real_photo(tmp_path, retina):
    photo = tmp_path / "retina.jpg"
    retina.save(photo)
    init = _run("init", str(tmp_path / "model"), "--profile", "tiny", "--set", "model.tiny.vision_from=null")
    assert init.returncode == 0, init.stderr
    assert "17 kept" in init.stdout
    pred = _run(
        "predict",
        "--model",
        str(tmp_path / "model"),
        "--image",
        str(photo),
        "--question",
        "What is shown?",
        "--viz",
        str(tmp_path / "zoom.png"),
        "--json",
        "--max-new-tokens",
        "4",
    )
    assert pred.returncode == 0, pred.stderr
    record = json.loads(pred.stdout.strip().splitlines()[-1])
    assert len(record["selected_tiles"]) == 12 and record["medium_grid"] == [2, 2]
    with Image.open(tmp_path / "zoom.png") as viz:  # the figure of dragonfly.viz.draw_zoom (tests/test_viz.py)
        assert viz.format == "PNG" and viz.size == (1320, 594)


def test_predict_names_bad_inputs(tmp_path, tiny):
    model, processor = tiny
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = runner.invoke(app, ["predict", "--model", str(tmp_path / "m"), "--image", str(broken), "--question", "q"])
    assert result.exit_code != 0 and "broken.jpg" in str(result.exception)
    result = runner.invoke(
        app, ["predict", "--model", str(tmp_path / "nope"), "--image", str(broken), "--question", "q"]
    )
    assert result.exit_code != 0 and "nope not found" in str(result.exception)


def test_unknown_override_key_is_named(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "x"), "--set", "model.layout.strategy_typo=global"])
    assert result.exit_code != 0 and "model.layout.strategy_typo" in str(result.exception)
