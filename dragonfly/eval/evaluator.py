"""Evaluate a saved Dragonfly on one benchmark: generate, score, write, log.

Outputs in `out_dir`:
- `predictions.jsonl`: one `scoring.Prediction` per sample (id, source, task, images,
  prompt, prediction, references, choices, per-sample score);
- `metrics.json`: the benchmark's metrics as flat floats (a DVC metrics file), or
  `{"skipped": "<reason>"}` when the benchmark cannot be scored here (no LLM judge).
`recompute_metrics(predictions.jsonl, benchmark)` rebuilds the metrics from the first
file alone, so a metrics file can always be checked against its predictions.

The pipeline's `evaluate` calls `evaluate(model_dir, name, out_dir, options, ...)` once per
benchmark, passing `loaded=(model, processor)` to reuse one loaded model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dragonfly.data.schema import Sample
from dragonfly.eval.benchmarks import BenchmarkSpec, get_benchmark
from dragonfly.eval.generate import generate_batch
from dragonfly.eval.options import EvalOptions
from dragonfly.eval.prompts import messages
from dragonfly.eval.samples import load_samples, scores_own_data, select_samples
from dragonfly.eval.scoring import Prediction, read_predictions, score_records, write_predictions
from dragonfly.files import atomic_write_json
from dragonfly.metrics import MetricUnavailable, judge_config_from_env
from dragonfly.model.images import load_image

PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"


def write_metrics(metrics: Mapping[str, Any], path: Path) -> None:
    atomic_write_json(path, dict(metrics), indent=2, sort_keys=True)


def is_skipped(metrics: Mapping[str, Any]) -> bool:
    return "skipped" in metrics


def judge_unavailable(spec: BenchmarkSpec) -> str | None:
    """Why `spec` cannot be scored in this environment, or None when it can."""
    if not spec.needs_judge:
        return None
    try:
        judge_config_from_env()
    except MetricUnavailable as err:
        return str(err)
    return None


def _batches(samples: Sequence[Sample], batch_size: int) -> list[list[Sample]]:
    """Batches of one task each (tasks differ in answer length), in first-seen task order."""
    by_task: dict[str, list[Sample]] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    return [group[i : i + batch_size] for group in by_task.values() for i in range(0, len(group), batch_size)]


def predict(
    model,
    processor,
    spec: BenchmarkSpec,
    samples: Sequence[Sample],
    root: Path,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> list[Prediction]:
    """Greedy predictions for `samples` under `spec`'s prompts, in the input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    conversations = {s.id: messages(s, spec) for s in samples}  # fail on bad prompts up front
    texts: dict[str, str] = {}
    with tqdm(total=len(samples), desc=spec.name, unit="sample", disable=not progress) as bar:
        for batch in _batches(samples, batch_size):
            images = [[load_image(root / rel) for rel in s.images] for s in batch]
            limit = max_new_tokens or spec.max_tokens(batch[0].task)
            outs = generate_batch(model, processor, [conversations[s.id] for s in batch], images, limit)
            texts.update({s.id: t for s, t in zip(batch, outs, strict=True)})
            bar.update(len(batch))
    return [
        Prediction(
            id=s.id,
            source=s.source,
            task=s.task,
            images=list(s.images),
            prompt=conversations[s.id][0]["content"],
            prediction=texts[s.id],
            references=list(s.answers),
            choices=list(s.choices),
        )
        for s in samples
    ]


def _log(
    tracker,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    files: Sequence[Path],
    artifact_path: str,
) -> None:
    tracker.log_params(params)
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    if numeric:
        tracker.log_metrics(numeric)
    if is_skipped(metrics):
        tracker.set_tags(
            {
                "dragonfly.eval.status": "skipped",
                "dragonfly.eval.skip_reason": str(metrics["skipped"])[:5000],
            }
        )
    for f in files:
        tracker.log_artifacts(f, artifact_path)


