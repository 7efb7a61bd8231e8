"""The MLflow model registry: one registered model per pipeline track, `@candidate` on the
newest version, `@champion` on the best one by the track's metric.

`register` logs a ``save_pretrained`` directory as an MLflow pyfunc (``DragonflyModel`` of
``dragonfly.serve.pyfunc``: a chat-completions body for ``mlflow models serve``, or a DataFrame),
registers a version, tags it with its metrics and lineage, and moves `@champion` only when
the new version beats the champion's metric (read from the champion version's tag) by more
than ``min_gain``. `resolve_model` turns ``models:/name@alias`` or ``models:/name/3`` into a
local ``save_pretrained`` directory, so every command that takes ``--model DIR`` also takes a
registry URI.

``mlflow.transformers.log_model`` is not used: with mlflow 3.17.2 and transformers 5.23 it
cannot log this custom ``PreTrainedModel`` (the task cannot be inferred; with ``task=`` and
a directory it fails inside mlflow's ``flavor_config.py``). A pyfunc wrapping the directory
as an artifact loads through ``dragonfly.inference.load``, the same code path as the CLI.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow.pyfunc

from dragonfly.config import DEFAULT_PARAMS, ConfigError, from_dict, load_params
from dragonfly.errors import CheckpointError, DragonflyError, close_match
from dragonfly.serve.pyfunc import ARTIFACT, CONFIG, DragonflyModel
from dragonfly.tracking import Tracker, metric_values, tracking_uri

EXPERIMENT = "dragonfly-registry"
CANDIDATE = "candidate"
CHAMPION = "champion"
METRIC_TAG = "metric."
MODEL_DIR_TAG = "dragonfly.model_dir"
DIRECTIONS = ("maximize", "minimize")
# A registered version's artifacts never change, so a download keyed by name + version can
# be reused. It lives in the working directory (the project, as with runs/ and mlruns/)
# rather than the home directory; `resolve_model(cache=...)` moves it.
DEFAULT_CACHE = Path(".dragonfly-models")
PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
SOURCE_FILE = ".mlflow-source"  # which store's version a cached copy came from
URI_FORMS = "models:/NAME@ALIAS or models:/NAME/VERSION"


# --- configuration ---------------------------------------------------------------------


@dataclass
class RegistryTrack:
    """Where one pipeline's models are registered and what decides its champion. ``metric``
    is ``<benchmark>.<key of that benchmark's metrics.json>``, e.g. ``synth_general.accuracy``."""

    model: str = ""
    metric: str = ""
    direction: str = "maximize"
    min_gain: float = 0.0


@dataclass
class RegistryConfig:
    """The ``registry:`` section of params.yaml: one track per pipeline."""

    general: RegistryTrack | None = None
    med: RegistryTrack | None = None


def check_track(track: RegistryTrack, where: str = "") -> None:
    """ConfigError naming the key of a track that cannot decide a champion."""
    for key in ("model", "metric"):
        if not getattr(track, key):
            raise ConfigError(f"{where}{key} is required (a registered model name and the metric)")
    if track.direction not in DIRECTIONS:
        raise ConfigError(
            f"{where}direction must be one of {', '.join(DIRECTIONS)}, "
            f"got {track.direction!r}{close_match(track.direction, DIRECTIONS)}"
        )
    if track.min_gain < 0:
        raise ConfigError(f"{where}min_gain must be >= 0, got {track.min_gain}")


def load_registry(params_path: str | Path = DEFAULT_PARAMS) -> dict[str, RegistryTrack]:
    """The configured tracks of params.yaml's ``registry:`` section, by pipeline name."""
    section = load_params(params_path).get("registry")
    config = from_dict(RegistryConfig, section, "registry.")
    tracks = {name: t for name, t in vars(config).items() if t is not None}
    for name, track in tracks.items():
        check_track(track, f"registry.{name}.")
    return tracks


def metrics_from_summary(summary: str | Path | Mapping[str, Mapping]) -> dict[str, float]:
    """``{"<benchmark>.<key>": value}`` from ``dragonfly eval``'s ``summary.json`` (a path or
    its parsed mapping), the names a track's ``metric`` uses; skipped benchmarks and
    non-numbers are left out."""
    if not isinstance(summary, Mapping):
        summary = json.loads(Path(summary).read_text(encoding="utf-8"))
    return metric_values(summary)


