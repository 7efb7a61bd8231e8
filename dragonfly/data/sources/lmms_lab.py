"""The general benchmarks of Table 1 in the layout of their lmms-lab HF releases.

All are parquet shards named `<split>-0000N-of-0000M*.parquet` with images as
{bytes, path} structs (what lmms-eval reads):
- AI2D: question, options (list), answer (index as a string "0".."3"), image.
- ScienceQA-IMG: question, choices (list), answer (int index), hint, image (+ subject...).
- ChartQA: question, answer (string, often a number), type (human_test/augmented_test), image.
- MMMU: id ("validation_Art_1"), question with "<image N>" tags, options (a Python-literal
  list in a string), answer (letter, or text for open questions), question_type
  (multiple-choice/open), image_1..image_7.
- MM-Vet: question_id, question, answer (with <AND>/<OR>), capability, image.
- POPE: question_id, question, answer (yes/no), image_source, category, image.
- HallusionBench: category, subcategory, set_id, figure_id, question_id, question,
  gt_answer ("1" yes / "0" no), gt_answer_details, visual_input, image (None when the
  question is asked without a figure).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dragonfly.data.quarantine import Converted
from dragonfly.data.schema import qa_sample
from dragonfly.data.sources._common import (
    SHORT_SUFFIX,
    answer_text,
    letters,
    malformed,
    mcq_prompt,
    normalise_split,
    parquet_rows,
    split_from_filename,
    store_image_bytes,
    yes_no,
)

OPTIONS = {
    "source": "source name stored in every sample (default: the benchmark name)",
    "split": "override the split read from the shard names (HallusionBench's 'image' split needs split=test)",
}
SPLIT = "from each shard's name, <split>-0000N-of-0000M*.parquet, unless the `split` option overrides it"
# One line per format for `dragonfly data formats` (the module docstring covers all seven).
SUMMARIES = {
    "ai2d": "AI2D (lmms-lab/ai2d parquet): science diagrams, multiple choice.",
    "scienceqa": "ScienceQA-IMG (lmms-lab/ScienceQA parquet): multiple choice with a hint.",
    "chartqa": "ChartQA (lmms-lab/ChartQA parquet): short answers about charts.",
    "mmmu": "MMMU (lmms-lab/MMMU parquet): multiple choice and open questions, up to 7 images.",
    "mmvet": "MM-Vet (lmms-lab/MMVet parquet): open answers, graded by capability.",
    "pope": "POPE (lmms-lab/POPE parquet): yes/no object hallucination questions.",
    "hallusion_bench": "HallusionBench (lmms-lab/HallusionBench parquet): yes/no, some without a figure.",
}


@dataclass
class Parsed:
    """What a benchmark row means, before images are written and the Sample is assembled."""

    rid: str
    task: str
    question: str
    answer: str
    images: list[Any] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)


class RowError(ValueError):
    """A row that does not match the expected layout; message says what was expected."""


def _index_answer(raw: Any, options: list[str]) -> str:
    try:
        idx = int(str(raw).strip())
    except ValueError:
        raise RowError(f"answer as an option index, got {raw!r}") from None
    if not 0 <= idx < len(options):
        raise RowError(f"answer index within {len(options)} options, got {idx}")
    return letters(len(options))[idx]


def ai2d(rec: dict[str, Any], split: str, n: int) -> Parsed:
    options = [str(o) for o in rec["options"]]
    return Parsed(
        rid=f"ai2d:{split}:{n}",
        task="mcq",
        question=mcq_prompt(rec["question"], options),
        answer=_index_answer(rec["answer"], options),
        images=[rec["image"]],
        choices=options,
    )


def scienceqa(rec: dict[str, Any], split: str, n: int) -> Parsed:
    choices = [str(c) for c in rec["choices"]]
    meta = {k: str(rec[k]) for k in ("subject", "topic", "grade") if rec.get(k) is not None}
    return Parsed(
        rid=f"scienceqa:{split}:{n}",
        task="mcq",
        question=mcq_prompt(rec["question"], choices, str(rec.get("hint") or "")),
        answer=_index_answer(rec["answer"], choices),
        images=[rec["image"]] if rec.get("image") is not None else [],
        choices=choices,
        meta=meta,
    )


def chartqa(rec: dict[str, Any], split: str, n: int) -> Parsed:
    return Parsed(
        rid=f"chartqa:{split}:{n}",
        task="vqa_open",
        question=f"{str(rec['question']).strip()}\n{SHORT_SUFFIX}",
        answer=answer_text(rec["answer"]),
        images=[rec["image"]],
        meta={"type": str(rec.get("type") or "")},
    )


_MMMU_TAG = re.compile(r"<image (\d+)>")


def mmmu(rec: dict[str, Any], split: str, n: int) -> Parsed:
    question = str(rec["question"])
    is_mcq = rec["question_type"] == "multiple-choice"
    options: list[str] = []
    if is_mcq:
        try:
            options = [str(o) for o in ast.literal_eval(rec["options"])]
        except (ValueError, SyntaxError):
            raise RowError(f"options as a Python list literal, got {rec['options']!r}") from None
    text = question + "\n" + "\n".join(options)
    order: list[int] = []
    for m in _MMMU_TAG.finditer(text):
        if int(m.group(1)) not in order:
            order.append(int(m.group(1)))
    images = [rec.get(f"image_{k}") for k in order]
    if any(img is None for img in images):
        raise RowError(f"image_N columns for every <image N> tag, tags {order}")
    # One placeholder per picture goes in front; the tags stay as plain references.
    tagless = _MMMU_TAG.sub(lambda m: f"[image {m.group(1)}]", question)
    options = [_MMMU_TAG.sub(lambda m: f"[image {m.group(1)}]", o) for o in options]
    return Parsed(
        rid=f"mmmu:{rec['id']}",
        task="mcq" if is_mcq else "vqa_open",
        question=mcq_prompt(tagless, options) if is_mcq else f"{tagless.strip()}\n{SHORT_SUFFIX}",
        answer=answer_text(rec["answer"]),
        images=images,
        choices=options,
        meta={"subfield": str(rec.get("subfield") or ""), "question_type": rec["question_type"]},
    )


def mmvet(rec: dict[str, Any], split: str, n: int) -> Parsed:
    return Parsed(
        rid=f"mmvet:{rec['question_id']}",
        task="vqa_open",
        question=str(rec["question"]).strip(),
        answer=answer_text(rec["answer"]),
        images=[rec["image"]],
        meta={"capability": str(rec.get("capability") or "")},
    )


def pope(rec: dict[str, Any], split: str, n: int) -> Parsed:
    raw = answer_text(rec["answer"])
    answer = yes_no(raw)
    if answer is None:
        raise RowError(f"answer yes/no, got {raw!r}")
    return Parsed(
        rid=f"pope:{rec['question_id']}",
        task="vqa_closed",
        question=f"{str(rec['question']).strip()}\n{SHORT_SUFFIX}",
        answer=answer,
        images=[rec["image"]],
        meta={
            "category": str(rec.get("category") or ""),
            "image_source": str(rec.get("image_source") or ""),
        },
    )


def hallusion_bench(rec: dict[str, Any], split: str, n: int) -> Parsed:
    gt = str(rec["gt_answer"]).strip()
    if gt not in ("0", "1"):
        raise RowError(f'gt_answer "0" or "1", got {gt!r}')
    key = "_".join(str(rec[k]) for k in ("category", "subcategory", "set_id", "figure_id", "question_id"))
    image = rec.get("image")
    return Parsed(
        rid=f"hallusion_bench:{key}",
        task="vqa_closed" if image is not None else "text_only",
        question=str(rec["question"]).strip(),
        answer="yes" if gt == "1" else "no",
        images=[image] if image is not None else [],
        meta={"category": str(rec["category"]), "visual_input": str(rec.get("visual_input", ""))},
    )


@dataclass(frozen=True)
class Benchmark:
    parse: Callable[[dict[str, Any], str, int], Parsed]
    required: tuple[str, ...]


BENCHMARKS: dict[str, Benchmark] = {
    "ai2d": Benchmark(ai2d, ("question", "options", "answer", "image")),
    "scienceqa": Benchmark(scienceqa, ("question", "choices", "answer", "hint", "image")),
    "chartqa": Benchmark(chartqa, ("question", "answer", "type", "image")),
    "mmmu": Benchmark(mmmu, ("id", "question", "options", "answer", "question_type", "image_1")),
    "mmvet": Benchmark(mmvet, ("question_id", "question", "answer", "image")),
    "pope": Benchmark(pope, ("question_id", "question", "answer", "image")),
    "hallusion_bench": Benchmark(
        hallusion_bench,
        ("category", "subcategory", "set_id", "figure_id", "question_id", "question", "gt_answer"),
    ),
}


def convert(path: Path, root: Path, benchmark: str, source: str | None = None, split: str | None = None) -> Converted:
    """`split` overrides the split read from shard names (HallusionBench calls its test
    split "image")."""
    spec = BENCHMARKS[benchmark]
    source = source or benchmark
    out = Converted()
    counters: dict[str, int] = {}
    for file, row, rec in parquet_rows(path, spec.required):
        name = normalise_split(split, file) if split else split_from_filename(file)
        n = counters.get(name, 0)
        counters[name] = n + 1
        try:
            p = spec.parse(rec, name, n)
        except RowError as exc:
            out.rejections.append(malformed(source, f"{benchmark}:{name}:{n}", file, row, str(exc)))
            continue
        stored = [store_image_bytes(img, root, f"images/{source}") for img in p.images]
        if any(s is None for s in stored):
            out.rejections.append(malformed(source, p.rid, file, row, "image structs with bytes"))
            continue
        out.samples.append(
            qa_sample(
                p.rid,
                source,
                name,
                p.task,
                [s for s in stored if s is not None],
                p.question,
                p.answer,
                choices=p.choices,
                meta=p.meta,
                origin=f"{file}:{row}",
            )
        )
    return out
