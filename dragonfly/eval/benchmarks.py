"""The benchmarks of the paper's Tables 1-4 and the synthetic zoom benchmark,
as data: where their samples come from, how each question is prompted, how long an answer
may be, and which metrics score it.

Where samples come from (see `dragonfly.eval.samples.load_samples`), in order of use:
1. `--data FILE.jsonl`: samples already converted to the project's schema
   (`dragonfly data convert FORMAT PATH --out FILE.jsonl`, or `dragonfly data synth`);
2. `--data DIR` holding a built mixture (`DIR/dataset/` + `manifest.json`) or a
   `save_to_disk` DatasetDict: the benchmark's split is read from it;
3. `--data PATH` to the raw release in any other layout: converted on the fly with the
   benchmark's converter (`BenchmarkSpec.format`, registry `dragonfly.data.sources.FORMATS`);
4. no `--data`: the converted JSONL at `<root>/<spec.default_path>`
   (`benchmarks/<name>/samples.jsonl`, or `synth/<variant>/samples.jsonl`).
Samples are then narrowed to the spec's split, source names and tasks.

Prompts: a sample's own first user turn is the question (converters already add the
instruction the model is trained with); the spec only adds what is missing — an
instruction suffix when the question ends without an "Answer ..." sentence, lettered
options for a multiple-choice question that does not list them — or replaces the text
with a fixed prompt (captioning and report generation, where the prompt is the task).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dragonfly.data.prompts import MCQ_SUFFIX, SHORT_SUFFIX
from dragonfly.data.sources import biocaption, coco, mimic_cxr, roco
from dragonfly.errors import DragonflyError, close_match

CLOSED_SUFFIX = "Answer with yes or no."


class UnknownBenchmarkError(DragonflyError, KeyError):
    """A benchmark name that is not in the registry; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


@dataclass(frozen=True)
class ScoreGroup:
    """Samples of `tasks` are scored together by the scorer `scorer` (see `scoring.SCORERS`);
    its metric names get `prefix_` in front when the benchmark has several groups."""

    tasks: tuple[str, ...]
    scorer: str
    prefix: str = ""


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    title: str
    format: str  # converter in dragonfly.data.sources.FORMATS for raw releases
    sources: tuple[str, ...]  # accepted Sample.source values (converter defaults first); () = any
    split: str
    groups: tuple[ScoreGroup, ...]
    primary: str  # the headline metric key, for ablation tables
    default_path: str  # converted samples JSONL relative to the data root
    instructions: Mapping[str, str] = field(default_factory=dict)  # task -> suffix
    fixed_prompts: Mapping[str, str] = field(default_factory=dict)  # task -> whole prompt
    max_new_tokens: Mapping[str, int] = field(default_factory=dict)  # task -> limit
    convert_options: Mapping[str, object] = field(default_factory=dict)
    require_images: bool = False
    needs_judge: bool = False
    overall_accuracy: bool = False  # add "accuracy" = mean per-sample "correct" over groups
    # add "token_f1" (and its precision/recall) over *all* questions, closed and open: the
    # Med-PaLM M definition (Tu et al., 2024) behind the paper's Table 3 "Token F1"
    overall_token_f1: bool = False
    in_all: bool = True  # part of `--benchmark all`
    reference: str = ""  # the paper table / protocol this reproduces

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for g in self.groups for t in g.tasks)

    def max_tokens(self, task: str) -> int:
        return self.max_new_tokens.get(task, DEFAULT_MAX_NEW_TOKENS[task])


DEFAULT_MAX_NEW_TOKENS: dict[str, int] = {
    "vqa_closed": 16,
    "vqa_open": 32,
    "mcq": 16,
    "caption": 64,
    "report": 256,
    "text_only": 32,
}
GENERAL_INSTRUCTIONS = {
    "vqa_closed": CLOSED_SUFFIX,
    "vqa_open": SHORT_SUFFIX,
    "mcq": MCQ_SUFFIX,
}
CAPTION_METRICS = "caption"  # BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap)


def _converted(name: str) -> str:
    return f"benchmarks/{name}/samples.jsonl"


# The scoring groups of the generic benchmarks; the synthetic ones reuse them.
VQA_GROUP = ScoreGroup(("vqa_closed", "vqa_open"), "vqa")
MCQ_GROUP = ScoreGroup(("mcq",), "mcq", "mcq")
CAPTION_GROUP = ScoreGroup(("caption",), CAPTION_METRICS, "caption")


