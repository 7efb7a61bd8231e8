"""`dragonfly data ...`: convert, validate, build, plan, synth, stats."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from dragonfly.config import DEFAULT_PARAMS as PARAMS_FILE
from dragonfly.data.config import DataConfig, load_data_config
from dragonfly.data.mixture import SplitOverlapError, build_mixture
from dragonfly.data.quarantine import (
    RejectedFractionError,
    quarantine_file,
    reasons,
    with_stage,
    write_quarantine,
)
from dragonfly.data.schema import ImageCheck, Sample, write_samples_jsonl
from dragonfly.data.sources import FORMATS, describe, native, split_rule, summary
from dragonfly.data.sources import convert as run_converter
from dragonfly.data.synth import write as write_synth
from dragonfly.data.validate import missing_images, validate_samples
from dragonfly.model.images import DEFAULT_MAX_IMAGE_PIXELS

app = typer.Typer(help="Data: convert sources, validate, build mixtures, synthetic benchmark.")
console = Console(soft_wrap=True)  # a redirected log keeps paths on one line

ParamsOpt = Annotated[Path | None, typer.Option(help="params file with a `data:` section [default: ./params.yaml]")]
RootOpt = Annotated[Path | None, typer.Option(help="data root (default: from params, else ./data)")]
DropOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="MIXTURE.SOURCE to build without, repeatable; the same as listing it under data.drop in params "
        "(which `dragonfly train` also reads: --set 'data.drop=[MIXTURE.SOURCE]')"
    ),
]


def _config(params: Path | None) -> DataConfig:
    """The `data:` section of --params, by default ./params.yaml (a missing file is an error)."""
    return load_data_config(params or PARAMS_FILE)


def _parse_options(options: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values read as YAML scalars (`max_images=2` is an int), anything
    else YAML would make of them (lists, maps, syntax errors) stays the string typed."""
    out: dict[str, Any] = {}
    for opt in options:
        key, sep, value = opt.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"options are key=value, got {opt!r}", param_hint="--option")
        if key in out:
            raise typer.BadParameter(f"option {key!r} given twice", param_hint="--option")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        out[key] = parsed if parsed is None or isinstance(parsed, str | int | float | bool) else value
    return out


def stats_table(stats: dict[str, Any]) -> Table:
    """One row per source; each row adds up (rows - rejected - filtered - duplicates -
    over_image_cap + weighting = samples), and the total row is the sum of each column."""
    table = Table(title=f"mixture {stats['mixture']} (seed {stats['seed']})")
    cols = ("rows", "rejected", "filtered", "duplicates", "over_image_cap", "weighting", "samples")
    table.add_column("source", overflow="fold")
    for c in cols:  # short headers: the table fits 80 columns (a redirected log)
        table.add_column(
            {"duplicates": "dups", "over_image_cap": "over cap", "weighting": "weight"}.get(c, c), justify="right"
        )
    per_source = stats["per_source"].values()
    for name, s in stats["per_source"].items():
        table.add_row(name, *(str(s.get(c, "")) for c in cols))
    table.add_section()
    table.add_row("total", *(str(sum(s.get(c, 0) for s in per_source)) for c in cols))
    return table


def cap_line(stats: dict[str, Any]) -> str | None:
    """What the per-image cap removed and the key that controls it; None when it removed nothing."""
    over = sum(s.get("over_image_cap", 0) for s in stats["per_source"].values())
    if not over:
        return None
    key = f"data.mixtures.{stats['mixture']}.max_per_image"
    return (
        f"over cap: {over} training sample(s) left out as more than {stats.get('max_per_image')} per image "
        f"({key}; null keeps every row); each is in quarantine.jsonl as over_image_cap"
    )


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("count", justify="right")
    for k, v in counts.items():
        table.add_row(k, str(v))
    return table


def _check_images_exist(samples: list[Sample], root: Path, threshold: float) -> bool:
    """Whether more than `threshold` of the samples' distinct images have no file (a stat
    each, never a decode); prints how many are missing, with up to 3 of them, either way."""
    missing, total = missing_images(samples, root)
    if not missing:
        return False
    fraction = len(missing) / total
    examples = ", ".join(str(root / p) for p in missing[:3])
    line = f"{len(missing)} of {total} images not found under {root} ({fraction:.1%}); e.g. {examples}"
    failed = fraction > threshold
    style = "red]error" if failed else "yellow]warning"
    console.print(f"[{style}: {escape(line)}", soft_wrap=True)
    return failed


