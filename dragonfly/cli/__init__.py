"""The ``dragonfly`` command. Each subcommand is a thin wrapper over a library function."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from dragonfly import switches
from dragonfly.errors import DragonflyError

app = typer.Typer(
    help="Dragonfly: multi-resolution zoom-in vision-language model. "
    "Add --debug to any command (or set DRAGONFLY_DEBUG=1) for full tracebacks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
ParamsOption = typer.Option(Path("params.yaml"), "--params", help="Params file holding the profiles.")
# Read with dragonfly.switches.tracking, as the flow reads its `mlflow` parameter.
MlflowOption = typer.Option(
    None,
    "--mlflow/--no-mlflow",
    show_default=False,
    help=f"Log to MLflow; the default comes from {switches.TRACKING} (on when unset; README: Configuration).",
)
SetOption = typer.Option(
    [],
    "--set",
    help="Override KEY=VALUE of the profile (stages.general2.lr=1e-4, model.layout.select_k=2) "
    "or of the data section (data.root=/mnt/data); README, Configuration.",
)


def main(argv: list[str] | None = None) -> None:
    """The console entry point: an expected error prints as one line (plus a hint) and
    exits 1; ``--debug`` or ``DRAGONFLY_DEBUG=1`` shows its traceback. Anything else is a
    bug and keeps its traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = switches.debug(True if "--debug" in args else None)
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="dragonfly")
    except DragonflyError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 1))  # 143 after a SIGTERM (train), as schedulers expect


def _mount(module: str, name: str, help_text: str) -> None:
    """Attach a sub-application owned by another module."""
    app.add_typer(importlib.import_module(module).app, name=name, help=help_text)


@app.command()
def init(
    out: Path = typer.Argument(..., help="Directory to write the model and processor to."),
    profile: str = typer.Option("tiny", help="Profile name in params.yaml."),
    params: Path = ParamsOption,
    override: list[str] = SetOption,
):
    """Build a model for PROFILE (random tiny init, or backbones) and save it to OUT."""
    from dragonfly.pipeline import init_model

    cfg, count = init_model(out, profile, params, override)
    console.print(
        f"[green]wrote[/] {out}: {count:,} parameters, "
        f"{cfg.num_encoded_tiles} tiles encoded, {cfg.num_kept_tiles} kept, "
        f"{cfg.image_seq_length} positions per image"
    )