def _generic() -> list[BenchmarkSpec]:
    """Benchmarks for any data: a built mixture's split (default test) or a samples JSONL,
    any source name (`--source` narrows it). `vqa` scores open and closed questions
    together and splits them by answer type (a yes/no reference is a closed question, so
    a converter's task label does not matter)."""
    common = {
        "format": "dragonfly_jsonl",
        "sources": (),
        "split": "test",
        "default_path": "",
        # The question exactly as the data has it: the model was trained on these prompts,
        # and an added "Answer with a single word" is a prompt it never saw.
        "instructions": {},
        "in_all": False,
    }
    rows = (
        ("vqa", "VQA", VQA_GROUP, "exact_match", "VQA accuracy as VQA v2 (min(1, matches/3)); normalised exact match"),
        ("mcq", "Multiple choice", MCQ_GROUP, "accuracy", "letter extraction as MMMU's parser, no random guess"),
        ("caption", "Captioning", CAPTION_GROUP, "cider", "COCO caption toolkit (pycocoevalcap): BLEU, ROUGE-L, CIDEr"),
    )
    return [
        BenchmarkSpec(
            name=name,
            title=f"{title} on your data",
            groups=(ScoreGroup(group.tasks, group.scorer),),  # one group: metric names unprefixed
            primary=primary,
            reference=reference,
            **common,
        )
        for name, title, group, primary, reference in rows
    ]


def _synth(variant: str) -> list[BenchmarkSpec]:
    """The whole synthetic benchmark of a variant, and one benchmark per task: the generic
    groups, on the synthetic source's test split."""
    groups = {
        "vqa_closed": ScoreGroup(("vqa_closed",), "closed", "vqa_closed"),
        "vqa_open": ScoreGroup(("vqa_open",), "open", "vqa_open"),
        "mcq": MCQ_GROUP,
        "caption": CAPTION_GROUP,
    }
    base = BenchmarkSpec(
        name=f"synth_{variant}",
        title=f"Synthetic fine-grained ({variant})",
        format="dragonfly_jsonl",
        sources=(f"synth_{variant}",),
        split="test",
        groups=tuple(groups.values()),
        primary="accuracy",
        default_path=f"synth/{variant}/samples.jsonl",
        instructions=GENERAL_INSTRUCTIONS,
        overall_accuracy=True,
        reference="dragonfly.data.synth: shapes readable only in high-resolution tiles",
    )
    primary = {
        "vqa_closed": "accuracy",
        "vqa_open": "exact_match",
        "mcq": "accuracy",
        "caption": "cider",
    }
    per_task = [
        BenchmarkSpec(
            **{
                **base.__dict__,
                "name": f"{base.name}_{task}",
                "title": f"{base.title}, {task}",
                "groups": (ScoreGroup(group.tasks, group.scorer),),
                "primary": primary[task],
                "overall_accuracy": False,
                "in_all": False,
            }
        )
        for task, group in groups.items()
    ]
    return [base, *per_task]


def _medvqa(name: str, title: str, fmt: str, reference: str) -> BenchmarkSpec:
    return BenchmarkSpec(
        name=name,
        title=title,
        format=fmt,
        sources=(name,),
        split="test",
        groups=(
            ScoreGroup(("vqa_closed",), "closed_llava_med", "closed"),
            ScoreGroup(("vqa_open",), "open_llava_med", "open"),
        ),
        primary="closed_accuracy",
        default_path=_converted(name),
        instructions=GENERAL_INSTRUCTIONS,
        reference=reference,
        overall_token_f1=True,
    )


def _captioning(
    name: str,
    title: str,
    fmt: str,
    task: str,
    prompt: str,
    split: str = "test",
    sources: tuple[str, ...] = (),
    **extra,
) -> BenchmarkSpec:
    return BenchmarkSpec(
        name=name,
        title=title,
        format=fmt,
        sources=sources or (name,),
        split=split,
        groups=(ScoreGroup((task,), CAPTION_METRICS),),
        primary="cider",
        default_path=_converted(name),
        fixed_prompts={task: prompt},
        **extra,
    )


def _lmms(
    name: str,
    title: str,
    source: str,
    groups: tuple[ScoreGroup, ...],
    primary: str,
    split: str = "test",
    instructions: Mapping[str, str] = GENERAL_INSTRUCTIONS,
    **extra,
) -> BenchmarkSpec:
    """A general benchmark in its lmms-lab release (converter = `source`)."""
    return BenchmarkSpec(
        name=name,
        title=title,
        format=source,
        sources=(source, name),
        split=split,
        groups=groups,
        primary=primary,
        default_path=_converted(name),
        instructions=instructions,
        **extra,
    )


def _registry() -> dict[str, BenchmarkSpec]:
    specs = [*_generic(), *_synth("general"), *_synth("biomedical"), *_general(), *_biomedical()]
    return {s.name: s for s in specs}


def _general() -> list[BenchmarkSpec]:
    """The general benchmarks (paper Table 1): questions on diagrams, science, charts and
    college subjects, then open answers, hallucination and captions."""
    return [*_general_questions(), *_general_open()]


