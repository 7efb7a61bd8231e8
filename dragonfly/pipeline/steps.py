"""The pipeline steps (see ``dragonfly.pipeline``)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from dragonfly.config import DEFAULT_PARAMS, ConfigError, Profile, from_dict, load_profile, split_overrides
from dragonfly.data.config import DataConfig, load_data_config
from dragonfly.eval.options import EvalOptions
from dragonfly.files import atomic_write_json, read_jsonl
from dragonfly.fingerprint import file_digest, fingerprint, record, recorded, up_to_date
from dragonfly.pipeline.declaration import TOWER_LAYOUT, TOWER_SHAPE, code
from dragonfly.pipeline.overrides import profile_overrides
from dragonfly.tracking import Tracking, metric_values
from dragonfly.train import stage_lock
from dragonfly.train.config import (
    BackbonePretrainConfig,
    StageConfig,
    load_stage,
    stage_dir,
    stage_names,
)


@dataclass(frozen=True)
class Settings:
    """Everything one command reads from ``params.yaml``, checked as a whole."""

    params: Path
    profile: Profile
    data: DataConfig
    overrides: tuple[str, ...] = ()  # as applied: each relative to the profile or the data section


def load_settings(
    params: str | Path = DEFAULT_PARAMS,
    profile: str = "tiny",
    overrides: Sequence[str] | None = None,
    trained: Sequence[str] | None = (),
) -> Settings:
    """The one loader of ``params.yaml`` (default ``./params.yaml``): the profile, every
    stage, the vision pretraining and the data section are all typed here, so a typo in
    any of them fails every command up front. ``overrides`` mean what
    :mod:`dragonfly.pipeline.overrides` says: ``key=value`` relative to the profile
    (``stages.general2.lr=1e-4``) or the data section (``data.root=/mnt/data``); a stage
    setting on its own (``lr=1e-4``) is that of each stage in ``trained`` (None: every
    stage of the profile)."""
    names = stage_names(load_profile(profile, params))
    applied = profile_overrides(overrides, names if trained is None else trained, names)
    for_profile, for_data = split_overrides(applied)
    prof = load_profile(profile, params, for_profile)
    for name in stage_names(prof):
        load_stage(prof, name)
    from_dict(BackbonePretrainConfig, prof.vision_pretrain, f"profiles.{profile}.vision_pretrain.")
    return Settings(Path(params), prof, load_data_config(params, for_data), tuple(applied))


def data_config(params: str | Path = DEFAULT_PARAMS) -> DataConfig:
    return load_data_config(params)


def prepare_data(params: str | Path = DEFAULT_PARAMS, mixtures: list[str] | None = None) -> dict[str, Path]:
    """Generate the synthetic benchmarks and build the named mixtures. By default every
    mixture except those none of whose sources is under the data root (the paper's, before
    they are fetched: `dragonfly data plan`), each skip said in a line."""
    from dragonfly.data.mixture import build_mixture
    from dragonfly.data.plan import nothing_present
    from dragonfly.data.synth import write

    cfg = data_config(params)
    root = Path(cfg.root)
    for synth in cfg.synth:
        write(synth, root)
    names = mixtures or [n for n in cfg.mixtures if not nothing_present(cfg.mixture(n), root)]
    for name in [n for n in cfg.mixtures if not mixtures and n not in names]:
        print(f"skipped mixture {name}: none of its sources is under {root} (see `dragonfly data plan`)")
    built = {}
    for name in names:
        built[name] = build_mixture(cfg.mixture(name), root, Path(cfg.out_dir) / name).dataset_dir
    return built


def init_model(
    out: str | Path, profile: str = "tiny", params: str | Path = DEFAULT_PARAMS, overrides: list[str] | None = None
):
    """Build the model of ``profile`` (a random tiny init, or the backbones) and save it with
    its processor to ``out``; returns the model's config and its parameter count."""
    from dragonfly.build import build_model
    from dragonfly.train.data import split_texts
    from dragonfly.weights import unprobed

    settings = load_settings(params, profile, overrides)
    # The same tokenizer the first stage builds: trained on that stage's training split too,
    # when it is built (see `model.tiny.tokenizer_from_data`).
    first = next((load_stage(settings.profile, n) for n in stage_names(settings.profile)), None)
    corpus: list[str] = []
    if first is not None and first.init_from == "init" and settings.profile.model.source == "tiny":
        dataset = Path(settings.data.out_dir) / first.data.mixture / "dataset"
        corpus = split_texts(dataset, first.data.split) if dataset.is_dir() else []
    model, processor = build_model(settings.profile.model, corpus)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with unprobed():  # save_pretrained would import DeepSpeed only to rule it out
        model.save_pretrained(out)
    processor.save_pretrained(out)
    return model.config, sum(p.numel() for p in model.parameters())


