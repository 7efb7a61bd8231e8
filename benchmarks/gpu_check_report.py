"""The GPU check's results as markdown tables (benchmarks/gpu_check.py writes the JSON)."""

from __future__ import annotations

from gpu_check_correct import GRAD_TOL, LOSS_TOL, TOLERANCE_WHY

GB = 1e9


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def _ratio(measured, predicted) -> str:
    return f"{measured / predicted:.2f}" if measured and predicted else "—"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def agreement_rows(model: str, result: dict) -> list[list]:
    rows = [["loss, bf16 vs fp32 (relative)", model, _num(result["loss_rel"]), f"≤ {LOSS_TOL:g}"]]
    for part, grads in result["grads"].items():
        rows.append([f"gradient of {part}, bf16 vs fp32 (relative L2)", model, _num(grads["rel"]), f"≤ {GRAD_TOL:g}"])
        rows.append([f"gradient of {part}, cosine", model, f"{grads['cos']:.6f}", ""])
    attention = f"{result['attention']['vision']} / {result['attention']['llm']}"
    rows.append(
        ["attention (vision / LLM)", model, attention + (", fused kernels only" if result["fused_only"] else ""), ""]
    )
    rows.append(["same tiles kept on the batch", model, _num(result["same_tiles"]), ""])
    rows.append(["within tolerance", model, _num(result["within_tolerance"]), ""])
    return rows


def zoom_rows(model: str, zoom: dict) -> list[list]:
    if "skipped" in zoom:
        return [[model, zoom["skipped"], "", "", "", "", ""]]
    return [
        [
            model,
            f"{zoom['images']} / {zoom['regions']}",
            f"{zoom['flips_fp32_scoring']} ({zoom['flip_rate']:.1%})",
            f"{zoom['flips_bf16_scoring']} ({zoom['flip_rate_bf16_scoring']:.1%})",
            zoom["near_ties"],
            f"{zoom['near_tie_flips']} ({zoom['near_tie_flip_rate']:.0%})",
            zoom["verdict"],
        ]
    ]


def trainer_lines(result: dict) -> list[str]:
    rows = [
        ["steps through `dragonfly train`", f"{result['steps']} ({result['precision']}, {result['engine']} engine)"],
        [
            "checkpoint resumed from",
            f"{result['checkpoint']} (CUDA RNG in it: {_num(result['cuda_rng_in_checkpoint'])})",
        ],
        ["resume: largest loss difference", _num(result["loss_max_diff"])],
        ["resume: largest weight difference", _num(result["weights_max_diff"])],
        ["resume bit-exact", _num(result["bit_exact"])],
        ["verdict", result["verdict"]],
    ]
    if "repeat_run" in result:
        rows.append(["a second uninterrupted run: weight difference", _num(result["repeat_run"]["weights_max_diff"])])
    return table(["quantity", "value"], rows)


def step_lines(step: dict) -> list[str]:
    ms, dry = step["ms"], step["dry_run"]
    memory, predicted_memory = step["memory"] or {}, dry["memory"]
    rows = [
        ["micro-batch (samples)", step["micro_batch"], step["micro_batch"], ""],
        ["positions per sample", step["positions_per_sample"], step["positions_per_sample"], ""],
        ["step FLOPs (dry run's count)", "", _num(dry["flops"]), ""],
        ["step time (ms)", _num(ms["wall"]), _num(dry["step_s"] * 1e3), _ratio(ms["wall"], dry["step_s"] * 1e3)],
        [
            "tokens/s",
            _num(step["tokens_per_s"]),
            _num(dry["tokens_per_s"]),
            _ratio(step["tokens_per_s"], dry["tokens_per_s"]),
        ],
        ["data wait (ms, mean / max)", f"{ms['data_wait']:.1f} / {ms['data_wait_max']:.1f}", "", ""],
    ]
    for key, label in (
        ("h2d", "host → GPU copy (ms)"),
        ("vision_forward", "vision forward (ms)"),
        ("selection", "selection (ms)"),
        ("llm_forward", "LLM forward + loss (ms)"),
        ("llm_backward", "LLM backward (ms)"),
        ("vision_backward", "vision backward (ms)"),
        ("optimiser", "optimiser (ms)"),
    ):
        rows.append([label, _num(ms[key]), "", ""])
    for key, label in (("mfu", "MFU, whole step"), ("mfu_llm", "MFU, LLM forward + backward")):
        value = step[key]
        rows.append(
            [
                f"{label} (of 989 / 790 TFLOP/s)",
                f"{value['datasheet']:.1%} / {value['measured_peak']:.1%}",
                f"{dry['assumed_mfu']:.0%} (assumed)",
                "",
            ]
        )
    rows.append(
        [
            "peak memory (GB)",
            _num(memory.get("peak", 0) / GB or None),
            _num(dry["memory_total"] / GB),
            _ratio(memory.get("peak"), dry["memory_total"]),
        ]
    )
    for part in ("weights", "gradients", "optimizer", "activations"):
        got = memory.get(part)
        rows.append(
            [
                f"  {part} (GB)",
                _num(got / GB if got is not None else None),
                _num(predicted_memory[part] / GB),
                _ratio(got, predicted_memory[part]),
            ]
        )
    return table(["quantity", "measured", "dry run", "measured / dry run"], rows)


def render(results: dict) -> str:
    meta = results["meta"]
    lines = [f"# GPU check, {meta['date']}", "", f"Machine: {meta['machine']}. Mode: {meta['mode']}."]
    if meta["mode"] == "smoke":
        lines += [
            "",
            "Smoke run: shapes cut down, no timing claims; it keeps the script from rotting between GPU runs.",
        ]
    sections, errors = results["sections"], results["errors"]
    agreements = [(n, sections[n]["agreement"]) for n in ("tiny", "paper") if n in sections]
    if agreements:
        rows = [row for name, result in agreements for row in agreement_rows(name, result)]
        lines += ["", "## bf16 against fp32", "", f"Tolerance: {TOLERANCE_WHY}.", ""]
        lines += table(["check", "model", "measured", "tolerance"], rows)
        zooms = [row for n in ("tiny", "paper") if n in sections for row in zoom_rows(n, sections[n]["zoom"])]
        lines += ["", "## Zoom selection on real images, bf16 against fp32", ""]
        lines += table(
            [
                "model",
                "images / region decisions",
                "flips (fp32 scoring)",
                "flips (bf16 scoring)",
                "near ties",
                "flips among near ties",
                "verdict",
            ],
            zooms,
        )
    if "trainer" in sections:
        lines += ["", "## Trainer: steps, checkpoint, resume", ""] + trainer_lines(sections["trainer"])
    if "step" in sections:
        step = sections["step"]
        lines += ["", f"## Paper-shaped general2 step ({step['describe']})", ""] + step_lines(step)
    for name, error in errors.items():
        lines += ["", f"## {name}: failed", "", "```", error.strip()[-1500:], "```"]
    return "\n".join(lines) + "\n"