@app.command()
def predict(
    model: str = typer.Option(..., help="Saved Dragonfly directory, or models:/NAME@ALIAS or models:/NAME/VERSION."),
    image: Path = typer.Option(..., help="Image file (JPEG/PNG/TIFF/DICOM)."),
    question: str = typer.Option(..., help="Question about the image."),
    max_new_tokens: int = typer.Option(32, help="Answer length limit."),
    viz: Path | None = typer.Option(
        None, help="Write a PNG: the grids, the kept high tiles ranked, every tile's score."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON record instead of the bare answer."),
):
    """Answer QUESTION about IMAGE with MODEL."""
    from dragonfly.config import ConfigError
    from dragonfly.inference import answer, check_question, load
    from dragonfly.model.images import load_image
    from dragonfly.registry import resolve_model

    check_question(question, max_new_tokens)  # before a model is loaded
    if viz is not None and viz.is_dir():
        raise ConfigError(f"--viz {viz} is a folder; name the PNG file to write, e.g. {viz / 'zoom.png'}")
    net, processor = load(resolve_model(model))
    picture = load_image(image)
    result = answer(net, processor, [picture], [question], max_new_tokens)[0]
    if viz is not None:
        from dragonfly.viz import save_zoom

        viz.parent.mkdir(parents=True, exist_ok=True)
        save_zoom(net, processor, picture, viz, title=f"{question!r} → {result.text!r}")
    if as_json:
        print(
            json.dumps(
                {
                    "question": question,
                    "answer": result.text,
                    "selected_tiles": result.selected_tiles,
                    "medium_grid": result.medium_grid,
                    "high_grid": result.high_grid,
                }
            )
        )
    else:
        print(result.text)


@app.command()
def demo(
    model: str = typer.Option(..., help="Saved Dragonfly directory, or models:/NAME@ALIAS or models:/NAME/VERSION."),
    port: int = typer.Option(8501, min=1, max=65535, help="Port of the page on 127.0.0.1."),
):
    """Serve a page on 127.0.0.1:PORT: upload an image, ask MODEL about it, see the answer and
    the tiles the zoom kept under each selection rule (Streamlit; README, "Demo page")."""
    import importlib.util

    from streamlit.web import cli as streamlit_cli

    from dragonfly.inference import check_checkpoint
    from dragonfly.registry import resolve_model

    # Resolved and checked here, so a bad --model is one line now, not an error on the page.
    folder = check_checkpoint(resolve_model(model)).resolve()
    page = importlib.util.find_spec("dragonfly.demo").origin
    print(f"Dragonfly demo of {model} on http://127.0.0.1:{port} (Ctrl-C stops it)", flush=True)
    # `streamlit run`, in this process: the page finds torch and the model code already
    # imported. The page is for this machine only; it needs no file watcher nor developer
    # menu (nothing is edited), and Streamlit sends no usage statistics.
    # fmt: off
    streamlit_cli.main([
        "run", page,
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
        "--", "--model-dir", str(folder),
    ], prog_name="streamlit")
    # fmt: on


@app.command("convert-released")
def convert_released(
    src: Path = typer.Argument(..., help="A released Dragonfly checkpoint folder (config.json, weights, tokenizer)."),
    dst: Path = typer.Argument(..., help="Folder to write the converted model and processor to."),
    vision: Path | None = typer.Option(
        None, help="Local CLIP folder, when the checkpoint's image_encoder is a hub id (it names the tower)."
    ),
    force: bool = typer.Option(False, help="Replace DST if it is not empty."),
):
    """Convert a released checkpoint (togethercomputer/Llama-3-8B-Dragonfly-v1, -Med-v1) into
    this project's layout, in the released-compatible mode (docs/released.md)."""
    from dragonfly.released import convert

    done = convert(src, dst, vision, force)
    console.print(
        f"[green]wrote[/] {done.out}: {done.parameters:,} parameters ({done.dtype}; vision tower from "
        f"{done.vision_from}), released-compatible mode; try `dragonfly predict --model {done.out} ...`"
    )


@app.command()
def prepare(
    params: Path = ParamsOption,
    mixture: list[str] = typer.Option([], help="Mixture(s) to build (default: all in params)."),
):
    """Generate the synthetic benchmarks and build the training mixtures."""
    from dragonfly.pipeline import prepare_data

    for name, result in prepare_data(params, mixture or None).items():
        console.print(f"[green]built[/] {name}: {result}")


@app.command("pipeline-files")
def pipeline_files(
    params: Path = ParamsOption,
    check: bool = typer.Option(False, "--check", help="Only say which files are stale (exit 1 if any)."),
):
    """Rewrite dvc.yaml, ablation/dvc.yaml and sky/pipeline.yaml from the pipeline's declaration
    (dragonfly/pipeline/declaration.py) and params.yaml; run it after editing either."""
    from dragonfly.pipeline import generate

    if check:
        if stale := generate.stale(".", params):
            raise DragonflyError(f"stale: {', '.join(stale)}; run `dragonfly pipeline-files` to rewrite them")
        console.print(f"up to date: {', '.join(generate.GENERATED)}")
        return
    changed = generate.write(".", params)
    console.print(f"[green]rewrote[/] {', '.join(changed)}" if changed else "nothing to rewrite")


@app.command("pretrain-vision")
def pretrain_vision(
    profile: str = typer.Option("tiny", help="Profile name in params.yaml (a tiny profile)."),
    params: Path = ParamsOption,
    force: bool = typer.Option(False, help="Retrain even if the same tower is already saved."),
    override: list[str] = typer.Option([], "--set", help="Dotted override, e.g. vision_pretrain.steps=500."),
    mlflow: bool | None = MlflowOption,
):
    """Pretrain the tiny vision tower (CLIP's stand-in) and save it to model.tiny.vision_from."""
    from rich.table import Table

    from dragonfly.pipeline import pretrain_vision as run
    from dragonfly.tracking import tracking_for

    out, metrics = run(profile, params, override, force, tracking=tracking_for(switches.tracking(mlflow)))
    table = Table("held-out patches", "value", title=f"vision tower → {out}")
    for key in (
        "shape_accuracy",
        "tile_shape_accuracy",
        "colour_accuracy",
        "background_accuracy",
        "readable_patches",
        "final_loss",
    ):
        table.add_row(key, f"{metrics[key]:.3f}" if isinstance(metrics[key], float) else str(metrics[key]))
    console.print(table)


@app.command("zoom-recall")
def zoom_recall_command(
    model: str = typer.Option(..., help="Saved Dragonfly directory, or models:/NAME@ALIAS or models:/NAME/VERSION."),
    variant: str = typer.Option("general", help="Synthetic variant: general or biomedical."),
    glyph_area: float = typer.Option(576.0, help="Glyph area in px², as in data.synth."),
    images: int = typer.Option(64, help="Fresh synthetic scenes to measure on."),
    seed: int = typer.Option(0, help="Scene seed."),
):
    """How often the zoom-in selection keeps the high tiles that hold the detail, vs chance."""
    from dragonfly.data.synth import SynthConfig
    from dragonfly.eval.zoom_recall import zoom_recall
    from dragonfly.inference import load
    from dragonfly.registry import resolve_model

    net, processor = load(resolve_model(model))
    result = zoom_recall(net.eval(), processor, SynthConfig(variant=variant, seed=seed, glyph_area=glyph_area), images)
    console.print(
        f"{model}: kept {result.kept_glyph_tiles} of {result.glyph_tiles} glyph tiles "
        f"(recall {result.recall:.3f}, chance {result.chance:.3f}, "
        f"{'random selection' if net.config.strategy == 'random' else 'order ' + net.config.select_order}, "
        f"{images} images)"
    )
    console.print_json(json.dumps(result.as_dict()))


@app.command()
def train(
    stage: str = typer.Option(..., help="Stage name (general1, general2, med1, med2, med3)."),
    profile: str = typer.Option("tiny", help="Profile name in params.yaml."),
    params: Path = ParamsOption,
    resume: bool = typer.Option(False, help="Continue from the newest valid checkpoint of this stage."),
    resume_auto: bool = typer.Option(
        False,
        "--resume-auto",
        help="Continue only from checkpoints of this very configuration and inputs; "
        "move others to checkpoints.superseded/ and start afresh (what the flow and dvc.yaml do).",
    ),
    force: bool = typer.Option(False, help="Train even when the output records the same fingerprint."),
    out: Path | None = typer.Option(None, help="Output directory (default runs/<profile>/<stage>)."),
    progress: bool = typer.Option(
        True,
        "--progress/--no-progress",
        help="Show a progress bar on a terminal (never when the output is redirected); "
        "loss lines are printed either way.",
    ),
    override: list[str] = SetOption,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Train nothing, load no weights: parameters, positions per sample, padding, FLOPs, "
        "memory per GPU and time of the stage on --gpus H100s.",
    ),
    gpus: int = typer.Option(8, min=1, help="GPUs the dry run plans for (nodes × GPUs per node)."),
    mfu: float = typer.Option(0.4, min=0.01, max=1.0, help="Model FLOPs utilisation the dry run assumes."),
    mlflow: bool | None = MlflowOption,
    overrides: list[str] = typer.Argument(
        None, help="Overrides as --set takes them; a stage key alone is this stage's, e.g. lr=1e-4 max_steps=5."
    ),
):
    """Train one stage; writes checkpoints and a save_pretrained model to <out>/final."""
    overrides = [*override, *(overrides or [])]  # one list: --set and the trailing arguments mean the same
    if dry_run:
        from dragonfly.pipeline.dryrun import dry_run as plan
        from dragonfly.pipeline.dryrun import render

        console.print(render(plan(stage, profile, params, overrides, gpus, mfu)))
        return
    from dragonfly.pipeline import train as run
    from dragonfly.tracking import tracking_for

    final = run(
        stage,
        profile,
        params,
        overrides,
        "auto" if resume_auto else resume,
        out,
        tracking=tracking_for(switches.tracking(mlflow)),
        force=force,
        progress=progress,
    )
    if os.environ.get("RANK", "0") == "0":
        console.print(f"[green]stage {stage} done[/]: {final}")


