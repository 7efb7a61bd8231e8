"""The pipeline report: evaluation metrics beside the chance level of each task, the
registered versions and aliases, the stages' loss curves, and where the runs are. Markdown
for Prefect (figures inlined) and the console (figures as paths); rows for Prefect's table
artifact."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from dragonfly.eval.evaluator import PREDICTIONS_FILE
from dragonfly.eval.scoring import read_predictions
from dragonfly.tracking import redacted


def majority_baseline(predictions_jsonl: str | Path) -> dict[str, float]:
    """Per task, the accuracy of always giving that task's most common reference answer:
    the score a model that ignores the image reaches (captions have none)."""
    by_task: dict[str, Counter] = {}
    for record in read_predictions(Path(predictions_jsonl)):
        if record.task != "caption" and record.references:
            by_task.setdefault(record.task, Counter())[record.references[0].strip().lower()] += 1
    return {task: counts.most_common(1)[0][1] / sum(counts.values()) for task, counts in by_task.items()}


# The metrics a person reads first; counts, BLEU-n and precision/recall stay in metrics.json.
HEADLINE = ("accuracy", "exact_match", "token_f1", "cider", "rouge_l", "f1")


def _chance_for(key: str, chance: dict[str, float]) -> float | None:
    """The majority-answer level of the task an accuracy-like metric belongs to."""
    if not key.endswith(("accuracy", "exact_match")):
        return None
    return next((level for task, level in chance.items() if key.startswith(task)), None)


def report_rows(summary: dict) -> list[dict]:
    """One row per (track, benchmark, metric), with the chance level where a task has one."""
    rows = []
    for track, entry in summary.get("tracks", {}).items():
        for bench, metrics in (entry.get("metrics") or {}).items():
            predictions = Path(entry["eval_dir"]) / bench / PREDICTIONS_FILE
            chance = majority_baseline(predictions) if predictions.is_file() else {}
            for key, value in sorted(metrics.items()):
                if isinstance(value, int | float) and key.endswith(HEADLINE):
                    level = _chance_for(key, chance)
                    rows.append(
                        {
                            "track": track,
                            "benchmark": bench,
                            "metric": key,
                            "value": round(float(value), 4),
                            "chance": round(level, 4) if level is not None else None,
                        }
                    )
    return rows


def loss_curves_png(finals: dict[str, str | Path], out: str | Path) -> Path | None:
    """The loss curves of the stages whose ``final/`` models are given (each stage folder's
    ``loss.csv``), end to end, written to ``out``; None when no stage has one (skipped
    stages keep theirs, so a rerun draws them too)."""
    from dragonfly.plots import loss_figure, read_loss_csv

    curves = {
        s: read_loss_csv(Path(f).parent / "loss.csv")
        for s, f in finals.items()
        if (Path(f).parent / "loss.csv").is_file()
    }
    if not curves:
        return None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    loss_figure(curves, title=f"Training loss: {', '.join(curves)}").savefig(out, dpi=110)
    return out


def pipeline_report(
    summary: dict, tracking_uri: str | None = None, figures: dict[str, Path] | None = None, images: str = "path"
) -> str:
    """``figures``: {caption: PNG}, shown as ``images`` says: ``inline`` (data URIs: the
    Prefect artifact), ``link`` (beside the markdown file: MLflow's ``report/``) or
    ``path`` (the console)."""
    lines = [
        f"# Dragonfly pipeline: profile `{summary['profile']}`",
        "",
        f"Stages run: {', '.join(summary.get('stages', [])) or 'none'}.",
        "",
    ]
    rows = report_rows(summary)
    if rows:
        lines += [
            "| track | benchmark | metric | value | chance (majority answer) |",
            "| --- | --- | --- | ---: | ---: |",
        ]
        for row in rows:
            chance = f"{row['chance']:.3f}" if row["chance"] is not None else "–"
            lines.append(f"| {row['track']} | {row['benchmark']} | {row['metric']} | {row['value']:.3f} | {chance} |")
        lines.append("")
    for track, entry in summary.get("tracks", {}).items():
        reg = entry.get("registration")
        if reg:
            lines.append(
                f"- **{track}**: registered `{reg['name']}` version {reg['version']} as `@candidate`; "
                f"`@champion` is version {reg['champion_version']} ({reg['reason']})"
            )
        lines.append(f"  model: `{entry['model']}`")
    if figures:
        from dragonfly.plots import markdown_image

        lines.append("")
        for caption, path in figures.items():
            if images == "inline":
                lines.append(markdown_image(path, caption))
            elif images == "link":
                lines.append(f"![{caption}]({Path(path).name})")
            else:
                lines.append(f"{caption}: `{path}`")
    if summary.get("mlflow_run_id"):
        lines += [
            "",
            f"MLflow: run `{summary['mlflow_run_id']}` in `{redacted(tracking_uri)}` "
            "(open with `mlflow ui --backend-store-uri <uri> --host 127.0.0.1`).",
        ]
    return "\n".join(lines) + "\n"