def evaluate(
    model_dir: str | Path,
    benchmark: str | BenchmarkSpec,
    out_dir: str | Path,
    options: EvalOptions = EvalOptions(),
    *,
    samples: Sequence[Sample] | None = None,
    tracker=None,
    loaded: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the model in `model_dir` on `benchmark`; returns the metrics dict written
    to `out_dir/metrics.json`.

    The samples are `samples` (a list of `Sample`s) or else read from `options.data` (a path
    `load_samples` understands), by default the benchmark's converted JSONL under
    `options.root` (`options.own_data` for one that scores your data); `select_samples`
    then keeps the benchmark's split/sources/tasks and the first `options.limit`
    (`benchmark_samples`). `tracker` (a `dragonfly.tracking.Tracker`) gets the params,
    metrics and both files; the caller owns and finishes it. A benchmark that needs an LLM
    judge with none configured is not run: `{"skipped": reason}` is written and returned.
    """
    spec = get_benchmark(benchmark)
    split, limit, max_new_tokens = options.split, options.limit, options.max_new_tokens
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions_path, metrics_path = out_dir / PREDICTIONS_FILE, out_dir / METRICS_FILE
    params: dict[str, Any] = {
        "model_dir": str(model_dir),
        "benchmark": spec.name,
        "split": split or spec.split,
    }

    reason = judge_unavailable(spec)
    if reason is not None:
        predictions_path.unlink(missing_ok=True)  # never leave an old run's file beside it
        result: dict[str, Any] = {"skipped": reason}
        write_metrics(result, metrics_path)
        if tracker is not None:
            _log(tracker, params, result, [metrics_path], spec.name)
        return result

    chosen, root, origin = benchmark_samples(spec, options, samples)
    if origin is not None:
        params["data"] = origin
    model, processor = loaded if loaded is not None else _load(model_dir)
    records = predict(model, processor, spec, chosen, root, options.batch_size, max_new_tokens, options.progress)
    scores = score_records(spec, records)
    records = [replace(r, score=scores.per_sample.get(r.id)) for r in records]
    write_predictions(records, predictions_path)
    write_metrics(scores.metrics, metrics_path)
    if tracker is not None:
        params.update(
            n_samples=len(records),
            batch_size=options.batch_size,
            limit=limit,
            max_new_tokens=max_new_tokens or "per-task",
        )
        _log(tracker, params, scores.metrics, [predictions_path, metrics_path], spec.name)
    return dict(scores.metrics)


def benchmark_data(spec: BenchmarkSpec, options: EvalOptions) -> Path | None:
    """The data `spec` reads: `options.data`, else `options.own_data` when it scores your
    data; None: its converted file under the root."""
    given = options.data if options.data is not None else options.own_data if scores_own_data(spec) else None
    return Path(given) if given is not None else None


def benchmark_samples(
    spec: BenchmarkSpec, options: EvalOptions, samples: Sequence[Sample] | None = None
) -> tuple[list[Sample], Path, str | None]:
    """(the samples `evaluate` scores, the root their images resolve against, where they
    were read from; None for `samples` given). Callable without a model, so a command can
    check a benchmark's input before it trains anything; raises `NoSamplesError`."""
    root = Path(options.root) if options.root is not None else Path()
    if samples is not None:
        return select_samples(spec, samples, options.split, options.sources, options.limit), root, None
    data = benchmark_data(spec, options)
    found = load_samples(spec, data, root, options.split)
    where = str(data if data is not None else root / spec.default_path)
    chosen = select_samples(spec, found.samples, options.split, options.sources, options.limit, origin=where)
    return chosen, found.root, found.origin


def _load(model_dir: str | Path):
    from dragonfly.inference import load

    return load(model_dir)


def recompute_metrics(predictions_path: str | Path, benchmark: str | BenchmarkSpec) -> dict:
    """The metrics of `benchmark` recomputed from a predictions.jsonl alone."""
    spec = get_benchmark(benchmark)
    return dict(score_records(spec, read_predictions(Path(predictions_path))).metrics)