def _tracker_factory(profile: Profile, tracking: Tracking | None):
    if tracking is None:
        return None

    def factory(stage: StageConfig, run_id: str | None):
        return tracking.tracker(
            f"dragonfly-{profile.name}",
            stage.name,
            run_id,
            tags={"dragonfly.stage": stage.name, "dragonfly.profile": profile.name},
        )

    return factory


def pretrain_vision(
    profile: str = "tiny",
    params: str | Path | None = DEFAULT_PARAMS,
    overrides: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
    tracking: Tracking | None = None,
) -> tuple[Path, dict]:
    """Pretrain the tiny profile's vision tower and save it to ``model.tiny.vision_from``.

    Skipped (returning the saved metrics) when that directory already holds a tower
    pretrained with the same configuration, unless ``force``.
    """
    import json
    from dataclasses import asdict

    from dragonfly.model.processing import TilingSpec
    from dragonfly.train.backbone import pretrain, save_backbone

    prof = load_settings(params, profile, overrides).profile
    spec, layout = prof.model.tiny, prof.model.layout
    if prof.model.source != "tiny" or not spec.vision_from:
        raise ConfigError(
            f"profile {profile!r}: pretrain-vision writes model.tiny.vision_from of a tiny profile; "
            "set model.source=tiny and model.tiny.vision_from=<dir>"
        )
    cfg = from_dict(BackbonePretrainConfig, prof.vision_pretrain, "vision_pretrain.")
    out = Path(spec.vision_from)
    # What the saved tower depends on: its own sizes, the tiling it was trained on and the
    # feature layer; not the LLM's sizes nor the output path.
    wanted = {
        **asdict(cfg),
        "tower": {k: getattr(spec, k) for k in TOWER_SHAPE},
        "layout": {k: getattr(layout, k) for k in TOWER_LAYOUT},
    }
    fp = fingerprint(wanted, code=code("tower"))
    if not force and up_to_date(out, fp):
        return out, json.loads((out / "pretrain.json").read_text())["metrics"]
    tiling = TilingSpec(tile_size=spec.tile_size, medium_grids=layout.medium_grids, high_grids=layout.high_grids)
    tower, metrics = pretrain(spec, tiling, cfg, layout.vision_feature_layer, progress=progress)
    save_backbone(tower, out, metrics, wanted)
    record(out, fp, out, step="vision_pretrain")
    if tracking is not None:
        with tracking.tracker(
            f"dragonfly-{prof.name}",
            "vision_pretrain",
            tags={"dragonfly.stage": "vision_pretrain", "dragonfly.profile": prof.name},
        ) as tracker:
            tracker.log_params(wanted)
            tracker.log_metrics({k: float(v) for k, v in metrics.items()})
    return out, metrics


def train(
    stage: str,
    profile: str = "tiny",
    params: str | Path = DEFAULT_PARAMS,
    overrides: Sequence[str] | None = None,
    resume: bool | str = False,
    out_dir: str | Path | None = None,
    tracking: Tracking | None = None,
    force: bool = False,
    log=print,
    progress: bool = True,
) -> Path:
    """Run one training stage of a profile; returns its ``final`` model directory.

    ``overrides`` as in :func:`load_settings`, a stage setting on its own being this
    stage's (``lr=1e-4`` is ``stages.<stage>.lr=1e-4``). ``resume``: True continues from the newest
    checkpoint (an error when it is of another configuration or other inputs); ``"auto"``
    (the flow and the ablations, single process) continues only from a checkpoint of this
    very fingerprint and otherwise starts afresh, moving other checkpoints aside.
    ``progress``: a progress bar on a terminal (False: log lines only).
    """
    plan = plan_stage(stage, profile, params, overrides, out_dir)  # a bad key fails before torch loads
    # Held before old checkpoints are sorted, so a second run cannot move a running one's aside.
    with stage_lock.held(plan.out, stage_lock.launcher_rank_zero()):
        return _train(plan, resume, tracking, force, log, progress)