@app.command()
def ablate(
    variant: list[str] = typer.Option([], help="Variant(s) under `ablations:` in params (default: all)."),
    profile: str = typer.Option("tiny", help="Profile name in params.yaml."),
    params: Path = ParamsOption,
    out: Path = typer.Option(Path("ablation"), help="Output directory (one sub-dir per variant)."),
    stage: list[str] = typer.Option([], help="Stages chained from init (default: general1 general2)."),
    benchmark: list[str] = typer.Option(
        [], help="Benchmark(s) to evaluate (default: synth_general); vqa, mcq, caption score your data."
    ),
    data: Path | None = typer.Option(
        None,
        help="Data every benchmark scores (a built mixture or a samples JSONL, as `eval --data`). "
        "Default: vqa/mcq/caption score the last stage's mixture (its test split).",
    ),
    split: str | None = typer.Option(None, help="Evaluate this split instead of each benchmark's (test)."),
    source: list[str] = typer.Option([], help="Evaluate samples of these source names only."),
    limit: int | None = typer.Option(None, min=1, help="Evaluate the first N samples only."),
    seed: int = typer.Option(0, help="Model init and training seed, the same for every variant."),
    batch_size: int = typer.Option(16, min=1, help="Evaluation batch size."),
    mlflow: bool | None = MlflowOption,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show evaluation progress bars."),
    overrides: list[str] = typer.Argument(
        None,
        help="Overrides as `train` takes them: a stage key alone is every stage's (max_steps=20), "
        "stages.<stage>.key=value one stage's (stages.general2.max_steps=300).",
    ),
):
    """Train and evaluate the paper's ablation variants; write ablation.md/.csv/.json (Tables 1, 5, 6)."""
    from dragonfly.pipeline import EvalOptions
    from dragonfly.pipeline import ablate as run_ablation

    evaluation = EvalOptions(
        data=data,
        split=split,
        sources=tuple(source) or None,
        limit=limit,
        batch_size=batch_size,
        progress=progress and sys.stderr.isatty(),  # tqdm bars would flood a redirected log
    )
    result = run_ablation(
        variant or None,
        profile,
        params,
        out,
        overrides or [],
        tuple(stage) or ("general1", "general2"),
        tuple(benchmark) or ("synth_general",),
        evaluation,
        seed,
        mlflow=switches.tracking(mlflow),
        progress=progress,
    )
    console.print(_ablation_table(result))
    console.print(f"[green]ablation done[/]: {', '.join(result.files[k].name for k in result.files)} in {out}")


