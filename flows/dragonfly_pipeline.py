"""The Prefect flow `dragonfly-pipeline`: the steps of `dragonfly.pipeline.declaration`, in
its order (prepare, the tiny tower, each track's stages, its evaluation and registration).

Every task calls one step function of `dragonfly.pipeline` and passes paths and plain
values, never models. Steps skip themselves when their output records the same
fingerprint (`dragonfly.fingerprint`), so Prefect's own result cache stays off: one skip
rule, not two. Training tasks retry (a retried task resumes from its last checkpoint);
an expected error (bad configuration, bad data) fails at once.

Run it: `python flows/dragonfly_pipeline.py --profile tiny` (ephemeral Prefect), or
through the deployments of `prefect.yaml` (README, "Orchestration"). ``train_on="sky"``
(``--train-on sky --sky data_bucket=... --sky ckpt_bucket=...``) runs every training stage
and evaluation as a SkyPilot managed job on H100s and waits for each (docs/sky.md).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from dragonfly import pipeline, switches
from dragonfly.errors import DragonflyError
from dragonfly.pipeline import declaration, sky_jobs
from dragonfly.report import loss_curves_png, pipeline_report, report_rows
from dragonfly.tracking import Tracking, tracking_for


def retry_unless_expected(task, task_run, state) -> bool:
    """Retry a crash (a killed worker, transient I/O), never a DragonflyError: a bad key or
    bad data fails the same way every time, so it fails once, with its message. A
    DragonflyError marked ``transient`` (a checkpoint a full disk stopped) is retried."""
    error = state.data if isinstance(state.data, BaseException) else None
    return not isinstance(error, DragonflyError) or getattr(error, "transient", False)


def _log(message: str) -> None:
    get_run_logger().info(message)


# log_prints off: dill (under `datasets`) disassembles functions into a captured stdout,
# which Prefect would otherwise log line by line.
@task(name="prepare", cache_policy=NO_CACHE, log_prints=False)
def prepare_task(params: str) -> dict[str, str]:
    return {name: str(path) for name, path in pipeline.prepare_data(params).items()}


@task(name="pretrain-vision", cache_policy=NO_CACHE, retries=1, retry_condition_fn=retry_unless_expected)
def pretrain_task(profile: str, params: str, sets: list[str], tracking: Tracking | None) -> str:
    out, _ = pipeline.pretrain_vision(profile, params, sets, progress=False, tracking=tracking)
    return str(out)


@task(
    name="train",
    cache_policy=NO_CACHE,
    retries=1,
    retry_condition_fn=retry_unless_expected,
    task_run_name="train-{stage}",
)
def train_task(stage: str, profile: str, params: str, sets: list[str], tracking: Tracking | None) -> str:
    return str(pipeline.train(stage, profile, params, sets, resume="auto", tracking=tracking, log=_log))


# A retry after a crash of this worker finds the job still running by name and waits for it.
@task(
    name="train-sky",
    cache_policy=NO_CACHE,
    retries=1,
    retry_condition_fn=retry_unless_expected,
    task_run_name="train-sky-{stage}",
)
def sky_train_task(stage: str, profile: str, params: str, sets: list[str], target: sky_jobs.SkyTarget) -> str:
    return sky_jobs.train_stage(target, stage, profile, params, sets, log=_log)


@task(name="evaluate-sky", cache_policy=NO_CACHE, task_run_name="evaluate-sky-{track}")
def sky_evaluate_task(track: str, stage: str, profile: str, benchmarks: list[str], target: sky_jobs.SkyTarget):
    return sky_jobs.evaluate_stage(target, stage, profile, benchmarks, log=_log)


@task(name="evaluate", cache_policy=NO_CACHE, task_run_name="evaluate-{track}")
def evaluate_task(
    track: str,
    model_dir: str,
    benchmarks: list[str],
    params: str,
    out_dir: str,
    limit: int | None,
    tracking: Tracking | None,
) -> dict:
    options = pipeline.EvalOptions(limit=limit, progress=False)
    return pipeline.evaluate(model_dir, benchmarks, params, out_dir, options, tracking, log=_log)


@task(name="register", cache_policy=NO_CACHE, task_run_name="register-{track}")
def register_task(track: str, model_dir: str, metrics: dict, params: str, tracking: Tracking | None) -> dict:
    return pipeline.register(track, model_dir, metrics, params, tracking=tracking, log=_log)


def _wanted(stages: list[str] | None, known: dict) -> list[str]:
    """The stages to run, in pipeline order; an unknown name is an error."""
    order = [s for s in declaration.train_stages() if s in known]
    chosen = order if not stages else [s for s in order if s in stages]
    unknown = sorted(set(stages or ()) - set(order))
    if unknown:
        raise DragonflyError(f"unknown stage(s) {', '.join(unknown)}; the profile has {', '.join(order)}")
    return chosen


@flow(name="dragonfly-pipeline", log_prints=True)
def dragonfly_pipeline(
    profile: str = "tiny",
    stages: list[str] | None = None,
    overrides: list[str] | None = None,
    benchmarks: dict[str, list[str]] | None = None,
    eval_limit: int | None = None,
    register_models: bool = True,
    params: str = "params.yaml",
    eval_dir: str = "eval",
    mlflow: bool | None = None,
    tracking_uri: str | None = None,
    train_on: str = "local",
    sky: dict | None = None,
) -> dict:
    """Run the pipeline of PROFILE. ``stages``: a subset to run (the others are read from
    their outputs); ``overrides``: as ``dragonfly train --set`` takes them
    (``stages.general2.max_steps=50``; ``max_steps=50``: every stage run);
    ``benchmarks``: ``{"general": [...], "med": [...]}``; ``mlflow``: log to MLflow (None:
    as ``DRAGONFLY_TRACKING`` says, on when unset), into ``tracking_uri`` if given;
    ``train_on``: ``local`` or ``sky`` (managed jobs, ``sky``: the settings of
    ``dragonfly.pipeline.sky_jobs.SkyTarget``). Returns the evaluation metrics and
    registrations per track (README, Configuration)."""
    # A bad key fails here, before any work; every task gets the overrides as applied.
    settings = pipeline.load_settings(params, profile, overrides, trained=stages or None)
    sets, chosen = list(settings.overrides), _wanted(stages, settings.profile.stages)
    base = tracking_for(switches.tracking(mlflow), tracking_uri)
    if train_on not in ("local", "sky"):
        raise DragonflyError(f"train_on must be local or sky, not {train_on!r}")
    if train_on == "sky":
        return _on_sky(profile, chosen, sets, benchmarks or {}, register_models, params, settings, sky, base)
    benchmarks = {**declaration.default_benchmarks(), **(benchmarks or {})}
    parent = base.tracker(f"dragonfly-{profile}", "pipeline", tags={"dragonfly.profile": profile}) if base else None
    tracking = base.under(parent.run_id) if parent else None
    summary = {"profile": profile, "stages": chosen, "tracks": {}}
    with parent or nullcontext():
        prepare_task(params)
        model = settings.profile.model
        if model.source == "tiny" and model.tiny.vision_from:
            pretrain_task(profile, params, sets, tracking)
        finals = {}
        for stage in chosen:
            final = finals[stage] = train_task(stage, profile, params, sets, tracking)
            if (evaluation := declaration.evaluation_after(stage)) is None:
                continue
            track = evaluation.track
            out = f"{eval_dir}/{track}"
            metrics = evaluate_task(track, final, benchmarks[track], params, out, eval_limit, tracking)
            entry = {"model": final, "metrics": metrics, "eval_dir": out}
            if register_models:
                entry["registration"] = register_task(track, final, metrics, params, tracking)
            summary["tracks"][track] = entry
        summary["mlflow_run_id"] = parent.run_id if parent else None
        curves = loss_curves_png(finals, f"{eval_dir}/loss_curves.png")
        figures = {"Training loss": curves} if curves else {}
        uri = tracking.uri if tracking else None
        report = pipeline_report(summary, uri, figures)
        rich = pipeline_report(summary, uri, figures, images="inline")
        if parent is not None:  # report/report.md beside its PNGs in the pipeline's MLflow run
            linked = Path(eval_dir) / "report.md"
            linked.write_text(pipeline_report(summary, uri, figures, images="link"), encoding="utf-8")
            for path in [linked, *figures.values()]:
                parent.log_artifacts(path, "report")
        create_markdown_artifact(key="dragonfly-report", markdown=rich, description="Dragonfly pipeline report")
        rows = report_rows(summary)
        if rows:
            create_table_artifact(key="dragonfly-metrics", table=rows, description="Evaluation metrics")
        summary["report"] = report
        return summary


def _on_sky(profile, chosen, sets, benchmarks, register_models, params, settings, sky, tracking) -> dict:
    """The stages as SkyPilot managed jobs, one after the other, each waited for; each
    track's evaluation as one more. The data is the data bucket's (mixtures built where the
    data is, docs/sky.md), so nothing is prepared here."""
    target = sky_jobs.SkyTarget.from_dict(sky)
    for stage in chosen:
        sky_jobs.stage_args(stage, sets)  # an override SkyPilot cannot carry fails before any launch
    if settings.profile.model.source == "tiny" and settings.profile.model.tiny.vision_from:
        raise DragonflyError(
            f"profile {profile} pretrains its tiny vision tower on this machine; train_on=sky is for backbone profiles"
        )
    tracks = {}
    for stage in chosen:
        final = sky_train_task(stage, profile, params, sets, target)
        if (evaluation := declaration.evaluation_after(stage)) is None:
            continue
        track = evaluation.track
        # Remote benchmarks are the profile's real ones: `all` unless named (the synthetic ones are the tiny profile's).
        metrics = sky_evaluate_task(track, stage, profile, benchmarks.get(track, []), target)
        local = sky_jobs.mirrored_model(target, profile, stage)
        eval_dir = f"{target.mirror}/eval/{stage}" if target.mirror else f"{target.ckpt_bucket}/eval/{stage}"
        entry = {"model": final, "metrics": metrics, "eval_dir": eval_dir}
        if register_models and metrics is not None and local is not None:
            entry["registration"] = register_task(track, str(local), metrics, params, tracking)
        elif register_models:
            _log(f"{track}: not registered (no sky.mirror: the model and its metrics are on {target.ckpt_bucket})")
        tracks[track] = entry
    summary = {"profile": profile, "stages": chosen, "tracks": tracks, "train_on": "sky"}
    summary["report"] = pipeline_report(summary, None)
    create_markdown_artifact(
        key="dragonfly-report", markdown=summary["report"], description="Dragonfly pipeline report"
    )
    return summary


def _sky_settings(items: list[str]) -> dict:
    if bad := [item for item in items if "=" not in item]:
        raise DragonflyError(f"--sky takes KEY=VALUE, not {bad[0]!r}")
    return dict(item.split("=", 1) for item in items)


def command_line() -> argparse.ArgumentParser:
    """The flow's command line: its parameters, spelled as the ``dragonfly`` command's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--stage", action="append", dest="stages", help="run only these stages (repeatable)")
    parser.add_argument("--set", action="append", dest="overrides", default=[], help="override (README, Configuration)")
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--no-register-models", action="store_true", help="evaluate without registering")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--mlflow",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"log to MLflow (default: on, unless {switches.TRACKING}=0)",
    )
    parser.add_argument("--debug", action="store_true", default=None, help="an expected error shows its traceback")
    parser.add_argument("--train-on", choices=["local", "sky"], default="local", help="sky: SkyPilot managed jobs")
    parser.add_argument("--sky", action="append", default=[], help="SkyPilot setting KEY=VALUE (docs/sky.md)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """`python flows/dragonfly_pipeline.py`: the flow in Prefect's ephemeral mode; prints the report."""
    args = command_line().parse_args(argv)
    try:
        # The flow checks this too; checking first keeps a typo to one line, without a flow run.
        settings = pipeline.load_settings(args.params, args.profile, args.overrides, trained=args.stages or None)
        _wanted(args.stages, settings.profile.stages)
        sky = _sky_settings(args.sky) if args.train_on == "sky" else None
        if sky is not None:
            sky_jobs.SkyTarget.from_dict(sky)
        summary = dragonfly_pipeline(
            args.profile,
            args.stages,
            args.overrides,
            None,
            args.eval_limit,
            not args.no_register_models,
            args.params,
            mlflow=args.mlflow,
            train_on=args.train_on,
            sky=sky,
        )
    except DragonflyError as err:
        if switches.debug(args.debug):
            raise
        print(f"error: {err}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        sys.exit(1)
    print(summary["report"])


if __name__ == "__main__":
    main()
