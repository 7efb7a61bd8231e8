"""The flow's parameters as Prefect sees them: names that pydantic accepts without a warning."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest

FLOW = Path(__file__).resolve().parents[2] / "flows" / "dragonfly_pipeline.py"


def _flow_module():
    """flows/ is a folder of scripts, not a package on the path: load the flow's file."""
    spec = importlib.util.spec_from_file_location("dragonfly_flow", FLOW)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_flow_parameters_shadow_no_pydantic_attribute():
    from prefect.utilities.callables import parameter_schema

    dragonfly_pipeline = _flow_module().dragonfly_pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schema = parameter_schema(dragonfly_pipeline.fn)  # what every flow run validates against
    assert "register_models" in schema.properties
    assert not [w for w in caught if "shadows an attribute" in str(w.message)]


def test_debug_0_in_the_flow_means_off_as_in_the_cli(tmp_path, monkeypatch, capsys):
    main = _flow_module().main

    monkeypatch.setenv("DRAGONFLY_DEBUG", "0")
    with pytest.raises(SystemExit) as stopped:  # a one-line error, not a traceback
        main(["--profile", "nope", "--params", str(tmp_path / "missing.yaml")])
    assert stopped.value.code == 1 and capsys.readouterr().err.startswith("error: ")
    monkeypatch.setenv("DRAGONFLY_DEBUG", "1")
    with pytest.raises(Exception) as raised:
        main(["--profile", "nope", "--params", str(tmp_path / "missing.yaml")])
    assert not isinstance(raised.value, SystemExit)