# --- the pyfunc ------------------------------------------------------------------------

# DragonflyModel lives in dragonfly.serve.pyfunc (the chat body and the batch rules); it is
# imported above, so the name also stays importable here, where versions logged before it
# moved pickled it from.


def _requirements() -> list[str]:
    """The versions this model was logged with, for the record. The dragonfly package
    itself is not on any index, so mlflow cannot rebuild an environment for it anyway:
    the model is loaded in the project's own environment. Listing them explicitly also
    stops mlflow's inference from adding torchvision, which breaks beside torch 2.13."""
    return [f"{name}=={metadata.version(name)}" for name in ("torch", "transformers", "mlflow")]


# --- registering -----------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What `register` did: the new version of ``name`` and who holds ``@champion`` now."""

    name: str
    version: int
    champion_version: int
    champion_moved: bool
    reason: str  # one sentence, with both numbers when there was a champion to beat


# Warnings mlflow gives on every save that do not apply here: the pickle holds only a
# reference to DragonflyModel (no weights); an input example would make mlflow load and run
# the model at save time; and the model logs no signature on purpose (it takes a chat body
# or a DataFrame, dragonfly.serve.pyfunc), so there is none to infer from its hints.
_SAVE_WARNINGS = (
    "An input example was not provided",
    "Passing a Python object as `python_model`",
    "Failed to infer model signature",
)


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """mlflow logs a line per database migration and registration, draws a progress bar
    per artifact copy and warns on every save; keep other warnings, restore it all after."""
    logger = logging.getLogger("mlflow")
    level, bar = logger.level, os.environ.get(PROGRESS_ENV)
    logger.setLevel(logging.WARNING)
    os.environ[PROGRESS_ENV] = "false"
    try:
        with warnings.catch_warnings(), _drop_log_lines(logger, _SAVE_WARNINGS):
            for text in _SAVE_WARNINGS:
                warnings.filterwarnings("ignore", message=f".*{re.escape(text)}")
            yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = bar


class _Drop(logging.Filter):
    def __init__(self, texts: tuple[str, ...]) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(t in record.getMessage() for t in self.texts)


@contextlib.contextmanager
def _drop_log_lines(logger: logging.Logger, texts: tuple[str, ...]) -> Iterator[None]:
    """Drop the log records containing ``texts`` from ``logger``'s handlers (mlflow's
    child loggers propagate to them, and a logger's own filters miss child records)."""
    drop = _Drop(texts)
    for handler in logger.handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in logger.handlers:
            handler.removeFilter(drop)


def _client(uri: str | None):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri or tracking_uri(), registry_uri=uri or tracking_uri())


def _metric_value(metrics: Mapping[str, float], name: str) -> float:
    if name not in metrics:
        there = ", ".join(sorted(metrics)) or "none"
        raise DragonflyError(
            f"metric {name!r} that decides the champion is not in the "
            f"metrics{close_match(name, metrics)}; metrics given: {there}"
        )
    return float(metrics[name])


def _checked_model_dir(model_dir: str | Path) -> Path:
    """The absolute directory, or CheckpointError before anything is logged (the files
    ``inference.load`` needs; loading the weights here would double the cost)."""
    path = Path(model_dir).resolve()
    missing = [f for f in ("config.json", "processor_config.json") if not (path / f).is_file()]
    if not path.is_dir() or missing:
        what = "not found" if not path.is_dir() else f"missing {', '.join(missing)}"
        raise CheckpointError(f"model directory {path} is not a Dragonfly checkpoint ({what})")
    return path


def _log_pyfunc(client, run_id: str, model_dir: Path, name: str) -> str:
    """Save the pyfunc locally and upload it into the run through the explicit client (the
    fluent ``log_model`` would need an active run and the global tracking URI). The path in
    the run is unique: a caller's run may register several models (or one twice), and a
    version's source must never be overwritten by the next one."""
    path = f"registered/{name}-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="dragonfly-pyfunc-") as tmp:
        local = Path(tmp) / "model"
        mlflow.pyfunc.save_model(
            local,
            python_model=DragonflyModel(),
            artifacts={ARTIFACT: str(model_dir)},
            # No signature: the model takes a chat body or a DataFrame and checks either
            # itself, with one-line errors (dragonfly.serve.pyfunc says why).
            model_config=CONFIG,
            pip_requirements=_requirements(),
        )
        client.log_artifacts(run_id, str(local), path)
    return f"runs:/{run_id}/{path}"


