"""`dragonfly eval`: evaluate a saved model on one benchmark or on all whose data is there.

Each benchmark writes `OUT/<benchmark>/predictions.jsonl` and `OUT/<benchmark>/metrics.json`;
`OUT/summary.json` collects the metrics of the benchmarks run. With MLflow (on unless `--no-mlflow`), each
benchmark is one MLflow run (nested under an "eval" parent run for `--benchmark all`).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from dragonfly import switches
from dragonfly.cli import MlflowOption
from dragonfly.eval.benchmarks import (
    BENCHMARKS,
    BenchmarkSpec,
    UnknownBenchmarkError,
    all_benchmarks,
    get_benchmark,
)
from dragonfly.eval.evaluator import is_skipped
from dragonfly.eval.samples import Loaded, NoSamplesError, is_dataset_dir, load_samples

if TYPE_CHECKING:
    from dragonfly.eval.options import EvalOptions

console = Console()
EXPERIMENT = "dragonfly-eval"


def _plan(
    benchmark: str, data: Path | None, root: Path, split: str | None, sources: list[str] | None
) -> tuple[list[BenchmarkSpec], Loaded | None]:
    """Which benchmarks to run, and the samples shared by all of them when `data` holds
    several benchmarks (a JSONL or a mixture)."""
    if benchmark != "all":
        return [get_benchmark(benchmark)], None
    if data is None:
        chosen = [s for s in all_benchmarks() if (root / s.default_path).is_file()]
        if not chosen:
            paths = ", ".join(sorted({s.default_path for s in all_benchmarks()}))
            raise typer.BadParameter(
                f"--benchmark all found no converted benchmark under {root} (looked for {paths}); "
                "pass --data or convert some first (`dragonfly data convert` / `dragonfly data synth`)"
            )
        return chosen, None
    if not (data.suffix == ".jsonl" and data.is_file()) and not is_dataset_dir(data):
        raise typer.BadParameter(
            "--benchmark all needs --data to be a samples JSONL or a built mixture; "
            "raw releases are converted one benchmark at a time (--benchmark NAME)"
        )
    shared = load_samples(all_benchmarks()[0], data, root, every_split=True)
    chosen = []
    for spec in all_benchmarks():
        accepted = set(sources or spec.sources)
        if any(s.source in accepted and s.task in spec.tasks for s in shared.samples):
            chosen.append(spec)
    if not chosen:
        raise typer.BadParameter(f"no benchmark's samples found in {data}")
    return chosen, shared


def _summary_table(results: dict[str, dict]) -> Table:
    """The headline metric of each benchmark beside what a constant answer scores and how
    many distinct answers the model gave, so a model that says one word to everything shows."""
    table = Table(title="evaluation")
    for column, justify in (("benchmark", "left"), ("metric", "left"), ("value", "right")):
        table.add_column(column, justify=justify)
    for column in ("majority answer", "distinct answers", "n"):
        table.add_column(column, justify="right")
    for name, metrics in results.items():
        spec = BENCHMARKS[name]
        if is_skipped(metrics):
            table.add_row(name, "skipped", "-", "-", "-", "-")
            continue
        for label, key, head in _headline_rows(spec, metrics):
            # a token F1 has no majority-answer level of its own: the exact-match one would mislead
            f1 = key.endswith("token_f1")
            table.add_row(
                label,
                key[len(head) :],
                _number(metrics.get(key)),
                "-" if f1 else _number(metrics.get(f"{head}majority_baseline")),
                "-" if f1 else _count(metrics.get(f"{head}distinct_predictions")),
                _count(metrics.get(f"{head}n", metrics.get("n"))),
            )
    return table


def _headline_rows(spec: BenchmarkSpec, metrics: dict) -> list[tuple[str, str, str]]:
    """(label, metric key, key prefix of its baseline): the primary metric, then one row per
    task group or answer type that has a baseline of its own (closed/open, vqa_open...)."""
    rows = [(spec.name, spec.primary, "")]
    if spec.overall_token_f1 and "token_f1" in metrics:  # Table 3's Token F1 (Med-PaLM M), then the open-only one
        rows.append((f"{spec.name} (all questions)", "token_f1", ""))
        if "open_token_f1" in metrics:
            rows.append(("  open only", "open_token_f1", "open_"))
    heads = sorted({k[: -len("majority_baseline")] for k in metrics if k.endswith("_majority_baseline")})
    for head in heads:
        key = next((head + k for k in (spec.primary, "exact_match", "accuracy") if head + k in metrics), None)
        if key is not None:
            rows.append((f"  {head.rstrip('_')}", key, head))
    return rows


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def _count(value) -> str:
    return str(int(value)) if isinstance(value, float) else "-"


def benchmarks_table() -> Table:
    """Every benchmark: name, what it is, tasks, split and the protocol it follows."""
    table = Table(title="benchmarks (`--benchmark NAME`; generic ones score any --data)")
    for column in ("name", "title", "tasks", "split", "reference"):
        table.add_column(column, overflow="fold")
    for spec in BENCHMARKS.values():
        table.add_row(spec.name, spec.title, ", ".join(spec.tasks), spec.split, spec.reference)
    return table


def _list_benchmarks(value: bool) -> None:
    if value:
        console.print(benchmarks_table())
        raise typer.Exit()


def eval_command(
    model: Annotated[
        str,
        typer.Option(
            help="Saved Dragonfly directory (save_pretrained), or a registered model: "
            "models:/NAME@ALIAS or models:/NAME/N."
        ),
    ],
    benchmark: Annotated[
        str,
        typer.Option(
            help="Benchmark name, 'all', or a generic one for your data: vqa, mcq, caption. `--list` shows every name."
        ),
    ] = "all",
    data: Annotated[
        Path | None,
        typer.Option(
            help="Samples JSONL, built mixture dir, or (one benchmark) the raw release. "
            "Default: ROOT/<benchmark's converted JSONL>."
        ),
    ] = None,
    root: Annotated[Path, typer.Option(help="Data root that image paths are relative to.")] = Path("data"),
    out: Annotated[Path, typer.Option(help="Output dir; one sub-dir per benchmark.")] = Path("eval"),
    batch_size: Annotated[int, typer.Option(min=1, help="Generation batch size.")] = 8,
    limit: Annotated[int | None, typer.Option(min=1, help="First N samples only.")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Override every task's answer length limit.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Override the benchmark's split.")] = None,
    source: Annotated[list[str] | None, typer.Option(help="Accept these sample source names instead.")] = None,
    mlflow: bool | None = MlflowOption,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = EXPERIMENT,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    force: Annotated[bool, typer.Option(help="Evaluate even when OUT records the same evaluation.")] = False,
    list_: Annotated[
        bool,
        typer.Option("--list", is_eager=True, callback=_list_benchmarks, help="List the benchmarks and exit."),
    ] = False,
) -> None:
    """Evaluate MODEL with greedy decoding; write predictions, metrics (DVC) and log to MLflow."""
    from dragonfly.pipeline import EvalOptions
    from dragonfly.registry import resolve_model

    try:
        specs, _ = _plan(benchmark, data, root, split, source)
    except UnknownBenchmarkError as err:
        raise typer.BadParameter(str(err), param_hint="--benchmark") from None
    options = EvalOptions(
        root=root,
        data=data,
        split=split,
        sources=tuple(source) if source else None,
        max_new_tokens=max_new_tokens,
        limit=limit,
        batch_size=batch_size,
        progress=progress and sys.stderr.isatty(),  # tqdm bars would flood a redirected log
    )
    model = resolve_model(model)  # a models:/ URI becomes its downloaded directory
    names = [s.name for s in specs]
    try:
        tracked = switches.tracking(mlflow)
        results = _evaluate(model, names, out, options, tracked, experiment, force, skip_missing=benchmark == "all")
    except (NoSamplesError, FileNotFoundError) as err:
        console.print(f"[red]error[/]: {err}")
        raise typer.Exit(1) from None
    for name, metrics in results.items():
        if is_skipped(metrics):
            console.print(f"[yellow]{name} skipped[/]: {metrics['skipped']}")
        else:
            console.print(f"[green]{name}[/] → {out / name}")
    console.print(_summary_table(results))


def _evaluate(
    model: str,
    names: list[str],
    out: Path,
    options: EvalOptions,
    mlflow: bool,
    experiment: str,
    force: bool,
    skip_missing: bool,
) -> dict[str, dict]:
    """The pipeline's evaluation, its benchmarks' runs nested under an "eval" run when there
    are several."""
    from dragonfly.pipeline import evaluate
    from dragonfly.tracking import tracking_for

    base = tracking_for(mlflow)
    parent = base.tracker(experiment, "eval") if base is not None and len(names) > 1 else None
    tracking = base.under(parent.run_id) if parent is not None else base
    with parent or nullcontext():
        return evaluate(
            model,
            names,
            None,
            out,
            options,
            tracking,
            force=force,
            log=console.print,
            skip_missing=skip_missing,
            experiment=experiment,
        )


# The command is the Typer's callback rather than a sub-command named "eval": mounted with
# `root.add_typer(app, name="eval")` (as `dragonfly.cli._mount` does) it is then
# `dragonfly eval --model ...`, not `dragonfly eval eval ...`; `root.command("eval")(eval_command)`
# works as well, and `python -m dragonfly.cli.eval --model ...` runs it directly.
app = typer.Typer(
    help="Evaluate a saved Dragonfly on the paper's benchmarks.",
    invoke_without_command=True,
    pretty_exceptions_show_locals=False,
)
app.callback()(eval_command)


if __name__ == "__main__":
    app()
