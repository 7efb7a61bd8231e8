"""The GPU check: is the paper profile's step correct and fast on one GPU? One command,
`benchmarks/gpu_check.sh OUT [--smoke]`, writes OUT/gpu_check.json and OUT/gpu_check.md.

1. Correct: the tiny and a paper-shaped model (CLIP ViT-B/32, Llama-3-8B width with 8
   layers, random weights) forward + backward in bf16 with fused attention against fp32 on
   the same weights; the zoom selection's tiles on real photographs under both; a few
   `dragonfly train` steps, a checkpoint, and a bit-exact resume.
2. Fast: one paper-shaped general2 step (every part trains, 867 image positions plus the
   dry run's assumed text per sample, the largest micro-batch that fits), split by part,
   with its MFU, memory and data wait beside the dry run's prediction.
3. Smoke (`--smoke`, or no GPU): the same code on cut-down shapes, no timing claims; the
   test suite runs it (tests/test_gpu_check.py).

Each section's result is written as soon as it ends, so a run stopped by its time limit
still leaves what it measured. benchmarks/README.md ("GPU check") says how to run it.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import inspect
import json
import os
import platform
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch
from gpu_check_correct import agreement, twins, zoom_agreement
from gpu_check_models import (
    FULL,
    PARAMS,
    SMOKE,
    image_processor,
    paper_loader,
    paper_shaped,
    photos,
    save_photos,
    tiny_batch,
    tiny_model,
)
from gpu_check_report import render
from gpu_check_step import (
    MasterAdamW,
    fitting_micro,
    matmul_tflops,
    measured_memory,
    mfu,
    predicted,
    summarise,
    timed_steps,
)

from dragonfly.train.dryrun import human

BUDGET_S = 450.0  # the check ends within 8 minutes on one H200, start-up and wheels included
MICRO_BATCHES = (16, 8, 4, 2, 1)  # tried largest first, among those the dry run says fit
SMOKE_MICRO = (2,)
PACKAGES = ("torch", "transformers", "tokenizers", "huggingface-hub", "accelerate", "safetensors", "datasets")
PACKAGES += ("pandera", "pandas", "numpy", "pillow", "scikit-image", "filelock", "wrapt", "grimp", "pyarrow")
PACKAGES += ("fsspec", "typing-extensions", "regex", "hf-xet", "click", "anyio")


def environment(device: torch.device, smoke: bool) -> dict:
    """What ran where: the machine, the mode, and each package's version and origin."""
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    versions = {}
    for package in PACKAGES:
        try:
            dist = metadata.distribution(package)
            versions[package] = f"{dist.version} ({dist.locate_file('')})"
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{name}, {os.cpu_count()} CPU cores" + (f", CUDA {torch.version.cuda}" if cuda else ""),
        "device": str(device),
        "mode": "smoke" if smoke else "full",
        "python": platform.python_version(),
        "packages": versions,
        "gpu_memory": torch.cuda.get_device_properties(device).total_memory if cuda else None,
    }


@dataclass
class Check:
    """What every section gets: where it runs, how big, its scratch folder, and what an
    earlier section left for a later one (the paper-shaped model for the step)."""

    device: torch.device
    smoke: bool
    work: Path
    shared: dict = field(default_factory=dict)


def tiny_section(check: Check) -> dict:
    """The tiny profile's model: bf16 against fp32, and its zoom on real photographs."""
    model, processor = tiny_model(check.device)
    images = photos(4 if check.smoke else None)
    batch = _on(check.device, tiny_batch(processor, list(images.values())[:4]))
    bf16, fp32 = twins(model)
    return {
        "agreement": agreement(bf16, fp32, batch, check.device),
        "zoom": zoom_agreement(bf16, fp32, processor.image_processor, images, check.device),
    }


def trainer_section(check: Check) -> dict:
    from gpu_check_train import trainer_check

    return trainer_check(check.work / "trainer", check.device.type == "cuda")


def paper_section(check: Check) -> dict:
    """The paper-shaped model: bf16 against fp32 and its zoom; the bf16 model stays for the step."""
    from dragonfly.pipeline.dryrun import ASSUMED

    device = check.device
    model = paper_shaped(SMOKE if check.smoke else FULL, device, check.work / "configs")
    images = photos(4 if check.smoke else None)
    paths = save_photos(images, check.work / "photos")
    text = ASSUMED[_general2().data.mixture][1]  # the dry run's text positions per sample
    batch = _on(device, next(iter(paper_loader(paths, model.config, text, 2, 0, False))))
    bf16, fp32 = twins(model)
    out = {
        "agreement": agreement(bf16, fp32, batch, device),
        "zoom": zoom_agreement(bf16, fp32, image_processor(bf16.config), images, device),
    }
    del fp32, batch
    _free(bf16, device)
    check.shared.update(model=bf16, paths=paths, text=text)
    return out