def _ensure_registered(client, name: str) -> None:
    """Create the registered model unless it exists: create first and take "already exists"
    as done, since a look-then-create loses the race to a concurrent registration."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            return
        try:  # a registry where one may add versions but not create models: fine if it exists
            client.get_registered_model(name)
        except MlflowException:
            raise err from None


def _version_tags(metrics: Mapping[str, float], tags: Mapping[str, str] | None, model_dir: Path) -> dict[str, str]:
    out = {f"{METRIC_TAG}{k}": repr(float(v)) for k, v in metrics.items()}
    out.update({str(k): str(v) for k, v in (tags or {}).items()})
    out[MODEL_DIR_TAG] = str(model_dir)
    return out


def _champion(client, name: str):
    """The version holding ``@champion``, or None when there is none yet."""
    aliases = client.get_registered_model(name).aliases
    return client.get_model_version(name, aliases[CHAMPION]) if CHAMPION in aliases else None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def decide(value: float, version: int, champion, track: RegistryTrack) -> tuple[bool, str]:
    """(move @champion to ``version``?, why in one sentence). ``champion`` is the current
    champion's ModelVersion or None; its metric is read from its ``metric.<name>`` tag."""
    metric = track.metric
    if champion is None:
        return True, f"version {version} is the first champion ({metric} {_fmt(value)})"
    held = champion.tags.get(METRIC_TAG + metric)
    if held is None:  # can't compare, so keep what a person or an older config chose
        return False, (
            f"champion stays version {champion.version}: it has no {metric} tag to "
            f"compare with version {version}'s {_fmt(value)}"
        )
    old = float(held)
    gain = value - old if track.direction == "maximize" else old - value
    moved = gain > track.min_gain
    verdict = "beats" if moved else "does not beat"
    head = f"champion moves to version {version}" if moved else f"champion stays version {champion.version}"
    return moved, (
        f"{head}: {metric} {_fmt(value)} of version {version} {verdict} "
        f"{_fmt(old)} of version {champion.version} by more than "
        f"{_fmt(track.min_gain)} ({track.direction})"
    )


def register(
    model_dir: str | Path,
    metrics: Mapping[str, float],
    track: RegistryTrack,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    uri: str | None = None,
) -> Registration:
    """Log ``model_dir`` as a pyfunc into ``run_id`` (or a new run of the ``dragonfly-registry``
    experiment), register it as a new version of ``track.model`` tagged with ``metrics``,
    ``tags`` and its directory, point ``@candidate`` at it and ``@champion`` when it wins."""
    check_track(track)
    value = _metric_value(metrics, track.metric)  # fail before anything is logged
    model_dir = _checked_model_dir(model_dir)
    with _quiet_mlflow():
        client = _client(uri)
        if run_id is not None:  # a caller's run is the caller's to finish
            return _register_version(client, run_id, model_dir, metrics, value, track, tags)
        with Tracker(EXPERIMENT, f"register-{track.model}", uri=uri or tracking_uri()) as tracker:
            tracker.log_metrics(metrics)
            return _register_version(client, tracker.run_id, model_dir, metrics, value, track, tags)


def _register_version(client, run_id, model_dir, metrics, value, track, tags) -> Registration:
    source = _log_pyfunc(client, run_id, model_dir, track.model)
    _ensure_registered(client, track.model)
    version = int(client.create_model_version(track.model, source, run_id=run_id).version)
    for key, text in _version_tags(metrics, tags, model_dir).items():
        client.set_model_version_tag(track.model, str(version), key, text)
    client.set_registered_model_alias(track.model, CANDIDATE, str(version))
    champion = _champion(client, track.model)
    moved, reason = decide(value, version, champion, track)
    if moved:
        client.set_registered_model_alias(track.model, CHAMPION, str(version))
    held = version if moved else int(champion.version)
    return Registration(track.model, version, held, moved, reason)


