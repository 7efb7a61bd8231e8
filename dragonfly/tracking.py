"""MLflow helpers: one parent run per pipeline, a nested run per stage or evaluation.

Everything goes through an explicit ``MlflowClient`` and run ids (no fluent "active run"
global), so a resumed stage reopens exactly its own run, and callers on ranks other than
0 simply never construct a :class:`Tracker`.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

# The project's config, dragonfly.config.DEFAULT_PARAMS (a layer above this module, so not imported).
PARAMS = "params.yaml"
STORE = "mlflow.db"
ARTIFACTS = "mlruns"
SQLITE = "sqlite:///"
RESUMED_FROM_TAG = "dragonfly.resumed_from_run"


def project_root(start: str | Path | None = None) -> Path:
    """The first folder from ``start`` (the cwd) upwards that holds the project's
    ``params.yaml`` or a ``.git``; else ``start``. Commands run from a subfolder (``docs/``,
    ``runs/tiny/``) then share one store instead of each growing its own."""
    here = Path.cwd() if start is None else Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / PARAMS).is_file() or (folder / ".git").exists():
            return folder
    return here


def default_uri(start: str | Path | None = None) -> str:
    """``sqlite:///<project root>/mlflow.db`` (an absolute path: the same store from any subfolder)."""
    return f"{SQLITE}{project_root(start) / STORE}"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` (MLflow's own convention), else :func:`default_uri`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


# Query keys whose values are secrets (Databricks' and signed URLs' tokens, a database password).
SECRET_KEYS = re.compile(r"pass|secret|token|key|signature|credential", re.I)


def redacted(uri: str) -> str:
    """``uri`` as it may be printed or stored: a password in its user info (a user name alone,
    often a token) and the values of secret-looking query keys become ``***``
    (``http://alice:***@host``). URIs come from the
    environment and often carry credentials; reports, logs and artifacts must not."""
    parts = urllib.parse.urlsplit(uri)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if parts.username is None and not any(SECRET_KEYS.search(k) for k, _ in pairs):
        return uri  # as given (a rebuilt sqlite:////abs/path would lose a slash)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username}:***@{netloc.rsplit('@', 1)[1]}"
    elif parts.username is not None:  # a user name alone is often a token (https://TOKEN@host)
        netloc = f"***@{netloc.rsplit('@', 1)[1]}"
    query = urllib.parse.urlencode([(k, "***" if SECRET_KEYS.search(k) else v) for k, v in pairs], safe="*")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of the store ``uri`` keeps its artifacts: ``mlruns/`` beside a
    local sqlite file. MLflow's own default is ``./mlruns`` of whatever folder the command
    runs in, which scatters one store's artifacts over many folders. Other stores (a server,
    a file store) place artifacts themselves: None."""
    database = uri.removeprefix(SQLITE).split("?", 1)[0]  # "rel/x.db", or "/abs/x.db" from sqlite:////abs/x.db
    if not uri.startswith(SQLITE) or database in ("", ":memory:"):
        return None
    return (Path(database).resolve().parent / ARTIFACTS).as_uri()


@dataclass(frozen=True)
class Tracking:
    """Where a step records its runs, and the run they nest under. Steps take one of these
    as an argument (``None``: no tracking); only the edges (CLI, flow) read the tracking
    switch, and hand :func:`tracking_for` its value."""

    uri: str = field(default_factory=default_uri)
    parent_run_id: str | None = None

    def under(self, parent_run_id: str | None) -> Tracking:
        return replace(self, parent_run_id=parent_run_id)

    def tracker(
        self, experiment: str, run_name: str, run_id: str | None = None, tags: Mapping[str, str] | None = None
    ) -> Tracker:
        return Tracker(experiment, run_name, run_id, self.parent_run_id, self.uri, tags)


def tracking_for(on: bool, uri: str | None = None) -> Tracking | None:
    """What a command's tracking switch (``--mlflow/--no-mlflow``, the flow's ``mlflow``)
    gives its steps: runs into ``uri`` (default :func:`tracking_uri`) when on, else None."""
    return Tracking(uri or tracking_uri()) if on else None


def flatten(tree: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"a.b.c": "value"}`` with values as MLflow params (strings, ≤ 6000 chars)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:6000]
    return out


def metric_values(results: Mapping[str, Mapping]) -> dict[str, float]:
    """``{benchmark: {key: value}}`` → ``{"benchmark.key": value}``: the numbers only (a bool,
    a string, a nested mapping is left out), the names MLflow and a registry track's metric use."""
    return {
        f"{group}.{key}": float(value)
        for group, values in results.items()
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


class Tracker:
    """A handle on one MLflow run (created, or reopened by id). As a context manager it
    ends the run FINISHED (or :attr:`outcome`, e.g. KILLED for a skipped evaluation), and
    FAILED when the block raises; the exception propagates."""

    outcome = "FINISHED"

    def __init__(
        self,
        experiment: str,
        run_name: str,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        uri: str | None = None,
        tags: Mapping[str, str] | None = None,
    ):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        uri = uri or tracking_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.resumed_elsewhere: str | None = None  # a run id this store does not hold
        if run_id is not None:
            if self._holds(run_id):
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
                return
            # Resumed against another store (another node, a moved or reset mlflow.db, the
            # flow's store vs dvc repro's): a new run here, tagged with the one it continues.
            self.resumed_elsewhere = run_id
            tags = {**(tags or {}), RESUMED_FROM_TAG: run_id}
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else self.client.create_experiment(experiment, artifact_location=artifact_location(uri))
        )
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags).info.run_id

    def _holds(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

        try:
            self.client.get_run(run_id)
        except MlflowException as err:
            if err.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            return False
        return True

    def log_params(self, params: Mapping) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, v) for k, v in flatten(params).items() if k not in existing]
        for start in range(0, len(fresh), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=fresh[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.finish(self.outcome if exc_type is None else "FAILED")