def _train(plan: StagePlan, resume: bool | str, tracking: Tracking | None, force: bool, log, progress: bool) -> Path:
    stage, out, fp = plan.stage.name, plan.out, plan.fingerprint
    if not force and up_to_date(out, fp):
        if log is not None:
            log(f"stage {stage}: up to date ({out / 'final'}); skipped (--force retrains)")
        _loss_csv(out)
        return out / "final"
    if resume == "auto":
        resume = _resumable(out, fp, log or (lambda _: None))
    from dragonfly.train.trainer import train_stage

    final = train_stage(
        plan.settings.profile,
        plan.stage,
        plan.settings.data.root,
        plan.dataset_dir,
        out_dir=out,
        resume=resume,
        tracker_factory=_tracker_factory(plan.settings.profile, tracking),
        fingerprint=fp,
        progress=progress,
    )
    _loss_csv(out)
    fresh_llm = plan.settings.profile.model.source == "tiny"  # backbones bring a pretrained LLM
    if log is not None and fresh_llm and plan.stage.init_from == "init" and set(plan.stage.train) == {"projector"}:
        log(
            f"note: {stage} trained only the projector, in front of a freshly initialised LLM: "
            "the model does not answer yet; the next stage (general2) trains the LLM"
        )
    return final


LOSS_CSV = "loss.csv"


def _loss_csv(out: Path) -> None:
    """``<out>/loss.csv`` (step, loss, lr) from ``metrics.jsonl``: the loss curve in a format
    DVC plots and spreadsheets read (DVC does not read JSON Lines)."""
    import csv

    from dragonfly.train.trainer import METRICS_FILE

    rows = read_jsonl(out / METRICS_FILE) if (out / METRICS_FILE).is_file() else []
    import os

    # One temporary file per process: under torchrun every rank writes it (the same rows),
    # and a shared name let one rank's rename pull the file from under the other's.
    tmp = out / f"{LOSS_CSV}.tmp-{os.getpid()}"
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss", "lr"])
        writer.writerows([r["step"], r["loss"], r.get("lr", "")] for r in rows if "loss" in r)
    tmp.replace(out / LOSS_CSV)


@dataclass(frozen=True)
class StagePlan:
    """A stage resolved: its settings, config, checked dataset, output folder, fingerprint."""

    settings: Settings
    stage: StageConfig
    dataset_dir: Path
    out: Path
    fingerprint: str


def plan_stage(
    stage: str,
    profile: str = "tiny",
    params: str | Path = DEFAULT_PARAMS,
    overrides: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
) -> StagePlan:
    """Resolve a stage without running it: what :func:`train` would train, and the
    fingerprint that decides whether it must."""
    from dragonfly.data.manifest import MANIFEST

    settings = load_settings(params, profile, overrides, trained=(stage,))
    stage_cfg = load_stage(settings.profile, stage)
    out = Path(out_dir) if out_dir else stage_dir(settings.profile, stage)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the stage's output {out} is a file; name a folder (or a new path) with --out")
    dataset_dir = stage_dataset(settings, stage_cfg)
    fp = fingerprint(
        _stage_config(settings.profile, stage_cfg),
        {"data": file_digest(dataset_dir.parent / MANIFEST), "init": _init_fingerprint(settings.profile, stage_cfg)},
        code("train"),
    )
    return StagePlan(settings, stage_cfg, dataset_dir, out, fp)


def stage_dataset(settings: Settings, stage: StageConfig) -> Path:
    """The built dataset ``stage`` reads (``<out_dir>/<mixture>/dataset``). Checked before
    the model is built (minutes for the paper profile): a stale or failed build is refused
    here, naming what differs from the mixture asked for."""
    from dragonfly.data.manifest import verify_dataset

    mixture = settings.data.mixture(stage.data.mixture)
    return verify_dataset(Path(settings.data.out_dir) / mixture.name, mixture)


SUPERSEDED = "checkpoints.superseded"


