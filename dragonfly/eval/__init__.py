"""Evaluation on the paper's benchmarks and the synthetic zoom benchmark.

`evaluate(model_dir, benchmark, out_dir, EvalOptions(...)) -> dict` generates greedy
answers with each benchmark's prompts, writes `predictions.jsonl` and `metrics.json`, and
logs both to MLflow when given a tracker; `recompute_metrics` rebuilds the metrics from
the predictions file. The registry of benchmarks is `BENCHMARKS` (see `benchmarks.py`
for where each one's samples are read from). CLI: `dragonfly.cli.eval`.
"""

from dragonfly.eval.benchmarks import (
    BENCHMARKS,
    BenchmarkSpec,
    ScoreGroup,
    UnknownBenchmarkError,
    all_benchmarks,
    get_benchmark,
)
from dragonfly.eval.evaluator import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    evaluate,
    is_skipped,
    predict,
    recompute_metrics,
)
from dragonfly.eval.options import EvalOptions
from dragonfly.eval.prompts import PromptError, messages, user_text
from dragonfly.eval.samples import NoSamplesError, load_samples, select_samples
from dragonfly.eval.scoring import Prediction, read_predictions, score_records

__all__ = [
    "BENCHMARKS",
    "METRICS_FILE",
    "PREDICTIONS_FILE",
    "BenchmarkSpec",
    "EvalOptions",
    "NoSamplesError",
    "Prediction",
    "PromptError",
    "ScoreGroup",
    "UnknownBenchmarkError",
    "all_benchmarks",
    "evaluate",
    "get_benchmark",
    "is_skipped",
    "load_samples",
    "messages",
    "predict",
    "read_predictions",
    "recompute_metrics",
    "score_records",
    "select_samples",
    "user_text",
]
