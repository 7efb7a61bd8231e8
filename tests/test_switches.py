"""Each switch reads the same in every command and in the flow (README, "Configuration and
errors"): tracking from the same flag spelling and the same variable, overrides in the same
form. What the switches do to a real run: tests/orchestration/test_flow_switches.py."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from typer.main import get_command

from dragonfly import switches
from dragonfly.cli import app
from dragonfly.config import ConfigError
from dragonfly.pipeline import load_settings

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
# The tracked commands and the arguments each needs to parse.
TRACKED = {
    "train": ["--stage", "general1"],
    "pretrain-vision": [],
    "eval": ["--model", "m", "--benchmark", "synth_general"],
    "ablate": [],
}
# (DRAGONFLY_TRACKING, flag) -> logs to MLflow
TRUTH = {
    (None, None): True,
    ("", None): True,
    ("0", None): False,
    ("off", None): False,
    ("1", None): True,
    ("0", "--mlflow"): True,
    ("1", "--no-mlflow"): False,
    (None, "--no-mlflow"): False,
}


def _cli_flag(command: str, flag: str | None):
    args = [*TRACKED[command], *([flag] if flag else [])]
    return get_command(app).commands[command].make_context(command, args).params["mlflow"]


@pytest.mark.parametrize(("variable", "flag"), list(TRUTH))
def test_tracking_reads_the_same_in_every_command_and_the_flow(variable, flag, pipeline_flow):
    environ = {} if variable is None else {switches.TRACKING: variable}
    from_flow = pipeline_flow.command_line().parse_args([flag] if flag else []).mlflow
    assert switches.tracking(from_flow, environ) is TRUTH[variable, flag]
    for command in TRACKED:
        given = _cli_flag(command, flag)
        assert given == from_flow, command  # the same spelling gives the same value
        assert switches.tracking(given, environ) is TRUTH[variable, flag], command


def test_the_flow_parameter_defaults_to_the_variable_as_the_flag_does(pipeline_flow):
    assert inspect.signature(pipeline_flow.dragonfly_pipeline.fn).parameters["mlflow"].default is None
    assert all(_cli_flag(command, None) is None for command in TRACKED)


def test_an_override_means_the_same_wherever_it_is_given():
    """`dragonfly train --stage general1 max_steps=5`, `--set stages.general1.max_steps=5`
    and the flow's `overrides=["max_steps=5"]` (running general1) are one setting."""

    def general1(overrides, trained):
        from dragonfly.train.config import load_stage

        return load_stage(load_settings(PARAMS, "tiny", overrides, trained).profile, "general1")

    plain = general1([], ("general1",))
    bare = general1(["max_steps=5", "data.max_length=300"], ("general1",))  # train's trailing arguments
    dotted = general1(["stages.general1.max_steps=5", "stages.general1.data.max_length=300"], ())  # --set
    flow = load_settings(PARAMS, "tiny", ["max_steps=5", "data.max_length=300"], ["general1"]).overrides
    assert bare == dotted == general1(list(flow), ("general1",)) != plain
    assert (bare.max_steps, bare.data.max_length) == (5, 300)
    assert flow == ("stages.general1.max_steps=5", "stages.general1.data.max_length=300")
    # A command that trains no stage, or the old stage-first form: refused, naming the form that works.
    with pytest.raises(ConfigError, match=r"trains no stage; write stages\.<stage>\.max_steps=5"):
        load_settings(PARAMS, "tiny", ["max_steps=5"])
    with pytest.raises(ConfigError, match=r"write stages\.general2\.max_steps=5"):
        load_settings(PARAMS, "tiny", ["general2.max_steps=5"], ["general2"])


@pytest.mark.parametrize(
    ("variable", "flag", "expected"),
    [(None, None, False), ("0", None, False), ("1", None, True), ("0", "--debug", True), (None, "--debug", True)],
)
def test_debug_reads_the_same_in_the_cli_and_the_flow(variable, flag, expected, pipeline_flow):
    environ = {} if variable is None else {switches.DEBUG: variable}
    from_flow = pipeline_flow.command_line().parse_args([flag] if flag else []).debug
    assert switches.debug(from_flow, environ) is expected  # the CLI's: tests/test_cli_errors.py