def _resumable(out: Path, fp: str, log) -> bool:
    """Whether ``out`` holds checkpoints of this fingerprint, in ``checkpoints/`` or set aside.

    Checkpoints of another fingerprint (an edited stage, a retrained previous stage) move to
    ``checkpoints.superseded/<fingerprint>/``, every generation under its own name, and this
    fingerprint's own generation, set aside by an earlier run, comes back: run A, run B with
    another lr, run A again resumes A where it stopped. Nothing is deleted."""
    from dragonfly.train.checkpoint import list_checkpoints
    from dragonfly.train.trainer import METRICS_FILE as METRICS

    root, aside = out / "checkpoints", out / SUPERSEDED
    _sort_legacy_aside(aside)
    found = list_checkpoints(root)
    if found:
        # The newest complete one: a half-written or half-uploaded newest checkpoint (a
        # preemption) must not send the good ones before it aside.
        saved = next((got for _, path in reversed(found) if (got := _checkpoint_fingerprint(path))), None)
        if saved == fp:
            return True
        target = _free_name(aside / (saved or "unknown"))
        aside.mkdir(exist_ok=True)
        root.rename(target)
        if (out / METRICS).is_file():  # the losses of those steps go with them
            (out / METRICS).rename(target / METRICS)
        log(f"{root}: checkpoints of another configuration or other inputs moved to {target}")
    own = aside / fp
    if list_checkpoints(own):
        if root.is_dir() and any(root.iterdir()):  # leftovers of a crashed save: kept, out of the way
            root.rename(_free_name(aside / "unknown"))
        elif root.is_dir():
            root.rmdir()
        own.rename(root)
        if (root / METRICS).is_file():
            (root / METRICS).replace(out / METRICS)
        log(f"{own}: this configuration's own checkpoints, set aside by an earlier run, restored; resuming")
        return True
    if found:
        log(f"training {out.name} afresh")
    return False