def step_section(check: Check) -> dict:
    if "model" not in check.shared:
        raise RuntimeError("no paper-shaped model: its section failed (see there)")
    shared = check.shared
    return step_check(shared["model"], shared["paths"], shared["text"], check.device, check.smoke)


def step_check(model, paths: list[Path], text: int, device: torch.device, smoke: bool) -> dict:
    """The general2 step at the largest micro-batch that fits, timed, beside the dry run."""
    from dragonfly.pipeline.dryrun import dry_run

    stage = _general2()
    parts, length = set(stage.train), text + model.config.image_seq_length - 1
    matmul = matmul_tflops(device)
    optimiser = MasterAdamW([p for p in model.parameters() if p.requires_grad], stage.lr, stage.weight_decay)
    tried = []
    for micro in fitting_micro(model, device, length, parts, SMOKE_MICRO if smoke else MICRO_BATCHES):
        tried.append(micro)
        workers = min(stage.num_workers, 1) if smoke else stage.num_workers  # the smoke run has 2 cores
        loader = paper_loader(paths, model.config, text, micro, workers, device.type == "cuda")
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            # Attention is not restricted here: the agreement check ran these shapes with the
            # fused kernels only, so SDPA's dispatcher, which prefers them, picks one.
            records = timed_steps(model, loader, optimiser, device, 1 if smoke else 2, 2 if smoke else 5)
            break
        except torch.OutOfMemoryError:
            pass
        del loader  # out of memory: free it outside the handler, whose traceback holds the step's tensors
        _free(model, device)
    else:
        raise RuntimeError(f"no micro-batch of {tried} fits this GPU")
    ms = summarise(records)
    dry = predicted(model, micro, length, inspect.signature(dry_run).parameters["mfu"].default, parts)
    return {
        "describe": _describe(model, micro, length),
        "micro_batch": micro,
        "tried_micro_batches": tried,
        "positions_per_sample": length,
        "loader_workers": workers,
        "ms": ms,
        "tokens_per_s": ms["tokens"] / (ms["wall"] / 1e3),
        "mfu": mfu(dry["flops"], ms["wall"], matmul),
        "mfu_llm": mfu(dry["llm_flops"], ms["llm_forward"] + ms["llm_backward"], matmul),
        "data_wait_share": ms["data_wait"] / ms["wall"],
        "matmul_tflops": matmul,
        "memory": measured_memory(model, optimiser, device),
        "dry_run": dry,
        "losses": [r["loss"] for r in records],
    }


def _general2():
    from dragonfly.config import load_profile
    from dragonfly.train.config import load_stage

    return load_stage(load_profile("paper", PARAMS), "general2")


def _describe(model, micro: int, length: int) -> str:
    v, t = model.config.vision_config, model.config.text_config
    count = human(sum(p.numel() for p in model.parameters()))
    return (
        f"{count} parameters: vision {v.hidden_size} wide × {v.num_hidden_layers}, LLM {t.hidden_size} wide × "
        f"{t.num_hidden_layers} layers, vocabulary {t.vocab_size:,}; micro-batch {micro} × {length} positions"
    )


def _on(device: torch.device, batch: dict) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _free(model, device: torch.device) -> None:
    model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# (name, section, the seconds of budget it needs to start): the results are written after each.
SECTIONS = (
    ("tiny", tiny_section, 20),
    ("trainer", trainer_section, 60),
    ("paper", paper_section, 60),
    ("step", step_section, 60),
)


def run(out: Path, device: torch.device, smoke: bool) -> dict:
    """Every section in turn, each within what is left of the budget; results after each."""
    began = time.perf_counter()
    results = {"meta": environment(device, smoke), "sections": {}, "errors": {}, "seconds": {}}
    check = Check(device, smoke, Path(tempfile.mkdtemp(prefix="gpu-check-")))
    for name, section, needs in SECTIONS:
        if BUDGET_S - (time.perf_counter() - began) < needs:
            results["errors"][name] = f"skipped: under {needs} s of the {BUDGET_S:.0f} s budget left"
            continue
        start = time.perf_counter()
        try:
            results["sections"][name] = section(check)
        except Exception:
            results["errors"][name] = traceback.format_exc()[-4000:]
        results["seconds"][name] = round(time.perf_counter() - start, 1)
        write(out, results)
    return results


def write(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "gpu_check.md").write_text(render(results))


def passed(results: dict) -> bool:
    sections = results["sections"]
    agree = all(sections[n]["agreement"]["within_tolerance"] for n in ("tiny", "paper") if n in sections)
    return not results["errors"] and agree and sections.get("trainer", {}).get("bit_exact", False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--smoke", action="store_true", help="cut-down shapes, no timing claims (any device)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    smoke = args.smoke or device.type != "cuda"
    if smoke and not args.smoke:
        print("no CUDA device: running the smoke check on the CPU")
    results = run(args.out, device, smoke)
    print(render(results))
    return 0 if passed(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
