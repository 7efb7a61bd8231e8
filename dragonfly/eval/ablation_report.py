"""The results of an ablation and the files they are written to.

`VariantResult` is one trained + evaluated variant; `write_report` turns a set of them into
`ablation.md` (tables shaped like the paper's Tables 1, 5 and 6, variants as columns, each
with a "visual tokens / image" row), `ablation.csv` (long format: variant, benchmark,
metric, value — every metric of every `metrics.json`, plus the model and training figures
under the pseudo-benchmarks `model` and `train`) and `ablation.json` (everything).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dragonfly.eval.benchmarks import BenchmarkSpec, get_benchmark
from dragonfly.files import atomic_write_json

MARKDOWN_FILE = "ablation.md"
CSV_FILE = "ablation.csv"
PLOT_STEM = "ablation"  # ablation_<benchmark>.png
JSON_FILE = "ablation.json"

# The headline metric of each scorer, for benchmarks that score several task groups: the
# spec's `primary` names one number for the whole benchmark, the ablation tables also want
# one per task. Open answers get token F1 too because exact match is often 0 early on.
GROUP_HEADLINES: dict[str, tuple[str, ...]] = {
    "closed": ("accuracy",),
    "closed_llava_med": ("accuracy",),
    "open": ("exact_match", "token_f1"),
    "open_llava_med": ("recall_llava_med",),
    "mcq": ("accuracy",),
    "relaxed": ("relaxed_accuracy",),
    "pope": ("f1",),
    "hallusion": ("accuracy",),
    "caption": ("cider",),
    "mmvet_judge": ("score",),
}


@dataclass(frozen=True)
class PaperTable:
    title: str
    variants: tuple[str, ...]
    note: str


# Which variants (names under `ablations:` in params.yaml) make up which paper table.
PAPER_TABLES: tuple[PaperTable, ...] = (
    PaperTable(
        "Table 1 — LLaVA-NeXT-style baselines vs Dragonfly",
        ("baseline1", "baseline2", "baseline3", "dragonfly_region"),
        "Baseline-1: low + medium {(2,2),(1,4),(4,1)}; Baseline-2: low + medium "
        "{(4,4),(2,8),(8,2)}; Baseline-3: low + {(6,4),(4,6),(3,8),(8,3)}, all tiles; "
        "Dragonfly: low + medium + 12 of 24 high tiles (region selection).",
    ),
    PaperTable(
        "Table 5 — zoom-in selection strategy",
        (
            "dragonfly_global",
            "dragonfly_region",
            "dragonfly_index_block",
            "dragonfly_least_similar",
            "dragonfly_random",
        ),
        "Global: each medium summary scores all high tiles, 12 kept overall; region: "
        "each medium tile keeps its 3 most similar high tiles; index block: the same with the "
        "released code's regions (the i-th block of 6 consecutive high tiles); least similar (ours, not "
        "in the paper): each medium tile keeps its 3 least similar high tiles; random (a control, "
        "ours): 3 of each medium tile's 6 at random.",
    ),
    PaperTable(
        "Table 6 — high-resolution grid for zoom-in selection",
        ("high_4x4", "dragonfly_region", "high_6x8"),
        "High grids {[4,4],[2,8],[8,2]}, {[6,4],[4,6],[3,8],[8,3]} (default), "
        "{[6,8],[8,6],[4,12],[12,4]}; 12 high tiles kept in each.",
    ),
)


@dataclass
class VariantResult:
    """One variant: its layout, what its model costs per image, training and evaluation."""

    name: str
    layout: dict
    model_dir: str
    tiles_encoded: int
    tiles_kept: int
    tokens_per_tile: int
    visual_tokens: int  # positions per image in the LLM sequence (tiles × (tokens + separator))
    stage_seconds: dict[str, float]
    stage_losses: dict[str, dict[str, float]]  # stage -> {"first", "final"} (mean of a window)
    eval_seconds: float
    metrics: dict[str, dict[str, float]]  # benchmark -> its metrics.json
    # benchmark -> distinct (task, answer) pairs / samples: near 0 means the model gives one
    # answer per task whatever the image, and then score differences say nothing about layouts
    distinct_answers: dict[str, float] = field(default_factory=dict)
    reused_stages: list[str] = field(default_factory=list)
    reused_evals: list[str] = field(default_factory=list)
    run_id: str | None = None

    @property
    def train_seconds(self) -> float:
        return sum(self.stage_seconds.values())

    @property
    def final_loss(self) -> float | None:
        last = list(self.stage_losses.values())[-1:] or [{}]
        return last[0].get("final")

    @property
    def reused(self) -> bool:
        return set(self.reused_stages) == set(self.stage_seconds) and set(self.reused_evals) == set(self.metrics)

    def figures(self) -> dict[str, dict[str, float]]:
        """The non-benchmark numbers, as pseudo-benchmarks `model` and `train`."""
        train = {f"{stage}_seconds": s for stage, s in self.stage_seconds.items()}
        for stage, losses in self.stage_losses.items():
            train.update({f"{stage}_{k}_loss": v for k, v in losses.items()})
        train["seconds"] = self.train_seconds
        train["eval_seconds"] = self.eval_seconds
        model = {
            "tiles_encoded": self.tiles_encoded,
            "tiles_kept": self.tiles_kept,
            "tokens_per_tile": self.tokens_per_tile,
            "visual_tokens": self.visual_tokens,
        }
        return {
            "model": {k: float(v) for k, v in model.items()},
            "train": train,
            "answers": {f"{bench}_distinct": v for bench, v in self.distinct_answers.items()},
        }

    def to_dict(self) -> dict:
        return {**asdict(self), "train_seconds": self.train_seconds, "final_loss": self.final_loss}


def headline_keys(spec: BenchmarkSpec) -> list[tuple[str, str]]:
    """(row label, metrics.json key) of the numbers a table shows for `spec`."""
    rows = [(spec.name, spec.primary)]
    if len(spec.groups) > 1:
        for group in spec.groups:
            task = group.prefix or "+".join(group.tasks)
            for metric in GROUP_HEADLINES.get(group.scorer, ()):
                key = f"{group.prefix}_{metric}" if group.prefix else metric
                if key != spec.primary:
                    rows.append((f"{spec.name} / {task}", key))
    return rows


def _layout_label(layout: Mapping) -> str:
    def grids(value) -> str:
        return "{" + ",".join(f"({c},{r})" for c, r in value) + "}"

    parts = [f"strategy {layout.get('strategy', 'region')}"]
    if layout.get("select_order", "most_similar") != "most_similar":
        parts.append(f"keeps {layout['select_order'].replace('_', ' ')}")
    if layout.get("region_rule", "spatial") != "spatial":
        parts.append(f"regions {layout['region_rule'].replace('_', ' ')}")
    if "medium_grids" in layout:
        parts.append(f"medium {grids(layout['medium_grids'])}")
    if layout.get("high_grids"):
        parts.append(f"high {grids(layout['high_grids'])}")
    return "; ".join(parts)


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def _table(title: str, note: str, variants: Sequence[VariantResult], benchmarks: Sequence[str]) -> list[str]:
    names = [v.name for v in variants]
    lines = [
        f"### {title}",
        "",
        note,
        "",
        "| benchmark | metric | " + " | ".join(names) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for bench in benchmarks:
        for label, key in headline_keys(get_benchmark(bench)):
            values = [v.metrics.get(bench, {}).get(key) for v in variants]
            known = [x for x in values if x is not None]
            best = max(known) if len(set(known)) > 1 else None  # no bold when all tie
            cells = [("**" + _fmt(x, 100) + "**") if best is not None and x == best else _fmt(x, 100) for x in values]
            lines.append(f"| {label} | {key} ×100 | " + " | ".join(cells) + " |")
        distinct = [_fmt(v.distinct_answers.get(bench), 100) for v in variants]
        lines.append(f"| {bench} | distinct answers % | " + " | ".join(distinct) + " |")
    rows = [
        ("layout", "", [_layout_label(v.layout) for v in variants]),
        ("tiles encoded / image", "", [str(v.tiles_encoded) for v in variants]),
        ("tiles kept / image", "", [str(v.tiles_kept) for v in variants]),
        ("visual tokens / image", "positions", [str(v.visual_tokens) for v in variants]),
        ("final train loss", "last stage", [_fmt(v.final_loss, digits=3) for v in variants]),
        ("train time", "s", [_fmt(v.train_seconds) for v in variants]),
    ]
    lines += [f"| {a} | {b} | " + " | ".join(cells) + " |" for a, b, cells in rows]
    return [*lines, ""]


def summary_rows(results: Mapping[str, VariantResult], benchmarks: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(columns, one row per variant): each benchmark's headline numbers ×100 and distinct
    answers %, then visual tokens and the final training loss; the console's table."""
    keys = [(bench, label, key) for bench in benchmarks for label, key in headline_keys(get_benchmark(bench))]
    columns = ["variant", *(f"{label} {key} ×100" for _, label, key in keys)]
    columns += [f"{bench} distinct answers %" for bench in benchmarks] + ["visual tokens", "final loss"]
    rows = []
    for name, v in results.items():
        scores = [_fmt(v.metrics.get(bench, {}).get(key), 100) for bench, _, key in keys]
        distinct = [_fmt(v.distinct_answers.get(bench), 100) for bench in benchmarks]
        rows.append([name, *scores, *distinct, str(v.visual_tokens), _fmt(v.final_loss, digits=3)])
    return columns, rows