def _checkpoint_fingerprint(path: Path) -> str | None:
    from dragonfly.train.checkpoint import read_state

    try:
        return read_state(path).get("fingerprint")
    except (OSError, ValueError):
        return None


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... if taken (a generation is never overwritten)."""
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _sort_legacy_aside(aside: Path) -> None:
    """Earlier versions kept one generation's step folders directly in the superseded folder:
    file them under their fingerprint like any other."""
    from dragonfly.train.checkpoint import list_checkpoints

    steps = list_checkpoints(aside)
    if steps:
        target = _free_name(aside / (_checkpoint_fingerprint(steps[-1][1]) or "unknown"))
        target.mkdir()
        for entry in list(aside.iterdir()):
            if entry != target and (entry.name.startswith("step-") or entry.is_file()):
                entry.rename(target / entry.name)


def _stage_config(profile: Profile, stage: StageConfig) -> dict:
    """What a stage's result depends on: its config without bookkeeping keys, and the
    model section when it builds the model itself."""
    from dataclasses import asdict

    from dragonfly.train.trainer import RESUME_SAFE

    config = {k: v for k, v in asdict(stage).items() if k not in RESUME_SAFE}
    return {"stage": config, "model": asdict(profile.model) if stage.init_from == "init" else None}


def _init_fingerprint(profile: Profile, stage: StageConfig) -> str:
    """The recorded fingerprint of the model a stage starts from (its stage folder holds it)."""
    if stage.init_from == "init":
        # A stage built from the profile also depends on the pretrained tower it loads.
        tower = profile.model.tiny.vision_from if profile.model.source == "tiny" else None
        return f"init:{recorded(tower)}" if tower else "init"
    given = Path(stage.init_from)
    final = given if given.exists() else stage_dir(profile, stage.init_from) / "final"
    return model_fingerprint(final)


def model_fingerprint(final: Path) -> str:
    """A saved model's identity: the fingerprint its stage recorded, or, for a model from
    elsewhere, its path and config file (never the multi-GB weights read in full)."""
    return recorded(final.parent) or f"{final}:{file_digest(final / 'config.json')}"


def evaluate(
    model_dir: str | Path,
    benchmarks: list[str],
    params: str | Path | None = DEFAULT_PARAMS,
    out_dir: str | Path = "eval",
    options: EvalOptions = EvalOptions(),
    tracking: Tracking | None = None,
    *,
    force: bool = False,
    log=print,
    skip_missing: bool = False,
    experiment: str = "dragonfly-eval",
) -> dict[str, dict]:
    """Evaluate ``model_dir`` on ``benchmarks`` as ``options`` say; writes
    ``<out_dir>/<benchmark>/{predictions.jsonl,metrics.json}`` and ``summary.json`` (which
    keeps the entries of other benchmarks evaluated into the same ``out_dir`` earlier) and
    returns ``{benchmark: metrics}``. Skipped when the model, the benchmarks, their samples
    and the settings are those the output records. ``skip_missing``: a benchmark with no
    samples is reported and left out instead of failing (``--benchmark all``)."""
    import json
    import time

    began = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    options = replace(options, root=_eval_root(params, options))
    fp = evaluation_fingerprint(model_dir, benchmarks, params, options)
    summary_path = out_dir / "summary.json"
    previous = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if not force and up_to_date(out_dir, fp):
        log(f"evaluation of {model_dir}: up to date ({summary_path}); skipped (--force evaluates again)")
        return {name: previous[name] for name in benchmarks if name in previous}
    results = _evaluate_each(model_dir, benchmarks, out_dir, options, tracking, log, skip_missing, experiment)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(summary_path, {**previous, **results}, indent=2, sort_keys=True)
    record(
        out_dir,
        fp,
        out_dir,
        model=str(model_dir),
        seconds=round(time.perf_counter() - began, 3),
        benchmarks=list(benchmarks),
        limit=options.limit,
        root=str(options.root),
    )
    return results


def _evaluate_each(
    model_dir: Path,
    benchmarks: list[str],
    out_dir: Path,
    options: EvalOptions,
    tracking: Tracking | None,
    log,
    skip_missing: bool,
    experiment: str,
) -> dict[str, dict]:
    """Each benchmark into ``out_dir/<name>``, one MLflow run each, one loaded model for all."""
    from dragonfly.eval import evaluate as evaluate_benchmark
    from dragonfly.eval.benchmarks import get_benchmark
    from dragonfly.eval.evaluator import judge_unavailable
    from dragonfly.eval.samples import NoSamplesError
    from dragonfly.inference import load

    loaded, results = None, {}
    for name in benchmarks:
        if loaded is None and judge_unavailable(get_benchmark(name)) is None:
            loaded = load(model_dir)  # once, shared by every benchmark; never for one skipped (no judge)
        tracker = tracking.tracker(experiment, f"eval-{name}") if tracking is not None else None
        with tracker or nullcontext():
            try:
                results[name] = evaluate_benchmark(
                    model_dir, name, out_dir / name, options, tracker=tracker, loaded=loaded
                )
            except (NoSamplesError, FileNotFoundError) as err:
                if not skip_missing:
                    raise
                log(f"skip {name}: {err}")
                if tracker is not None:
                    tracker.outcome = "KILLED"
    return results


def _eval_root(params: str | Path | None, options: EvalOptions) -> Path:
    return Path(options.root) if options.root is not None else Path(load_data_config(params or DEFAULT_PARAMS).root)


def _data_digest(path: Path) -> str:
    """A samples file by its bytes; a built mixture by its manifest; a raw release folder by
    its listing (names, sizes, modification times), never by reading every image."""
    import hashlib

    if path.is_file():
        return file_digest(path)
    for manifest in (path / "manifest.json", path.parent / "manifest.json"):
        if manifest.is_file():
            return file_digest(manifest)
    listing = sorted(
        (p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()
    )
    return hashlib.sha256(repr(listing).encode()).hexdigest()


def evaluation_fingerprint(
    model_dir: str | Path,
    benchmarks: list[str],
    params: str | Path | None = DEFAULT_PARAMS,
    options: EvalOptions = EvalOptions(),
) -> str:
    """What decides whether :func:`evaluate` runs: the model, the benchmarks, the options
    that change a number and the samples' bytes (batch size and progress bars change none)."""
    from dataclasses import asdict

    from dragonfly.eval.benchmarks import get_benchmark
    from dragonfly.eval.evaluator import benchmark_data
    from dragonfly.eval.options import UNSCORED

    root = _eval_root(params, options)
    settings = {
        "benchmarks": list(benchmarks),
        "limit": options.limit,
        "root": str(root),
        **{k: v for k, v in asdict(options).items() if k not in ("root", "limit", *UNSCORED)},
    }
    # The samples' bytes too: regenerated data is a new evaluation.
    samples = {}
    for name in benchmarks:
        spec = get_benchmark(name)
        data = benchmark_data(spec, options)
        if data is not None:
            samples[f"samples:{name}"] = _data_digest(data)
        elif spec.default_path:  # a generic benchmark without data fails in `evaluate`
            samples[f"samples:{name}"] = file_digest(root / spec.default_path)
    return fingerprint(settings, {"model": model_fingerprint(Path(model_dir)), **samples}, code("eval"))