def _general_questions() -> list[BenchmarkSpec]:
    return [
        _lmms(
            "ai2d",
            "AI2D",
            "ai2d",
            (ScoreGroup(("mcq",), "mcq"),),
            "accuracy",
            reference="Table 1; lmms-eval ai2d (letter extraction)",
        ),
        _lmms(
            "scienceqa_img",
            "ScienceQA-IMG",
            "scienceqa",
            (ScoreGroup(("mcq",), "mcq"),),
            "accuracy",
            require_images=True,
            reference="Table 1; lmms-eval scienceqa_img (image questions only)",
        ),
        # The whole test split, questions without an image sent as text (docs/metrics.md: the
        # paper's "4,114 samples" is neither this set nor the image subset).
        _lmms(
            "scienceqa",
            "ScienceQA (every test question)",
            "scienceqa",
            (ScoreGroup(("mcq",), "mcq"),),
            "accuracy",
            reference="ScienceQA test, image and text-only questions (lmms-eval scienceqa_full)",
        ),
        _lmms(
            "chartqa",
            "ChartQA",
            "chartqa",
            (ScoreGroup(("vqa_open",), "relaxed"),),
            "relaxed_accuracy",
            reference="Table 1; lmms-eval chartqa relaxed_overall",
        ),
        _lmms(
            "mmmu_val",
            "MMMU (val)",
            "mmmu",
            (ScoreGroup(("mcq",), "mcq", "mcq"), ScoreGroup(("vqa_open",), "open", "open")),
            "accuracy",
            split="validation",
            overall_accuracy=True,
            max_new_tokens={"mcq": 32, "vqa_open": 32},
            reference="Table 1; MMMU eval_utils (open questions: normalised exact match)",
        ),
    ]


def _general_open() -> list[BenchmarkSpec]:
    return [
        _lmms(
            "mmvet",
            "MM-Vet",
            "mmvet",
            (ScoreGroup(("vqa_open",), "mmvet_judge"),),
            "score",
            needs_judge=True,
            instructions={},
            max_new_tokens={"vqa_open": 256},
            reference="Table 1; MM-Vet official GPT evaluator via an OpenAI-compatible judge",
        ),
        _lmms(
            "pope",
            "POPE",
            "pope",
            (ScoreGroup(("vqa_closed",), "pope"),),
            "f1",
            reference="Table 1; lmms-eval pope (F1 with yes as positive)",
        ),
        _captioning(
            "coco_val",
            "COCO captions (val)",
            "coco_captions",
            "caption",
            coco.PROMPT,
            split="validation",
            sources=("coco", "coco_val"),
            reference="Table 1; COCO caption toolkit (CIDEr)",
        ),
        _lmms(
            "hallusion_bench",
            "HallusionBench",
            "hallusion_bench",
            (ScoreGroup(("vqa_closed", "text_only"), "hallusion"),),
            "accuracy",
            instructions={},
            max_new_tokens={"vqa_closed": 32, "text_only": 32},
            convert_options={"split": "test"},
            reference="Table 1; lmms-eval hallusion_bench aAcc (string match, no GPT)",
        ),
    ]


def _biomedical() -> list[BenchmarkSpec]:
    """The biomedical benchmarks: VQA (paper Table 3), captioning and reports (Tables 2 and 4)."""
    return [
        _medvqa("vqa_rad", "VQA-RAD", "vqa_rad", "Table 3; LLaVA-Med run_eval_batch.py"),
        _medvqa("slake", "SLAKE", "slake", "Table 3; LLaVA-Med run_eval_batch.py"),
        _medvqa("pathvqa", "Path-VQA", "pathvqa", "Table 3; LLaVA-Med run_eval_batch.py"),
        # --- biomedical captioning / report generation (paper Tables 2 and 4) ---
        _captioning(
            "iu_xray",
            "IU X-Ray",
            "biocaption",
            "report",
            biocaption.PROMPTS["report"],
            reference="Table 4; COCO caption toolkit",
        ),
        _captioning(
            "peir_gross",
            "PEIR Gross",
            "biocaption",
            "caption",
            biocaption.PROMPTS["caption"],
            convert_options={"source": "peir_gross", "task": "caption"},
            reference="Table 4; COCO caption toolkit",
        ),
        _captioning(
            "roco",
            "ROCO",
            "roco",
            "caption",
            roco.PROMPT,
            reference="Table 4; COCO caption toolkit",
        ),
        _captioning(
            "mimic_cxr",
            "MIMIC-CXR findings",
            "mimic_cxr",
            "report",
            mimic_cxr.PROMPT,
            reference="Table 4; COCO caption toolkit",
        ),
    ]


BENCHMARKS: dict[str, BenchmarkSpec] = _registry()


def get_benchmark(name: str | BenchmarkSpec) -> BenchmarkSpec:
    """The spec of `name`; an unknown name raises `UnknownBenchmarkError` listing them all."""
    if isinstance(name, BenchmarkSpec):
        return name
    if name not in BENCHMARKS:
        raise UnknownBenchmarkError(
            f"unknown benchmark {name!r}{close_match(name, BENCHMARKS)}; "
            f"known benchmarks: {', '.join(sorted(BENCHMARKS))} (`dragonfly eval --list` describes them)"
        )
    return BENCHMARKS[name]


def all_benchmarks() -> list[BenchmarkSpec]:
    """What `--benchmark all` covers (the per-task synthetic splits are left out)."""
    return [s for s in BENCHMARKS.values() if s.in_all]