@app.command("convert")
def convert_cmd(
    fmt: Annotated[str, typer.Argument(help="source format; list them with `dragonfly data formats`")],
    path: Annotated[Path, typer.Argument(help="dataset file or folder")],
    out: Annotated[Path, typer.Option(help="samples .jsonl to write")],
    root: RootOpt = None,
    source: Annotated[str | None, typer.Option(help="source name (default: the format)")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(help="converter option key=value, repeatable; FORMAT's keys: `dragonfly data formats FORMAT`"),
    ] = None,
    missing_threshold: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="fail, writing nothing, when more than this fraction of the images has no file. "
            "1% lets the few dead files of a big public release through (validate and build quarantine them); "
            "more than that is usually a wrong --root or image folder option",
        ),
    ] = 0.01,
) -> None:
    """Convert one dataset into the sample schema (JSONL) plus `<out>.convert-quarantine.jsonl`.

    FORMAT's options, their defaults and how it decides each sample's split:
    `dragonfly data formats FORMAT`."""
    data_root = root or Path(_config(None).root)
    opts = _parse_options(option or [])
    if source:
        opts["source"] = source
    with console.status(f"converting {path} ({fmt})"):
        result = run_converter(fmt, path, data_root, **opts)
    target = quarantine_file(out, "convert")
    if _check_images_exist(result.samples, data_root, missing_threshold):
        # An earlier run's output left in place would look like this run's result.
        stale = [p for p in (out, target) if p.exists()]
        for p in stale:
            p.unlink()
        removed = f"; removed the earlier {' and '.join(map(str, stale))}" if stale else ""
        console.print(
            f"[red]convert failed: over --missing-threshold {missing_threshold:.1%}; nothing written to "
            f"{escape(str(out))}{escape(removed)}",
            soft_wrap=True,
        )
        console.print(f"check --root and the folder options of `dragonfly data formats {fmt}`", soft_wrap=True)
        raise typer.Exit(1)
    n = write_samples_jsonl(result.samples, out)
    q = write_quarantine(result.rejections, target)
    console.print(f"{n} samples -> {out}; {q} rows quarantined -> {target}")
    if result.rejections:
        console.print(_counts_table("quarantined by reason", reasons(result.rejections)))


@app.command("formats")
def formats_cmd(
    fmt: Annotated[str | None, typer.Argument(help="a format: show its options and how it decides the split")] = None,
) -> None:
    """List the formats `convert` reads, or one format's options (defaults, meanings) and split rule."""
    if fmt is None:
        table = Table(title="formats (options of one: dragonfly data formats FORMAT)")
        table.add_column("format", no_wrap=True)
        table.add_column("reads")
        for name in sorted(FORMATS):
            table.add_row(name, escape(summary(name)))
        console.print(table)
        return
    options = describe(fmt)  # an unknown format is a one-line error naming the close ones
    console.print(f"[bold]{fmt}[/]: {escape(summary(fmt))}", soft_wrap=True)
    table = Table(title=f"--option KEY=VALUE for {fmt}")
    table.add_column("key", no_wrap=True)
    table.add_column("default")
    table.add_column("meaning")
    for opt in options:
        table.add_row(opt.name, "-" if opt.default is None else escape(repr(opt.default)), escape(opt.help))
    console.print(table)
    console.print(f"[bold]split[/]: {escape(split_rule(fmt))}", soft_wrap=True)


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
    drop: DropOpt = None,
) -> None:
    """Build a named mixture into an Arrow dataset with stats and quarantine."""
    cfg = load_data_config(params or PARAMS_FILE, drop=drop)
    mix = cfg.mixture(mixture)
    if seed is not None:
        mix = type(mix)(**{**mix.__dict__, "seed": seed})
    data_root = root or Path(cfg.root)
    out_dir = out or Path(cfg.out_dir) / mixture
    try:
        result = build_mixture(mix, data_root, out_dir, progress=console.is_terminal)
    except (RejectedFractionError, SplitOverlapError) as exc:
        console.print(f"[red]build failed: {exc}")
        console.print(f"the failed build's quarantine and stats are in {out_dir}; {exc.hint}")
        raise typer.Exit(1) from None
    console.print(stats_table(result.stats))
    if line := cap_line(result.stats):
        console.print(line)
    console.print(f"dataset -> {result.dataset_dir}; stats -> {result.stats_path}")


@app.command("plan")
def plan_cmd(
    profile: Annotated[str, typer.Option(help="profile whose stages' mixtures to check")] = "paper",
    params: ParamsOpt = None,
    root: RootOpt = None,
    drop: DropOpt = None,
) -> None:
    """For every mixture PROFILE's stages train on: the source files present under the data
    root, the missing ones (what the converter reads, where the dataset is published, the
    paper's count), and the command that builds it. Downloads nothing. Exit 1 when a source
    is missing, one error line each, unless it is dropped (--drop, or data.drop in params)."""
    from dragonfly.config import load_profile
    from dragonfly.data.plan import errors, plan, render
    from dragonfly.train.config import load_stage, stage_names

    params_file = params or PARAMS_FILE
    cfg = load_data_config(params_file, drop=drop)
    prof = load_profile(profile, params_file)
    stages = {name: load_stage(prof, name).data.mixture for name in stage_names(prof)}
    data_root = root or Path(cfg.root)
    plans = plan(stages, cfg, data_root)
    for line in render(plans, str(data_root), drop or []):
        console.print(escape(line), highlight=False)
    missing = errors(plans, str(data_root))
    for line in missing:
        print(f"error: {line}", file=sys.stderr)
    if missing:
        print(
            "hint: fetch them (docs/paper-data.md has the layout), or build without one: --drop MIXTURE.SOURCE here "
            "and in `data build`, and --set 'data.drop=[MIXTURE.SOURCE]' for `train` (or data.drop in params.yaml)",
            file=sys.stderr,
        )
        raise typer.Exit(1)


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


@app.command("example-llava")
def example_llava_cmd(
    out: Annotated[Path, typer.Argument(help="folder to write train.json, test.json and images/ into")],
    images: Annotated[int, typer.Option(min=2, help="images; each gets four questions")] = 300,
    seed: int = 0,
) -> None:
    """Write a small VQA dataset in the LLaVA layout (shapes and colours; 20 % of the images
    held out as test.json), to try `Train on your own data` without data of your own."""
    from dragonfly.data.llava_example import write_example

    with console.status(f"drawing {images} images"):
        counts = write_example(out, images, seed=seed)
    console.print(f"{counts['train']} training and {counts['test']} test questions -> {out}/{{train,test}}.json")


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