def _ablation_table(result):
    """One row per variant, the benchmarks' headline numbers as columns (ablation.md has
    the paper-shaped tables); the data they were scored on is printed above it."""
    from rich.table import Table

    from dragonfly.eval.ablation_report import summary_rows

    for bench, data in result.scored_on.items():
        console.print(f"{bench} scored on {data}", soft_wrap=True)
    table = Table(title="ablation", title_justify="left")
    columns, rows = summary_rows(result.variants, list(result.scored_on))
    for i, column in enumerate(columns):
        # Names and metric keys stay whole on a narrow terminal: headers wrap between words only.
        widest = max(len(word) for word in column.split())
        table.add_column(column, justify="right" if i else "left", no_wrap=not i, min_width=widest)
    for row in rows:
        table.add_row(*row)
    return table


@app.command("launch-cmd")
def launch_cmd(
    stage: str = typer.Option(..., help="Stage name."),
    profile: str = typer.Option("paper", help="Profile name."),
    nodes: int = typer.Option(1, help="Number of nodes."),
    gpus: int = typer.Option(8, help="GPUs per node."),
):
    """Print the torchrun command that runs STAGE under DeepSpeed ZeRO-1 on NODES × GPUS."""
    from dragonfly.train.deepspeed import launch_command

    print(launch_command(stage, profile, nodes, gpus))


_mount("dragonfly.cli.data", "data", "Convert, validate, build and synthesise datasets.")
_mount("dragonfly.cli.eval", "eval", "Evaluate a model on the paper's benchmarks (or the synthetic one).")