def render_markdown(results: Mapping[str, VariantResult], benchmarks: Sequence[str], header: str = "") -> str:
    """The three paper-shaped tables over the variants that were run (a table missing all of
    its variants is left out; variants in no paper table get a table of their own)."""
    lines = ["# Ablation", ""]
    if header:
        lines += [header, ""]
    lines += [
        "Scores ×100 (CIDEr ×100 as the paper reports it); the best score of a row is bold (none when all tie). "
        "Visual tokens / image = tiles kept × (tokens per tile + 1 separator). "
        "Distinct answers % = distinct (task, answer) pairs per 100 samples: a model that "
        "answers every image alike scores near 0 there, whatever its accuracy.",
        "",
    ]
    placed: set[str] = set()
    for table in PAPER_TABLES:
        chosen = [results[n] for n in table.variants if n in results]
        if chosen:
            lines += _table(table.title, table.note, chosen, benchmarks)
            placed.update(v.name for v in chosen)
    others = [v for n, v in results.items() if n not in placed]
    if others:
        lines += _table("Other variants", "Variants outside the paper's tables.", others, benchmarks)
    return "\n".join(lines)


def csv_rows(results: Mapping[str, VariantResult]) -> list[tuple[str, str, str, float]]:
    rows = []
    for name, result in results.items():
        for bench, metrics in {**result.metrics, **result.figures()}.items():
            for metric, value in sorted(metrics.items()):
                if isinstance(value, int | float):
                    rows.append((name, bench, metric, float(value)))
    return rows


