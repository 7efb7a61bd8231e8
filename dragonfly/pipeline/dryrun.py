"""`dragonfly train --dry-run`: a stage's cost before anything is downloaded or trained.

The model is built on the meta device from the backbones' configs; the samples come from
the stage's built mixture (their real lengths after `<image>` expansion), or, when it is
not built, from the stated assumptions of `ASSUMED` (the paper's sample counts). Numbers:
`dragonfly.train.dryrun` (FLOPs checked against torch's counter by
`benchmarks/bench_step_flops.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from dragonfly.config import DEFAULT_PARAMS
from dragonfly.pipeline.steps import load_settings
from dragonfly.train import dryrun as D
from dragonfly.train.config import load_stage

# Used only when a stage's mixture is not built: (samples, text tokens per sample incl. the
# chat template). Sample counts are the paper's (Appendix tables); text lengths are ours,
# estimated from the releases' typical records (a short caption; multi-turn SFT and
# ShareGPT4V's long captions), and say so in the output.
ASSUMED: dict[str, tuple[int, int]] = {
    "llava_pretrain": (558_128, 60),
    "general_sft": (5_580_560, 300),
    "med_captions": (1_160_000, 120),
    "med_sft": (793_000, 300),
    "med_benchmarks": (60_000, 80),
}
CHARS_PER_TOKEN = 4.0  # Llama-3's tokenizer on English text, when the tokenizer is not at hand


@dataclass(frozen=True)
class DryRun:
    stage: str
    params: dict[str, int]
    trains: tuple[str, ...]
    image_positions: int
    lengths: list[tuple[int, int]]  # (positions, images) per sample
    source: str  # where the lengths come from
    max_length: int
    over_max: list[str]  # ids of samples longer than max_length
    padding: float
    flops_per_step: float
    steps: int
    memory: dict[str, float]
    memory_checkpointing: dict[str, float]
    gpus: int
    mfu: float
    hours: float


def _text_lengths(dataset_dir: Path, split: str, tokenizer) -> tuple[list[tuple[int, int, str]], str]:
    """(text tokens, images, id) per sample of a built split, by the tokenizer or chars/4."""
    from datasets import load_from_disk

    rows = load_from_disk(str(dataset_dir))[split]
    out = []
    for rec in rows:
        text = "".join(m["content"] for m in rec["messages"])
        n = len(tokenizer(text)["input_ids"]) if tokenizer is not None else math.ceil(len(text) / CHARS_PER_TOKEN)
        out.append((n + 8 * len(rec["messages"]), len(rec["images"]), rec["id"]))  # + the chat headers
    return (
        out,
        f"{dataset_dir} ({'tokenised' if tokenizer is not None else f'{CHARS_PER_TOKEN:g} characters per token'})",
    )


def _tokenizer(section):
    if section.source == "tiny":
        from dragonfly.model.tiny import build_tokenizer

        return build_tokenizer(section.tiny.vocab_size)
    if (Path(section.llm) / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(section.llm)
    return None


def dry_run(
    stage: str,
    profile: str = "tiny",
    params: str | Path = DEFAULT_PARAMS,
    overrides: list[str] | None = None,
    gpus: int = 8,
    mfu: float = 0.4,
) -> DryRun:
    settings = load_settings(params, profile, overrides, trained=(stage,))  # as `train` reads them
    cfg = load_stage(settings.profile, stage)
    model = D.meta_model(settings.profile.model)
    shapes = D.Shapes.of(model.config)
    image_positions = model.config.image_seq_length
    dataset = Path(settings.data.out_dir) / cfg.data.mixture / "dataset"
    if dataset.is_dir():
        rows, source = _text_lengths(dataset, cfg.data.split, _tokenizer(settings.profile.model))
    elif cfg.data.mixture in ASSUMED:
        count, text = ASSUMED[cfg.data.mixture]
        rows = [(text, 1, "")] * min(count, 4096)  # one image each; the count scales the steps
        source = f"assumed: {count:,} samples of {text} text tokens and one image (mixture not built)"
    else:
        from dragonfly.data.manifest import DatasetNotFoundError

        raise DatasetNotFoundError(f"stage {stage}: mixture {cfg.data.mixture!r} is not built and has no assumption")
    samples = ASSUMED[cfg.data.mixture][0] if not dataset.is_dir() else len(rows)
    lengths = [(text + images * (image_positions - 1), images) for text, images, _ in rows]
    over = [rid for (length, _), (_, _, rid) in zip(lengths, rows, strict=True) if length > cfg.data.max_length]
    clipped = [(min(length, cfg.data.max_length), images) for length, images in lengths]
    batches = D.length_batches(clipped, cfg.micro_batch, cfg.group_by_length)
    per_step_batches = max(1, cfg.global_batch // cfg.micro_batch)
    mean_micro = D.step_flops(shapes, set(cfg.train), batches) / len(batches)
    steps = max(1, int(samples // cfg.global_batch * cfg.epochs))
    if cfg.max_steps > 0:
        steps = min(steps, cfg.max_steps)
    flops = mean_micro * per_step_batches
    parts = D.parameters(model)
    longest = max(length for length, _ in clipped)
    memory = {
        on: D.memory_per_gpu(parts, set(cfg.train), gpus, shapes, cfg.micro_batch, longest, on) for on in (False, True)
    }
    return DryRun(
        stage=stage,
        params=parts,
        trains=tuple(cfg.train),
        image_positions=image_positions,
        lengths=lengths,
        source=source,
        max_length=cfg.data.max_length,
        over_max=over,
        padding=D.padding_share(batches),
        flops_per_step=flops,
        steps=steps,
        memory=memory[False],
        memory_checkpointing=memory[True],
        gpus=gpus,
        mfu=mfu,
        hours=D.stage_hours(flops, steps, gpus, mfu),
    )


def render(run: DryRun):
    """Rich tables of a dry run, for the console."""
    from rich.console import Group
    from rich.table import Table

    parts = Table(title=f"{run.stage}: parameters")
    for column in ("part", "parameters", "trains"):
        parts.add_column(column)
    for name, count in run.params.items():
        parts.add_row(name, D.human(count), "yes" if name in run.trains else "frozen")
    texts = sorted(length for length, _ in run.lengths)
    facts = Table(title=f"{run.stage}: one optimiser step on {run.gpus} × H100, ZeRO-1, bf16")
    facts.add_column("quantity")
    facts.add_column("value", justify="right")
    rows = [
        ("samples read", f"{len(run.lengths):,} from {run.source}"),
        ("image positions per image", f"{run.image_positions}"),
        ("positions per sample (median / max)", f"{texts[len(texts) // 2]} / {texts[-1]}"),
        (f"samples over max_length {run.max_length}", f"{len(run.over_max)} {run.over_max[:3]}"),
        ("padding share (length grouping)", f"{run.padding:.1%}"),
        ("FLOPs per optimiser step", D.human(run.flops_per_step, "FLOP")),
        ("optimiser steps", f"{run.steps:,}"),
    ]
    for label, memory in (("", run.memory), (" (gradient checkpointing)", run.memory_checkpointing)):
        shown = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in memory.items())
        rows.append((f"memory per GPU, GB{label}", f"{sum(memory.values()) / 1e9:.1f} ({shown})"))
    rows.append((f"time at {run.mfu:.0%} MFU", f"{run.hours:.1f} h"))
    for label, value in rows:
        facts.add_row(label, value)
    return Group(parts, facts)
