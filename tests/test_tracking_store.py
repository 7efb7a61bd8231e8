"""One MLflow store per working tree: ``mlflow.db`` and ``mlruns/`` at the project root (the first
folder up from the cwd holding ``params.yaml`` or ``.git``), whichever subfolder a command runs from."""

from __future__ import annotations

from pathlib import Path

import pytest

from dragonfly import switches
from dragonfly.config import DEFAULT_PARAMS
from dragonfly.switches import switch
from dragonfly.tracking import (
    PARAMS,
    Tracking,
    artifact_location,
    metric_values,
    project_root,
    tracking_for,
    tracking_uri,
)

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project (params.yaml at its root) and a shell in one of its subfolders, with no MLFLOW_TRACKING_URI."""
    root = tmp_path / "project"
    (root / "runs" / "tiny").mkdir(parents=True)
    (root / "params.yaml").write_text("profiles: {}\n")
    monkeypatch.chdir(root / "runs" / "tiny")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


def test_a_tracked_run_from_a_subfolder_writes_the_store_at_the_root(project):
    tracking = tracking_for(True)
    assert tracking is not None and tracking.uri == f"sqlite:///{project / 'mlflow.db'}"
    assert tracking_uri() == tracking.uri == Tracking().uri  # what the registry and the eval CLI use
    (here := project / "runs" / "tiny" / "metrics.jsonl").write_text("{}\n")
    tracker = tracking.tracker("dragonfly-tiny", "general1")
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.log_artifacts("metrics.jsonl")  # relative, as a user's path is
    tracker.finish()

    assert (project / "mlflow.db").is_file() and (project / "mlruns").is_dir()
    assert list((project / "mlruns").rglob("metrics.jsonl"))
    assert sorted(p.name for p in here.parent.iterdir()) == ["metrics.jsonl"]  # no mlflow.db, no mlruns/
    run = tracker.client.get_run(tracker.run_id)
    assert run.info.artifact_uri.startswith((project / "mlruns").as_uri())


def test_the_root_is_the_nearest_params_or_git_else_the_cwd(tmp_path, monkeypatch):
    assert Path(PARAMS) == DEFAULT_PARAMS  # the same file dragonfly.config reads
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "ablation" / "docs").mkdir(parents=True)
    (tmp_path / "repo" / "ablation" / "params.yaml").write_text("")
    assert project_root(tmp_path / "repo" / "ablation" / "docs") == tmp_path / "repo" / "ablation"
    assert project_root(tmp_path / "repo" / "ablation") == tmp_path / "repo" / "ablation"
    (tmp_path / "repo" / "src").mkdir()
    assert project_root(tmp_path / "repo" / "src") == tmp_path / "repo"
    monkeypatch.chdir(tmp_path / "repo" / "src")
    assert project_root() == tmp_path / "repo"
    (tmp_path / "loose").mkdir()
    if not any((p / "params.yaml").is_file() or (p / ".git").exists() for p in tmp_path.parents):
        assert project_root(tmp_path / "loose") == tmp_path / "loose"  # no project: the folder itself


def test_mlflow_tracking_uri_still_wins_and_its_artifacts_sit_beside_it(project, tmp_path, monkeypatch):
    store = tmp_path / "elsewhere" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    assert tracking_uri() == f"sqlite:///{store}"
    assert tracking_for(True).uri == f"sqlite:///{store}"  # what every command's --mlflow logs to
    assert tracking_for(True, "http://mlflow:5000").uri == "http://mlflow:5000"  # the flow's tracking_uri
    assert tracking_for(False) is None and tracking_for(False, "http://mlflow:5000") is None
    assert artifact_location(f"sqlite:///{store}") == (store.parent / "mlruns").as_uri()
    assert artifact_location("sqlite:///local.db") == (project / "runs" / "tiny" / "mlruns").as_uri()  # relative: cwd
    assert artifact_location("http://mlflow:5000") is None and artifact_location("sqlite:///:memory:") is None


@pytest.mark.parametrize(
    ("uri", "shown", "secret"),
    [
        ("http://alice:s3cret@mlflow.example.com:5000", "http://alice:***@mlflow.example.com:5000", "s3cret"),
        (
            "postgresql://bob:p%40ss@db:5432/mlflow?sslmode=require",
            "postgresql://bob:***@db:5432/mlflow?sslmode=require",
            "p%40ss",
        ),
        ("databricks://ws?token=dapi123&x=1", "databricks://ws?token=***&x=1", "dapi123"),
        ("https://ghp_T0KEN@mlflow.example.com", "https://***@mlflow.example.com", "ghp_T0KEN"),
        ("sqlite:////srv/mlflow.db", "sqlite:////srv/mlflow.db", None),
    ],
)
def test_the_report_names_the_store_without_its_credentials(uri, shown, secret):
    """The flow's report goes to the console, eval/report.md, MLflow and Prefect artifacts."""
    from dragonfly.report import pipeline_report

    report = pipeline_report({"profile": "tiny", "stages": [], "tracks": {}, "mlflow_run_id": "r1"}, uri)
    assert f"`{shown}`" in report and (secret is None or secret not in report)


def test_a_tracker_ends_its_run_failed_when_the_block_raises_and_finished_when_it_returns(project):
    tracking = tracking_for(True)
    with pytest.raises(RuntimeError, match="boom"), tracking.tracker("dragonfly-tiny", "broken") as broken:
        broken.log_metrics({"loss": 1.0}, 1)
        raise RuntimeError("boom")  # propagates: the run records the failure, the caller still sees it
    with tracking.tracker("dragonfly-tiny", "fine") as fine:
        fine.log_metrics({"loss": 0.5}, 1)
    with tracking.tracker("dragonfly-tiny", "skipped") as skipped:
        skipped.outcome = "KILLED"

    def status(tracker):
        return tracker.client.get_run(tracker.run_id).info.status

    assert (status(broken), status(fine), status(skipped)) == ("FAILED", "FINISHED", "KILLED")


def test_metric_values_flattens_benchmarks_to_numbers_only():
    results = {"vqa": {"accuracy": 0.5, "n": 4, "ok": True, "note": "x"}, "mcq": {"accuracy": 1}}
    assert metric_values(results) == {"vqa.accuracy": 0.5, "vqa.n": 4.0, "mcq.accuracy": 1.0}


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [(None, True, True), ("", True, True), ("0", True, False), ("Off", True, False), ("no", False, False)]
    + [(None, False, False), ("", False, False), ("1", False, True), ("yes", False, True), ("0", False, False)],
)
def test_every_switch_reads_the_same(value, default, expected):
    environ = {} if value is None else {"DRAGONFLY_X": value}
    assert switch("DRAGONFLY_X", default, environ) is expected


def test_tracking_is_on_unless_switched_off(project):
    def at_the_edge(environ):  # what every command and the flow do when no flag is given
        return tracking_for(switches.tracking(None, environ))

    assert at_the_edge({}) is not None and at_the_edge({"DRAGONFLY_TRACKING": ""}) is not None
    assert at_the_edge({"DRAGONFLY_TRACKING": "0"}) is None
