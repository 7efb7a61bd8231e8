"""Figures of training and ablations: loss curves of chained stages, and accuracy against
visual tokens per image with the chance level drawn. Pure functions of plain data (lists,
the dicts of ``ablation.json``), returning ``matplotlib.figure.Figure`` objects made
without pyplot; the pipeline report, ``dragonfly ablate`` and notebooks/03 draw with them.
"""

from __future__ import annotations

import base64
import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

Curve = Sequence[tuple[int, float]]  # (step, loss)
CHANCE_SUFFIXES = ("accuracy", "exact_match")  # metrics a majority answer also scores


def read_loss_csv(path: str | Path) -> list[tuple[int, float]]:
    """``loss.csv`` of a stage folder (step, loss, lr) as (step, loss) pairs."""
    with Path(path).open(newline="") as fh:
        return [(int(row["step"]), float(row["loss"])) for row in csv.DictReader(fh) if row.get("loss")]


def _smooth(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction, so the first points are not pulled to 0."""
    out, avg = [], 0.0
    for n, value in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * value
        out.append(avg / (1 - weight**n))
    return out


def loss_figure(curves: Mapping[str, Curve], title: str = "Training loss", smooth: float = 0.8) -> Figure:
    """The stages' loss one after the other on one step axis (each stage restarts at its own
    step 1, so they are placed end to end), raw faint and smoothed bold, stages labelled."""
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax = fig.subplots()
    offset = 0
    for i, (stage, curve) in enumerate(curves.items()):
        if not curve:
            continue
        steps = [offset + step for step, _ in curve]
        losses = [loss for _, loss in curve]
        color = f"C{i}"
        ax.plot(steps, losses, color=color, alpha=0.25, linewidth=1)
        ax.plot(steps, _smooth(losses, smooth), color=color, linewidth=2, label=f"{stage} ({len(curve)} logged steps)")
        if offset:
            ax.axvline(offset, color="#999999", linestyle=":", linewidth=1)
        offset = steps[-1]
    ax.set_xlabel("optimiser step (stages end to end)")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return fig


def chance_key(metric: str) -> str | None:
    """The metrics.json key of the majority-answer level of ``metric``, if it has one:
    ``vqa_open_exact_match`` → ``vqa_open_majority_baseline``, ``accuracy`` →
    ``majority_baseline``."""
    for suffix in CHANCE_SUFFIXES:
        if metric.endswith(suffix):
            return f"{metric[: -len(suffix)]}majority_baseline"
    return None


def ablation_points(variants: Mapping[str, Mapping], benchmark: str, metric: str) -> list[tuple[str, int, float]]:
    """(variant, visual tokens per image, value) of every variant that has the metric."""
    points = []
    for name, result in variants.items():
        value = result.get("metrics", {}).get(benchmark, {}).get(metric)
        if isinstance(value, int | float):
            points.append((name, int(result["visual_tokens"]), float(value)))
    return points


def ablation_metrics(variants: Mapping[str, Mapping], benchmark: str) -> list[str]:
    """The accuracy-like metrics of ``benchmark`` the variants report, overall first."""
    keys = set()
    for result in variants.values():
        keys |= {k for k in result.get("metrics", {}).get(benchmark, {}) if k.endswith(CHANCE_SUFFIXES)}
    return sorted(keys, key=lambda k: (k.count("_") > 1 or k != "accuracy", k))


def ablation_figure(variants: Mapping[str, Mapping], benchmark: str, metrics: Sequence[str] | None = None) -> Figure:
    """One panel per metric: each variant's value against its visual tokens per image, the
    majority-answer level dashed (what a model that ignores the image scores)."""
    metrics = list(metrics or ablation_metrics(variants, benchmark))
    fig = Figure(figsize=(4.2 * max(1, len(metrics)), 4), layout="constrained")
    axes = fig.subplots(1, max(1, len(metrics)), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=False):
        points = ablation_points(variants, benchmark, metric)
        colours = {name: f"C{i}" for i, name in enumerate(variants)}  # one colour per variant in every panel
        for name, tokens, value in points:
            ax.scatter([tokens], [value], s=60, color=colours[name], zorder=3, label=name, alpha=0.85)
        levels = [
            result["metrics"][benchmark][key]
            for result in variants.values()
            if (key := chance_key(metric)) and key in result.get("metrics", {}).get(benchmark, {})
        ]
        if levels:  # the same test set for every variant: one level (their mean, should they differ)
            chance = sum(levels) / len(levels)
            ax.axhline(chance, color="#cc3333", linestyle="--", linewidth=1.2, label=f"majority answer {chance:.2f}")
        ax.legend(fontsize=7, loc="upper left")
        ax.set_xlabel("visual tokens per image")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.set_title(f"{benchmark}: {metric}", fontsize=9)
    fig.suptitle("Ablation: accuracy against visual tokens per image", fontsize=10)
    return fig


def markdown_image(path: str | Path, alt: str) -> str:
    """A PNG inlined as a data URI: a Prefect markdown artifact has no file store of its own."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"