def check_evaluation(
    benchmarks: Sequence[str], params: str | Path | None = DEFAULT_PARAMS, options: EvalOptions = EvalOptions()
) -> dict[str, str]:
    """Read what :func:`evaluate` would score on each benchmark, without a model, so a bad
    input fails before anything trains (the evaluator's own check: ``benchmark_samples``);
    returns ``{benchmark: the data it scores}`` for reports."""
    from dragonfly.eval.benchmarks import get_benchmark
    from dragonfly.eval.evaluator import benchmark_data, benchmark_samples, judge_unavailable

    options = replace(options, root=_eval_root(params, options))
    scored = {}
    for name in benchmarks:
        spec = get_benchmark(name)
        if (reason := judge_unavailable(spec)) is not None:
            scored[name] = f"skipped ({reason})"
            continue
        chosen, _, _ = benchmark_samples(spec, options)
        data = benchmark_data(spec, options) or Path(options.root) / spec.default_path
        scored[name] = f"{data} ({options.split or spec.split} split, {len(chosen)} samples)"
    return scored


def register(
    track: str,
    model_dir: str | Path,
    metrics: dict[str, dict],
    params: str | Path = DEFAULT_PARAMS,
    tracking: Tracking | None = None,
    log=print,
) -> dict:
    """Register ``model_dir`` under the ``registry.<track>`` model with its evaluation
    ``metrics`` (``{benchmark: metrics}``): a new version with ``@candidate``, and
    ``@champion`` when it beats the champion on the track's metric. The same model with the
    same metrics is registered once (its fingerprint is a version tag)."""
    import subprocess
    from dataclasses import asdict

    from dragonfly.config import ConfigError
    from dragonfly.errors import DragonflyError, close_match
    from dragonfly.fingerprint import code_version
    from dragonfly.registry import load_registry
    from dragonfly.registry import register as register_version

    tracks = load_registry(params)
    if track not in tracks:
        raise ConfigError(f"registry.{track} is not configured{close_match(track, tracks)}; have {', '.join(tracks)}")
    if tracking is None:
        raise DragonflyError(
            "registering a model needs MLflow tracking",
            hint="switch tracking on (--mlflow, or unset DRAGONFLY_TRACKING=0), or leave registration out",
        )
    cfg, model_dir = tracks[track], Path(model_dir)
    flat = metric_values(metrics)
    fp = fingerprint(
        asdict(cfg), {"model": model_fingerprint(model_dir), "metrics": str(sorted(flat.items()))}, ("registry.py",)
    )
    if (done := _registered(cfg.model, fp, tracking.uri)) is not None:
        log(f"{cfg.model} version {done['version']}: already registered with these metrics; skipped")
        return done
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    tags = {
        FINGERPRINT_TAG: fp,
        "dragonfly.code": code_version(code("train")),
        "git.commit": commit or "unknown",
        "dragonfly.lineage": str(recorded(model_dir.parent) or ""),
    }
    with tracking.tracker("dragonfly-registry", f"register-{track}") as tracker:
        tracker.log_metrics(flat)
        result = register_version(model_dir, flat, cfg, tags, run_id=tracker.run_id, uri=tracking.uri)
    log(f"{result.name} version {result.version} @candidate; {result.reason}")
    return asdict(result)


FINGERPRINT_TAG = "dragonfly_fingerprint"


def _registered(name: str, fp: str, uri: str) -> dict | None:
    """The registration of the version tagged with ``fp``, if ``name`` has one."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        found = client.search_model_versions(f"name='{name}' and tag.{FINGERPRINT_TAG}='{fp}'")
    except MlflowException:
        return None
    if not found:
        return None
    version = found[0]
    try:
        champion = int(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        champion = None
    return {
        "name": name,
        "version": int(version.version),
        "champion_version": champion,
        "champion_moved": False,
        "reason": "already registered with the same model and metrics",
    }
