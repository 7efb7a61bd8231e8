"""What a user sees when something is wrong: one loader for ./params.yaml, unknown keys named
at every level, strict weights, and every expected error as one short line.

Everything runs the installed `dragonfly` command in a working directory of its own, with
the relative paths and default files a user would type."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "dragonfly"


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "DRAGONFLY_DEBUG"}
    full = {**base, "HF_HUB_OFFLINE": "1", "DRAGONFLY_TRACKING": "0", **(env or {})}
    return subprocess.run([str(BIN), *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def in_process(capsys, *args: str) -> subprocess.CompletedProcess:
    """`dragonfly ARGS` through the console entry point in this process, as a finished process."""
    from dragonfly.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["dragonfly", *args], exit_info.value.code, captured.out, captured.err)


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The error is short (a line, maybe a hint), names the problem, and has no traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr and 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("error: ") and (len(lines) == 1 or lines[1].startswith("hint: ")), lines
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


def params_in(cwd: Path, edit=None) -> Path:
    """The repository's params.yaml copied to ``cwd/params.yaml``, small synthetic data."""
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    for synth in tree["data"]["synth"]:
        synth.update(n_train=4, n_validation=1, n_test=1)
    tree["profiles"]["tiny"]["model"]["tiny"]["vision_from"] = None
    if edit is not None:
        edit(tree)
    cwd.mkdir(parents=True, exist_ok=True)
    (cwd / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    return cwd / "params.yaml"


# --- 9: one loader, ./params.yaml by default, no silent fall-back --------------------------


def test_data_build_reads_params_yaml_of_the_working_directory(tmp_path):
    params_in(tmp_path)
    assert run("data", "synth", cwd=tmp_path).returncode == 0
    built = run("data", "build", "--mixture", "tiny_general", cwd=tmp_path)  # the README's command
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "data/mixtures/tiny_general/dataset").is_dir()


def test_a_missing_params_file_is_an_error_not_built_in_defaults(tmp_path):
    params_in(tmp_path)
    one_line_error(run("init", "model", "--params", "missing.yaml", cwd=tmp_path), "missing.yaml")
    assert not (tmp_path / "model").exists()
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    one_line_error(run("data", "build", "--mixture", "tiny_general", cwd=empty), "params.yaml")
    one_line_error(run("init", "model", cwd=empty), "params.yaml")


# --- 10: unknown keys are errors at every level, with the close match --------------------


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda t: t.__setitem__("typo_data", 1), ["typo_data", "top level"]),
        (lambda t: t["profiles"]["tiny"].__setitem__("stagez", {}), ["profiles.tiny.stagez", "'stages'"]),
        (
            lambda t: t["profiles"]["tiny"]["stages"]["med3"].__setitem__("lrr", 1),
            ["profiles.tiny.stages.med3.lrr", "'lr'"],
        ),
        (
            lambda t: t["profiles"]["tiny"]["vision_pretrain"].__setitem__("stepz", 1),
            ["vision_pretrain.stepz", "'steps'"],
        ),
        (lambda t: t["data"].__setitem__("rooot", "x"), ["data.rooot", "'root'"]),
        (lambda t: t["ablations"]["baseline1"].__setitem__("stratgy", "none"), ["ablations.baseline1.stratgy"]),
        (
            lambda t: t["data"]["mixtures"]["tiny_general"].__setitem__("reject_treshold", 0.1),
            ["reject_treshold", "'reject_threshold'"],
        ),
    ],
    ids=["top", "profile", "stage", "vision_pretrain", "data", "ablation", "mixture"],
)
def test_an_unknown_key_anywhere_fails_every_command(tmp_path, edit, needles, monkeypatch, capsys):
    params_in(tmp_path, edit)
    # The console entry point in-process: a subprocess's start-up (~5 s a command) would be
    # most of this test's time; the installed command's one-line errors are
    # test_a_missing_params_file_is_an_error_not_built_in_defaults's.
    monkeypatch.chdir(tmp_path)
    one_line_error(in_process(capsys, "init", "model"), *needles)
    one_line_error(in_process(capsys, "train", "--stage", "general1"), *needles)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("bogus.key=2", "profiles.tiny.bogus"),
        ("model.layout.selct_k=2", "model.layout.selct_k"),
        ("model.layout.select_k=9", "select_k"),
        ("data.rooot=x", "data.rooot"),
    ],
)
def test_an_unknown_or_impossible_override_is_named(tmp_path, override, needle, monkeypatch, capsys):
    params_in(tmp_path)
    monkeypatch.chdir(tmp_path)
    one_line_error(in_process(capsys, "init", "model", "--set", override), needle)
    assert not (tmp_path / "model").exists()


def test_a_stage_layout_cannot_set_what_is_not_a_layout_key(tmp_path):
    params_in(
        tmp_path, lambda t: t["profiles"]["tiny"]["stages"]["general2"].__setitem__("layout", {"image_token_id": 5})
    )
    one_line_error(
        run("train", "--stage", "general2", "init_from=init", cwd=tmp_path), "stages.general2.layout.image_token_id"
    )


# --- 8: a checkpoint whose tensors do not match is an error --------------------------------


@pytest.fixture(scope="module")
def saved_model(saved_tiny) -> Path:
    return saved_tiny


def test_weights_with_no_matching_tensors_are_refused(tmp_path, saved_model, retina):
    work = tmp_path / "work"
    shutil.copytree(saved_model, work / "renamed")
    weights = work / "renamed" / "model.safetensors"
    save_file({f"old_layout.{k}": v for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    retina.resize((256, 256)).save(work / "photo.png")
    predict = run("predict", "--model", "renamed", "--image", "photo.png", "--question", "q", cwd=work)
    one_line_error(predict, "renamed", "missing", "unexpected")
    evaluate = run("eval", "--model", "renamed", "--benchmark", "synth_general", "--data", "nothing.jsonl", cwd=work)
    assert evaluate.returncode != 0 and "Traceback" not in evaluate.stderr


def test_a_checkpoint_missing_one_tensor_is_refused(tmp_path, saved_model):
    from dragonfly.inference import load
    from dragonfly.weights import WeightsMismatchError

    shutil.copytree(saved_model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(weights)
    dropped = sorted(k for k in tensors if k.startswith("projector."))[0]
    del tensors[dropped]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError, match=dropped.replace(".", r"\.")):
        load(tmp_path / "m")
    load(saved_model)  # the intact one loads


# --- 12: expected errors are one line; --debug shows the traceback -------------------------


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    params_in(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRAGONFLY_DEBUG", raising=False)
    one_line_error(in_process(capsys, "train", "--stage", "general9"), "general9", "did you mean")
    for env, args in (({}, ["--debug"]), ({"DRAGONFLY_DEBUG": "1"}, [])):
        debug = run("train", "--stage", "general9", *args, cwd=tmp_path, env=env)
        assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_missing_training_data_is_one_line_naming_the_fix(tmp_path):
    params_in(tmp_path)
    one_line_error(run("train", "--stage", "general1", cwd=tmp_path), "tiny_general", "dragonfly data build")


def test_a_missing_source_file_is_one_line_naming_it_and_the_fix(tmp_path):
    params_in(tmp_path)  # no `data synth` yet: the mixture's source file does not exist
    one_line_error(
        run("data", "build", "--mixture", "tiny_general", cwd=tmp_path),
        "data/synth/general/samples.jsonl",
        "nothing exists",
        "dragonfly prepare",
    )