# --- resolving models:/ URIs -----------------------------------------------------------

# Only to say why a URI names no version; MLflow itself reads the URI (`_version`).
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+|latest))$")


def is_registry_uri(ref: str | Path) -> bool:
    return str(ref).startswith("models:/")


def resolve_model(ref: str | Path, uri: str | None = None, cache: str | Path = DEFAULT_CACHE) -> Path:
    """A local ``save_pretrained`` directory for ``ref``: a path is returned as is (its
    checks are ``inference.load``'s); a ``models:/`` URI (``models:/name@alias``,
    ``models:/name/3``, ``models:/name/latest``), resolved by MLflow in the store ``uri``,
    is downloaded once into ``<cache>/<name>/<version>`` (default ``./.dragonfly-models``)."""
    if not is_registry_uri(ref):
        return Path(ref)
    with _quiet_mlflow():
        client = _client(uri)
        return _download(_version(client, str(ref)), uri or tracking_uri(), Path(cache))


def _version(client, ref: str):
    """The model version ``ref`` names, as MLflow reads a ``models:/`` URI (the same
    reading as ``mlflow.pyfunc.load_model``), in ``client``'s store; when it names none, an
    error saying what the store has."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    try:
        name, number = get_model_name_and_version(client, ref)
        return client.get_model_version(name, number)
    except MlflowException:
        raise _unresolved(client, ref) from None


def _unresolved(client, ref: str) -> DragonflyError:
    """Why ``ref`` names no version: a malformed URI, or the models, aliases and versions there are."""
    from mlflow.exceptions import MlflowException

    match = _URI.match(ref)
    if match is None:
        return DragonflyError(f"model URI {ref!r} is not one of {URI_FORMS}")
    name, alias = match["name"], match["alias"]
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = [m.name for m in client.search_registered_models()]
        return DragonflyError(
            f"registered model {name!r} not found{close_match(name, names)}; "
            f"registered: {', '.join(sorted(names)) or 'none'}"
        )
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    aliases = ", ".join(f"@{a} (version {v})" for a, v in sorted(model.aliases.items()))
    known = f"aliases: {aliases or 'none'}; versions: {', '.join(map(str, versions)) or 'none'}"
    if alias is not None:
        return DragonflyError(f"model {name!r} has no alias @{alias}{close_match(alias, model.aliases)}; {known}")
    return DragonflyError(f"model {name!r} has no version {match['version']}; {known}")


def _download(version, uri: str, cache: Path) -> Path:
    """The version's ``model_dir`` artifact, downloaded once. A cached copy is reused only
    when it came from the same source (another store may have its own "dragonfly" v1), and
    a download lands in a temporary sibling first so an interrupted one is never reused."""
    from mlflow.artifacts import download_artifacts

    target = cache / version.name / str(version.version)
    stamp = target / SOURCE_FILE
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == version.source:
        return target / ARTIFACT
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version.version}-", dir=target.parent))
    try:
        inside = _artifact_path(version.source, uri, staging)
        download_artifacts(artifact_uri=f"{version.source}/{inside}", dst_path=str(staging), tracking_uri=uri)
        (staging / Path(inside).name).rename(staging / ARTIFACT)
        (staging / SOURCE_FILE).write_text(version.source, encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / ARTIFACT


def _artifact_path(source: str, uri: str, scratch: Path) -> str:
    """Where the ``model_dir`` artifact sits inside the logged pyfunc: mlflow copies it to
    ``artifacts/<basename of the original directory>`` and records that in the MLmodel."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    local = download_artifacts(artifact_uri=f"{source}/MLmodel", dst_path=str(scratch / ".meta"), tracking_uri=uri)
    flavor = Model.load(local).flavors.get("python_function", {})
    shutil.rmtree(scratch / ".meta")
    entry = (flavor.get("artifacts") or {}).get(ARTIFACT)
    if entry is None:
        raise DragonflyError(
            f"{source} is not a Dragonfly pyfunc (no {ARTIFACT!r} artifact); "
            "register models with dragonfly.registry.register"
        )
    return entry["path"]
