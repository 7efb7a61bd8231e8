"""The switches do the same to a real run from the CLI and from the flow (README,
"Configuration and errors"): DRAGONFLY_TRACKING=0 keeps both out of MLflow, `--mlflow` and
the flow's `mlflow=True` win over it, `--no-mlflow` is the flow's spelling too, and an
override means one setting whichever form and whichever edge gives it."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from dragonfly.cli import app
from dragonfly.fingerprint import recorded
from dragonfly.pipeline import plan_stage

STAGE = "runs/tiny/general1"


def _runs(root: Path) -> list[str]:
    """The names of every run in the workspace's store (none when nothing made the store)."""
    if not (root / "mlflow.db").is_file():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    ids = [e.experiment_id for e in client.search_experiments()]
    return sorted(r.info.run_name for r in client.search_runs(ids)) if ids else []


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output[-3000:], result.exception)
    return result.output


def test_tracking_and_overrides_mean_the_same_in_the_cli_and_the_flow(tmp_path, kit, monkeypatch):
    root = kit.enter(kit.workspace(tmp_path / "checkout"), monkeypatch)  # DRAGONFLY_TRACKING=0
    flows = kit.flows(root)
    with prefect_test_harness():
        # The flow, tracking off by the variable; stage settings on their own are the stage's it runs.
        flows.dragonfly_pipeline("tiny", ["general1"], ["max_steps=2", "save_every=1"], register_models=False)
        assert _runs(root) == [] and recorded(STAGE)
        assert plan_stage("general1").fingerprint != recorded(STAGE)  # the overrides changed the stage
        # The CLI, the same overrides profile-relative (--set and a trailing argument): the same stage.
        said = _cli(
            "train", "--stage", "general1", "--set", "stages.general1.max_steps=2", "stages.general1.save_every=1"
        )
        assert "up to date" in said and _runs(root) == []
        # The flag wins over the variable in the CLI...
        _cli("train", "--stage", "general1", "--force", "--mlflow", "max_steps=2", "save_every=1")
        assert _runs(root) == ["general1"]
        # ...as the parameter does in the flow (general1 is up to date: only the pipeline's own run).
        dotted = ["stages.general1.max_steps=2", "stages.general1.save_every=1"]
        flows.dragonfly_pipeline("tiny", ["general1"], dotted, register_models=False, mlflow=True)
        assert _runs(root) == ["general1", "pipeline"]
        # Unset, tracking is on; the flow's command line switches it off with the CLI's spelling.
        monkeypatch.delenv("DRAGONFLY_TRACKING")
        flows.main(
            [
                "--stage",
                "general1",
                "--set",
                "max_steps=2",
                "--set",
                "save_every=1",
                "--no-register-models",
                "--no-mlflow",
            ]
        )
        assert _runs(root) == ["general1", "pipeline"]