def write_report(
    results: Mapping[str, VariantResult], benchmarks: Sequence[str], out_dir: Path, settings: Mapping, header: str = ""
) -> dict[str, Path]:
    """Write ablation.md, ablation.csv, ablation.json and ablation.png (per benchmark, accuracy
    against visual tokens with the chance level; linked from the markdown) into `out_dir`;
    returns their paths."""
    from dragonfly.plots import ablation_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / MARKDOWN_FILE, "csv": out_dir / CSV_FILE, "json": out_dir / JSON_FILE}
    payload = {"settings": dict(settings), "variants": {n: r.to_dict() for n, r in results.items()}}
    figures = []
    for bench in benchmarks:
        paths[f"plot_{bench}"] = out_dir / f"{PLOT_STEM}_{bench}.png"
        ablation_figure(payload["variants"], bench).savefig(paths[f"plot_{bench}"], dpi=110)
        figures.append(f"![{bench}: accuracy against visual tokens per image]({paths[f'plot_{bench}'].name})")
    markdown = render_markdown(results, benchmarks, header) + "\n\n" + "\n\n".join(figures)
    paths["markdown"].write_text(markdown.rstrip() + "\n", encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("variant", "benchmark", "metric", "value"))
        writer.writerows(csv_rows(results))
    atomic_write_json(paths["json"], payload, indent=2, sort_keys=True, default=str)
    return paths
