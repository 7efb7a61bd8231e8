"""`dragonfly data ...`: convert, validate, build, synth, stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from dragonfly.config import DEFAULT_PARAMS as PARAMS_FILE
from dragonfly.data.config import DataConfig, load_data_config
from dragonfly.data.mixture import build_mixture
from dragonfly.data.quarantine import (
    RejectedFractionError,
    quarantine_file,
    reasons,
    with_stage,
    write_quarantine,
)
from dragonfly.data.schema import ImageCheck, Sample, write_samples_jsonl
from dragonfly.data.sources import FORMATS, native
from dragonfly.data.sources import convert as run_converter
from dragonfly.data.synth import write as write_synth
from dragonfly.data.validate import missing_images, validate_samples
from dragonfly.model.images import DEFAULT_MAX_IMAGE_PIXELS

app = typer.Typer(help="Data: convert sources, validate, build mixtures, synthetic benchmark.")
console = Console()

ParamsOpt = Annotated[Path | None, typer.Option(help="params file with a `data:` section [default: ./params.yaml]")]
RootOpt = Annotated[Path | None, typer.Option(help="data root (default: from params, else ./data)")]


def _config(params: Path | None) -> DataConfig:
    """The `data:` section of --params, by default ./params.yaml (a missing file is an error)."""
    return load_data_config(params or PARAMS_FILE)


def _parse_options(options: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep:
            raise typer.BadParameter(f"options are key=value, got {opt!r}")
        out[key] = yaml.safe_load(value)
    return out


def stats_table(stats: dict[str, Any]) -> Table:
    table = Table(title=f"mixture {stats['mixture']} (seed {stats['seed']})")
    cols = ("rows", "rejected", "filtered", "duplicates", "over_image_cap", "samples")
    table.add_column("source", overflow="fold")
    for c in cols:
        table.add_column(c, justify="right")
    for name, s in stats["per_source"].items():
        table.add_row(name, *(str(s.get(c, "")) for c in cols))
    table.add_section()
    table.add_row(
        "total", str(stats["rows_seen"]), str(stats["rejected"]), str(stats["filtered"]), "", "",
        str(stats["samples"]),
    )  # fmt: skip
    return table


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("count", justify="right")
    for k, v in counts.items():
        table.add_row(k, str(v))
    return table


def _check_images_exist(samples: list[Sample], root: Path) -> None:
    """Warn when converted samples point at image files that are not there; fail when none
    is there, which is a wrong root or image folder rather than a few bad rows."""
    missing, total = missing_images(samples, root)
    if not missing:
        return
    console.print(
        f"[yellow]warning: {len(missing)} of {total} images not found under {root}; first: {root / missing[0]}"
    )
    if len(missing) == total:
        console.print("[red]no image exists: check --root and the converter's folder options")
        raise typer.Exit(1)


@app.command("convert")
def convert_cmd(
    fmt: Annotated[str, typer.Argument(help=f"source format: {', '.join(sorted(FORMATS))}")],
    path: Annotated[Path, typer.Argument(help="dataset file or folder")],
    out: Annotated[Path, typer.Option(help="samples .jsonl to write")],
    root: RootOpt = None,
    source: Annotated[str | None, typer.Option(help="source name (default: the format)")] = None,
    option: Annotated[list[str] | None, typer.Option(help="converter option key=value")] = None,
) -> None:
    """Convert one dataset into the sample schema (JSONL) plus `<out>.convert-quarantine.jsonl`."""
    data_root = root or Path(_config(None).root)
    opts = _parse_options(option or [])
    if source:
        opts["source"] = source
    with console.status(f"converting {path} ({fmt})"):
        result = run_converter(fmt, path, data_root, **opts)
    n = write_samples_jsonl(result.samples, out)
    target = quarantine_file(out, "convert")
    q = write_quarantine(result.rejections, target)
    console.print(f"{n} samples -> {out}; {q} rows quarantined -> {target}")
    if result.rejections:
        console.print(_counts_table("quarantined by reason", reasons(result.rejections)))
    _check_images_exist(result.samples, data_root)


@app.command("validate")
def validate_cmd(
    samples: Annotated[Path, typer.Argument(help="samples .jsonl")],
    root: RootOpt = None,
    min_image_size: int = 16,
    max_image_pixels: Annotated[
        int, typer.Option(help="reject larger images (checked on the header)")
    ] = DEFAULT_MAX_IMAGE_PIXELS,
    images: Annotated[bool, typer.Option(help="decode every image")] = True,
    quarantine: Annotated[Path | None, typer.Option(help="where to write rejections")] = None,
    threshold: Annotated[float, typer.Option(help="fail above this rejected fraction")] = 1.0,
) -> None:
    """Validate a samples file against the schema and its images; rejections go to
    `<samples>.validate-quarantine.jsonl` unless --quarantine says otherwise."""
    data_root = root or Path(_config(None).root)
    loaded = native.convert(samples, data_root)
    rows: list[Sample] = loaded.samples
    with Progress(console=console) as progress:
        task = progress.add_task("validating", total=len(rows))
        checked = validate_samples(
            rows, data_root, ImageCheck(min_image_size, max_image_pixels) if images else None,
            progress=lambda k: progress.advance(task, k),
        )  # fmt: skip
    bad = with_stage(loaded.rejections, "validate") + checked.rejections
    target = quarantine or quarantine_file(samples, "validate")
    write_quarantine(bad, target)
    total = len(rows) + len(loaded.rejections)
    console.print(f"{len(checked.samples)} of {total} samples valid; {len(bad)} -> {target}")
    if bad:
        console.print(_counts_table("rejected by reason", reasons(bad)))
    if total and len(bad) / total > threshold:
        console.print(f"[red]rejected fraction {len(bad) / total:.1%} above {threshold:.1%}")
        raise typer.Exit(1)


@app.command("build")
def build_cmd(
    mixture: Annotated[str, typer.Option(help="mixture name in the data config")] = "tiny",
    params: ParamsOpt = None,
    root: RootOpt = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default out_dir/<mixture>)")] = None,
    seed: Annotated[int | None, typer.Option(help="override the mixture's seed")] = None,
) -> None:
    """Build a named mixture into an Arrow dataset with stats and quarantine."""
    cfg = _config(params)
    mix = cfg.mixture(mixture)
    if seed is not None:
        mix = type(mix)(**{**mix.__dict__, "seed": seed})
    data_root = root or Path(cfg.root)
    out_dir = out or Path(cfg.out_dir) / mixture
    try:
        result = build_mixture(mix, data_root, out_dir, progress=True)
    except RejectedFractionError as exc:
        console.print(f"[red]build failed: {exc}")
        console.print(f"the failed build's quarantine and stats are in {out_dir}; {exc.hint}")
        raise typer.Exit(1) from None
    console.print(stats_table(result.stats))
    console.print(f"dataset -> {result.dataset_dir}; stats -> {result.stats_path}")


@app.command("synth")
def synth_cmd(params: ParamsOpt = None, root: RootOpt = None) -> None:
    """Generate the synthetic fine-grained benchmark (every variant in the config)."""
    cfg = _config(params)
    data_root = root or Path(cfg.root)
    for synth in cfg.synth:
        with Progress(console=console) as progress:
            task = progress.add_task(f"synth {synth.variant}", total=sum(synth.counts().values()))
            out = write_synth(synth, data_root, progress=lambda k, t=task: progress.advance(t, k))
        console.print(f"{synth.source}: {out}")


@app.command("stats")
def stats_cmd(
    path: Annotated[Path, typer.Argument(help="a build folder or its stats.json")],
) -> None:
    """Print the stats of a built mixture as tables."""
    file = path / "stats.json" if path.is_dir() else path
    stats = json.loads(file.read_text(encoding="utf-8"))
    console.print(stats_table(stats))
    console.print(_counts_table("per task", stats["per_task"]))
    console.print(_counts_table("per split", stats["per_split"]))
    if stats["rejected_by_reason"] or stats["filtered_by_reason"]:
        merged = {f"rejected: {k}": v for k, v in stats["rejected_by_reason"].items()}
        merged |= {f"filtered: {k}": v for k, v in stats["filtered_by_reason"].items()}
        console.print(_counts_table("quarantine by reason", merged))
