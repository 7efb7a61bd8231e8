"""The flow's parameters as Prefect sees them: names that pydantic accepts without a warning."""

from __future__ import annotations

import warnings


def test_the_flow_parameters_shadow_no_pydantic_attribute():
    from prefect.utilities.callables import parameter_schema

    from flows.dragonfly_pipeline import dragonfly_pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schema = parameter_schema(dragonfly_pipeline.fn)  # what every flow run validates against
    assert "register_models" in schema.properties
    assert not [w for w in caught if "shadows an attribute" in str(w.message)]
