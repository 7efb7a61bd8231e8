"""The paper's ablations (Tables 1, 5, 6) from configuration alone: `run_ablation`.

Each variant is a layout under `ablations:` in params.yaml. Every variant trains the same
stage chain from `init` (default general1 → general2) on the same data, with the same
steps and seed — the paper's fair comparison — then is evaluated on the same benchmarks.
Training goes through `dragonfly.pipeline.train` and evaluation through
`dragonfly.pipeline.evaluate`; this module only chains them, remembers what is done, and
writes the tables (`ablation_report`). A benchmark that scores your data (`vqa`, `mcq`,
`caption`) reads the test split of the last stage's mixture unless the evaluation names
other data. `check_ablation` resolves every variant, stage, mixture and benchmark input
before anything is written, with the checks training and evaluation make themselves.

Layout of `out_dir`:
    params.yaml                       the params actually used (model seed set to `seed`)
    <variant>/<stage>/                a stage's output (checkpoints/, metrics.jsonl, final/, fingerprint.json)
    <variant>/eval/<benchmark>/       predictions.jsonl, metrics.json
    <variant>/eval/fingerprint.json   the evaluation's fingerprint
    <variant>/variant.json            the variant's record
    ablation.md, ablation.csv, ablation.json

Resuming uses the pipeline's one rule (`dragonfly.fingerprint`): a stage whose output
records the fingerprint it would record is reused; one with checkpoints of that fingerprint
but no record continues from its newest checkpoint; a stale one is trained again, and so is
everything after it. Evaluations likewise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from rich.console import Console

from dragonfly.config import ConfigError, load_params
from dragonfly.errors import close_match
from dragonfly.eval.ablation_report import VariantResult, write_report
from dragonfly.eval.benchmarks import get_benchmark
from dragonfly.eval.evaluator import PREDICTIONS_FILE
from dragonfly.eval.scoring import read_predictions
from dragonfly.files import atomic_write_json, read_jsonl
from dragonfly.fingerprint import details, record_stamp
from dragonfly.pipeline.steps import EvalOptions, check_evaluation, evaluate, load_settings, stage_dataset, train
from dragonfly.tracking import Tracking, metric_values, tracking_uri
from dragonfly.train.config import load_stage

VARIANT_FILE = "variant.json"
LOSS_WINDOW = 10  # steps averaged for the "first"/"final" loss: one step of 8 samples is noisy


@dataclass
class AblationResult:
    out_dir: Path
    variants: dict[str, VariantResult]
    files: dict[str, Path]
    parent_run_id: str | None = None
    scored_on: dict[str, str] = field(default_factory=dict)  # benchmark → the data it scored

    @property
    def reused(self) -> list[str]:
        """Variants taken whole from an earlier run (no stage trained, nothing evaluated)."""
        return [n for n, v in self.variants.items() if v.reused]


@dataclass(frozen=True)
class Plan:
    """Everything a variant needs besides its layout, resolved once per ablation."""

    profile: str
    params: Path  # the snapshot in out_dir
    out_dir: Path
    stages: tuple[str, ...]
    overrides: tuple[str, ...]  # each relative to the profile (README, Configuration)
    benchmarks: tuple[str, ...]
    evaluation: EvalOptions
    scored_on: dict[str, str]  # benchmark → the data it scores, for the tables
    seed: int
    progress: bool
    mlflow: bool
    experiment: str
    console: Console = field(default_factory=Console)


def load_variants(params: str | Path) -> dict[str, dict]:
    """`ablations:` of params.yaml: variant name → layout overrides."""
    found = load_params(params).get("ablations") or {}
    if not isinstance(found, dict) or not all(isinstance(v, dict) for v in found.values()):
        raise ConfigError(f"{params}: `ablations:` must map variant names to layout mappings")
    return found


def _losses(metrics_jsonl: Path) -> dict[str, float]:
    records = read_jsonl(metrics_jsonl) if metrics_jsonl.is_file() else []
    losses = [r["loss"] for r in records if "loss" in r]
    if not losses:
        return {}
    window = min(LOSS_WINDOW, len(losses))
    return {"first": sum(losses[:window]) / window, "final": sum(losses[-window:]) / window}


def distinct_answers(predictions_jsonl: Path) -> float:
    """Distinct (task, normalised answer) pairs per sample in a predictions file."""
    records = read_predictions(predictions_jsonl)
    answers = {(r.task, " ".join(r.prediction.lower().split())) for r in records}
    return len(answers) / len(records) if records else 0.0


def _layout_overrides(layout: Mapping) -> list[str]:
    return [f"layout.{key}={json.dumps(value)}" for key, value in layout.items()]


def _train_variant(plan: Plan, name: str, layout: Mapping, run_id: str | None):
    """Train the stage chain of one variant; returns (final dir, seconds, losses, reused).
    Each stage is :func:`~dragonfly.pipeline.train`, skipped by the pipeline's one
    fingerprint rule; a stage chained from a retrained one has a new fingerprint (its init
    is part of it), so everything after a change trains again."""
    tracking = Tracking(tracking_uri(), run_id) if (plan.mlflow and run_id) else None
    previous: Path | None = None
    seconds, losses, reused = {}, {}, []
    for stage in plan.stages:
        overrides = [  # a stage key alone is that of the stage `train` trains
            *_layout_overrides(layout),
            *plan.overrides,
            f"seed={plan.seed}",
            f"init_from={json.dumps(str(previous)) if previous else 'init'}",
        ]
        out = plan.out_dir / name / stage
        plan.console.print(f"[bold]{name}/{stage}[/]: {' '.join(overrides)}")
        before = record_stamp(out)
        previous = train(
            stage,
            plan.profile,
            plan.params,
            overrides,
            resume="auto",
            out_dir=out,
            tracking=tracking,
            log=plan.console.print,
            progress=plan.progress,
        )
        if before is not None and record_stamp(out) == before:  # the step found its output up to date
            plan.console.print(f"[cyan]{name}/{stage}[/]: reused {out / 'final'}")
            reused.append(stage)
        seconds[stage] = float(details(out).get("seconds", 0.0))
        losses[stage] = _losses(out / "metrics.jsonl")
    assert previous is not None  # plan.stages is never empty
    return previous, seconds, losses, reused


def _evaluate_variant(plan: Plan, name: str, final: Path):
    """Evaluate one variant's final model on every benchmark with
    :func:`~dragonfly.pipeline.evaluate` (skipped when its fingerprint matches); returns
    (metrics, distinct answers, seconds, reused)."""
    out = plan.out_dir / name / "eval"
    benchmarks = list(plan.benchmarks)
    plan.console.print(f"[bold]{name}[/]: evaluation")
    before = record_stamp(out)
    metrics = evaluate(final, benchmarks, plan.params, out, plan.evaluation, log=plan.console.print)
    done = before is not None and record_stamp(out) == before  # the step found its output up to date
    if done:
        plan.console.print(f"[cyan]{name}[/]: evaluation reused ({out})")
    distinct = {
        bench: distinct_answers(out / bench / PREDICTIONS_FILE)
        for bench in benchmarks
        if (out / bench / PREDICTIONS_FILE).is_file()
    }  # absent for a benchmark skipped (no judge)
    return metrics, distinct, float(details(out).get("seconds", 0.0)), benchmarks if done else []


def _run_variant(plan: Plan, name: str, layout: Mapping, parent_id: str | None) -> VariantResult:
    from transformers import AutoConfig

    import dragonfly.model.auto  # noqa: F401  (registers the Auto classes)

    tracker = None
    if plan.mlflow:
        from dragonfly.tracking import Tracker

        tracker = Tracker(
            plan.experiment,
            name,
            parent_run_id=parent_id,
            tags={"dragonfly.ablation.variant": name, "dragonfly.profile": plan.profile},
        )
    with tracker or nullcontext():
        final, seconds, losses, reused_stages = _train_variant(plan, name, layout, tracker.run_id if tracker else None)
        metrics, distinct, eval_seconds, reused_evals = _evaluate_variant(plan, name, final)
        cfg = AutoConfig.from_pretrained(final)
        result = VariantResult(
            name=name,
            layout=dict(layout),
            model_dir=str(final),
            tiles_encoded=cfg.num_encoded_tiles,
            tiles_kept=cfg.num_kept_tiles,
            tokens_per_tile=cfg.tokens_per_tile,
            visual_tokens=cfg.image_seq_length,
            stage_seconds=seconds,
            stage_losses=losses,
            eval_seconds=eval_seconds,
            metrics=metrics,
            distinct_answers=distinct,
            reused_stages=reused_stages,
            reused_evals=reused_evals,
            run_id=tracker.run_id if tracker else None,
        )
        atomic_write_json(plan.out_dir / name / VARIANT_FILE, result.to_dict(), indent=2, sort_keys=True, default=str)
        if tracker is not None:
            _log_variant(tracker, plan, result)
        return result


def _log_variant(tracker, plan: Plan, result: VariantResult) -> None:
    tracker.log_params(
        {
            "variant": result.name,
            "layout": result.layout,
            "stages": list(plan.stages),
            "overrides": list(plan.overrides),
            "seed": plan.seed,
            "eval_limit": plan.evaluation.limit,
        }
    )
    tracker.log_metrics(metric_values({**result.metrics, **result.figures()}))
    tracker.set_tags({"dragonfly.ablation.reused": str(result.reused).lower()})
    variant_dir = plan.out_dir / result.name
    tracker.log_artifacts(variant_dir / VARIANT_FILE)
    tracker.log_artifacts(variant_dir / "eval", "eval")
    for stage in plan.stages:
        if (variant_dir / stage / "metrics.jsonl").is_file():
            tracker.log_artifacts(variant_dir / stage / "metrics.jsonl", f"train/{stage}")


def _snapshot_params(params: Path, profile: str, seed: int, out_dir: Path) -> Path:
    """The params file the ablation trains from: the given one with the model seed set."""
    tree = load_params(params)
    try:
        tree["profiles"][profile]["model"]["seed"] = seed
    except (KeyError, TypeError):
        raise ConfigError(f"{params}: profile {profile!r} has no model section") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "params.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _header(plan: Plan) -> str:
    profile = load_settings(plan.params, plan.profile, plan.overrides).profile
    parts = []
    for stage in plan.stages:
        cfg = load_stage(profile, stage)
        parts.append(
            f"{stage} ({'+'.join(cfg.train)}, {cfg.max_steps or 'epoch'} steps × batch "
            f"{cfg.global_batch}, lr {cfg.lr:g}, mixture {cfg.data.mixture})"
        )
    scored = "; ".join(f"{bench} on {data}" for bench, data in plan.scored_on.items())
    return f"Profile `{plan.profile}`, seed {plan.seed}; stages from init: {' → '.join(parts)}; evaluated: {scored}."


def run_ablation(
    variants: Sequence[str] | None = None,
    profile: str = "tiny",
    params: str | Path = "params.yaml",
    out_dir: str | Path = "ablation",
    train_overrides: Sequence[str] = (),
    stages: Sequence[str] = ("general1", "general2"),
    benchmarks: Sequence[str] = ("synth_general",),
    evaluation: EvalOptions = EvalOptions(),
    seed: int = 0,
    mlflow: bool = True,
    experiment: str | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> AblationResult:
    """Train and evaluate `variants` (all under `ablations:` by default) and write the tables.

    `train_overrides` are overrides as `train` takes them (README, Configuration): relative
    to the profile (`stages.general2.max_steps=300`), a stage key alone being every stage's
    (`max_steps=20`, `data.mixture=my_vqa`). `evaluation` is every variant's evaluation, as
    `eval` takes it (`limit`, `data`, `split`...); a benchmark that scores your data (`vqa`,
    `mcq`, `caption`) reads the last stage's mixture (its test split) unless `evaluation.data`
    is given, which every benchmark then reads, as `eval --data`. Every variant's settings and every
    benchmark's input are checked before the first stage trains (:func:`check_ablation`).
    With `mlflow`, one parent run (experiment `dragonfly-<profile>` unless given) holds the
    three files as artifacts and a nested run per variant, under which the stages' own runs
    nest. Returns the per-variant results and the written files.
    """
    params, out_dir = Path(params), Path(out_dir)
    known = load_variants(params)
    names = list(variants or known)
    overrides, evaluation, scored_on = check_ablation(
        params,
        profile,
        {n: known[n] for n in _known(names, known, params)},
        train_overrides,
        stages,
        benchmarks,
        evaluation,
    )
    plan = Plan(
        profile=profile,
        params=_snapshot_params(params, profile, seed, out_dir),  # the first thing written
        out_dir=out_dir,
        stages=tuple(stages),
        overrides=overrides,
        benchmarks=tuple(benchmarks),
        evaluation=evaluation,
        scored_on=scored_on,
        seed=seed,
        progress=progress,
        mlflow=mlflow,
        experiment=experiment or f"dragonfly-{profile}",
        console=console or Console(),
    )
    return _run(plan, names, known, train_overrides)


def _run(plan: Plan, names: list[str], known: Mapping, train_overrides: Sequence[str]) -> AblationResult:
    """Every variant, then the tables, under the parent MLflow run."""
    settings = {
        "profile": plan.profile,
        "params": str(plan.params),
        "seed": plan.seed,
        "stages": list(plan.stages),
        "train_overrides": list(train_overrides),
        "benchmarks": list(plan.benchmarks),
        "eval_limit": plan.evaluation.limit,
        "scored_on": plan.scored_on,
    }
    parent = _parent_run(plan, names, settings) if plan.mlflow else None
    with parent or nullcontext():
        results = {n: _run_variant(plan, n, known[n], parent.run_id if parent else None) for n in names}
        files = write_report(results, plan.benchmarks, plan.out_dir, settings, _header(plan))
        if parent is not None:
            for path in files.values():
                parent.log_artifacts(path, "ablation")
    reused = [n for n, r in results.items() if r.reused]
    plan.console.print(
        f"[green]ablation written[/] {files['markdown']}"
        + (f"; reused without retraining: {', '.join(reused)}" if reused else "")
    )
    return AblationResult(plan.out_dir, results, files, parent.run_id if parent else None, plan.scored_on)


def check_ablation(
    params: Path,
    profile: str,
    layouts: Mapping[str, Mapping],
    train_overrides: Sequence[str],
    stages: Sequence[str],
    benchmarks: Sequence[str],
    evaluation: EvalOptions,
) -> tuple[tuple[str, ...], EvalOptions, dict[str, str]]:
    """Everything an ablation will need, checked before anything is written or trained:
    the variants' layouts, the overrides, each stage and its built mixture, each
    benchmark's input (the evaluator's own check). Returns the applied overrides, the
    evaluation options (a benchmark that scores your data defaulting to the last stage's
    mixture) and, per benchmark, the data it scores."""
    if not stages:
        raise ConfigError("an ablation needs at least one stage: pass --stage NAME")
    for bench in benchmarks:
        get_benchmark(bench)
    overrides = load_settings(params, profile, train_overrides, trained=stages).overrides
    mixture = _check_chain(params, profile, stages, overrides)
    for name, layout in layouts.items():
        _check_variant(params, profile, name, layout, stages, overrides)
    evaluation = replace(evaluation, own_data=mixture)
    return overrides, evaluation, check_evaluation(benchmarks, params, evaluation)


def _known(names: list[str], known: Mapping, params: Path) -> list[str]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"unknown ablation variant(s) {', '.join(unknown)}{close_match(unknown[0], known)}; "
            f"`ablations:` in {params} has {', '.join(known) or 'none'}"
        )
    return names


def _check_chain(params: Path, profile: str, stages: Sequence[str], overrides: Sequence[str]) -> Path:
    """Each stage of the chain and its built mixture, as `train` will check them; returns
    the last stage's mixture folder (the data of its model's test split)."""
    settings = load_settings(params, profile, overrides)
    dataset = None
    for stage in stages:
        dataset = stage_dataset(settings, load_stage(settings.profile, stage))
    assert dataset is not None  # stages is never empty here
    return dataset.parent


def _check_variant(
    params: Path, profile: str, name: str, layout: Mapping, stages: Sequence[str], overrides: Sequence[str]
) -> None:
    """The variant's layout over each stage, as training will apply it, named as the variant's."""
    from dragonfly.train.parts import check_layout

    try:
        settings = load_settings(params, profile, [*_layout_overrides(layout), *overrides], trained=stages)
        for stage in stages:
            check_layout(settings.profile, load_stage(settings.profile, stage))
    except ConfigError as err:
        raise ConfigError(f"ablation variant {name!r} (ablations.{name} in {params}): {err}", hint=err.hint) from None


def _parent_run(plan: Plan, names: list[str], settings: Mapping):
    """The ablation's MLflow run, under which each variant's run nests."""
    from dragonfly.tracking import Tracker

    parent = Tracker(
        plan.experiment,
        f"ablation-{plan.out_dir.name}",
        tags={"dragonfly.ablation": "parent", "dragonfly.profile": plan.profile},
    )
    logged = {k: v for k, v in settings.items() if k != "params"}
    parent.log_params({"variants": names, **logged, "out_dir": str(plan.out_dir)})
    return parent
