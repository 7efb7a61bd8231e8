"""The flow's parameters as Prefect sees them: names that pydantic accepts without a warning."""

from __future__ import annotations

import warnings

import pytest


def test_the_flow_parameters_shadow_no_pydantic_attribute():
    from prefect.utilities.callables import parameter_schema

    from flows.dragonfly_pipeline import dragonfly_pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schema = parameter_schema(dragonfly_pipeline.fn)  # what every flow run validates against
    assert "register_models" in schema.properties
    assert not [w for w in caught if "shadows an attribute" in str(w.message)]


def test_debug_0_in_the_flow_means_off_as_in_the_cli(tmp_path, monkeypatch, capsys):
    from flows.dragonfly_pipeline import main

    monkeypatch.setenv("DRAGONFLY_DEBUG", "0")
    with pytest.raises(SystemExit) as stopped:  # a one-line error, not a traceback
        main(["--profile", "nope", "--params", str(tmp_path / "missing.yaml")])
    assert stopped.value.code == 1 and capsys.readouterr().err.startswith("error: ")
    monkeypatch.setenv("DRAGONFLY_DEBUG", "1")
    with pytest.raises(Exception) as raised:
        main(["--profile", "nope", "--params", str(tmp_path / "missing.yaml")])
    assert not isinstance(raised.value, SystemExit)
