"""Prediction records and the scorers that turn them into metrics.

Everything a metric needs is in the record (prediction, references, choices, prompt), so
`score_records` gives the same numbers from a `predictions.jsonl` as it did right after
generation — that is how `recompute_metrics` checks a metrics file. Every number comes
from `dragonfly.metrics`; per-sample scores call the same functions on one sample.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dragonfly import metrics as M
from dragonfly.eval.benchmarks import BenchmarkSpec
from dragonfly.eval.prompts import question_text
from dragonfly.files import read_jsonl, write_jsonl

_JSON_STYLE: dict[str, Any] = {"ensure_ascii": False, "sort_keys": True}  # of a predictions.jsonl line


@dataclass(frozen=True)
class Prediction:
    """One line of predictions.jsonl."""

    id: str
    source: str
    task: str
    images: list[str]
    prompt: str  # the user message as sent (before the chat template), placeholders kept
    prediction: str
    references: list[str]
    choices: list[str] = field(default_factory=list)
    score: dict[str, float] | None = None  # per-sample scores, where the metric has them

    def to_json(self) -> str:
        return json.dumps(asdict(self), **_JSON_STYLE)

    @classmethod
    def from_dict(cls, rec: Mapping[str, Any]) -> Prediction:
        return cls(
            id=str(rec["id"]),
            source=str(rec.get("source", "")),
            task=str(rec["task"]),
            images=[str(p) for p in rec.get("images") or []],
            prompt=str(rec["prompt"]),
            prediction=str(rec["prediction"]),
            references=[str(r) for r in rec["references"]],
            choices=[str(c) for c in rec.get("choices") or []],
            score=dict(rec["score"]) if rec.get("score") else None,
        )


PREDICTION_FIELDS = tuple(Prediction.__dataclass_fields__)


def read_predictions(path: Path) -> list[Prediction]:
    return [Prediction.from_dict(rec) for rec in read_jsonl(path)]


def write_predictions(records: Sequence[Prediction], path: Path) -> None:
    write_jsonl(path, (asdict(r) for r in records), **_JSON_STYLE)


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]
    per_sample: dict[str, dict[str, float]] = field(default_factory=dict)


def _maps(records: Sequence[Prediction]) -> tuple[dict[str, str], dict[str, list[str]]]:
    return {r.id: r.prediction for r in records}, {r.id: list(r.references) for r in records}


def _each(records: Sequence[Prediction], fn: Callable[[dict, dict], float]) -> dict[str, float]:
    """`fn` (a corpus metric) on each sample alone: the per-sample version of that metric."""
    return {r.id: float(fn({r.id: r.prediction}, {r.id: list(r.references)})) for r in records}


def closed(records: Sequence[Prediction]) -> Scores:
    preds, refs = _maps(records)
    correct = _each(records, M.closed_accuracy)
    return Scores(
        {"accuracy": M.closed_accuracy(preds, refs)},
        {k: {"correct": v} for k, v in correct.items()},
    )


def closed_llava_med(records: Sequence[Prediction]) -> Scores:
    base = closed(records)
    preds, refs = _maps(records)
    lm = _each(records, M.llava_med_closed_accuracy)
    return Scores(
        {**base.metrics, "accuracy_llava_med": M.llava_med_closed_accuracy(preds, refs)},
        {k: {**v, "correct_llava_med": lm[k]} for k, v in base.per_sample.items()},
    )


def open_answers(records: Sequence[Prediction]) -> Scores:
    """Token F1/precision/recall (best reference) and normalised exact match."""
    preds, refs = _maps(records)
    f1 = M.corpus_token_f1(preds, refs)
    exact = _each(records, M.closed_accuracy)
    per = {
        r.id: {
            "correct": exact[r.id],
            "token_f1": max(M.token_f1(r.prediction, ref) for ref in r.references),
            "token_recall": max(M.token_recall(r.prediction, ref) for ref in r.references),
        }
        for r in records
    }
    out = {
        "exact_match": M.closed_accuracy(preds, refs),
        "token_f1": f1["f1"],
        "token_precision": f1["precision"],
        "token_recall": f1["recall"],
    }
    return Scores(out, per)


def open_llava_med(records: Sequence[Prediction]) -> Scores:
    base = open_answers(records)
    preds, refs = _maps(records)
    lm = _each(records, M.llava_med_open_recall)
    return Scores(
        {**base.metrics, "recall_llava_med": M.llava_med_open_recall(preds, refs)},
        {k: {**v, "recall_llava_med": lm[k]} for k, v in base.per_sample.items()},
    )


CLOSED_TYPE, OPEN_TYPE = "closed", "open"


def answer_type(references: Sequence[str]) -> str:
    """'closed' when the first reference is a yes/no answer (after the synonym fold of
    `normalize_closed`), else 'open': the split of VQA-RAD/SLAKE, taken from the answer so
    that data whose converter labels every question `vqa_open` is split all the same."""
    return CLOSED_TYPE if references and M.normalize_closed(references[0]) in ("yes", "no") else OPEN_TYPE


def vqa(records: Sequence[Prediction]) -> Scores:
    """Open and closed questions together, then per answer type: normalised exact match,
    VQA accuracy (`metrics.vqa_accuracy`), token F1 for open answers, counts."""
    preds, refs = _maps(records)
    per = {
        r.id: {
            "correct": float(M.closed_accuracy({r.id: r.prediction}, {r.id: list(r.references)})),
            "vqa_accuracy": M.vqa_accuracy(r.prediction, r.references),
            "closed": float(answer_type(r.references) == CLOSED_TYPE),
        }
        for r in records
    }
    out = {"exact_match": M.closed_accuracy(preds, refs), "vqa_accuracy": _mean(per, "vqa_accuracy", records)}
    for kind in (CLOSED_TYPE, OPEN_TYPE):
        members = [r for r in records if answer_type(r.references) == kind]
        out[f"{kind}_n"] = float(len(members))
        if members:
            out[f"{kind}_exact_match"] = _mean(per, "correct", members)
            out[f"{kind}_vqa_accuracy"] = _mean(per, "vqa_accuracy", members)
            out.update({f"{kind}_{k}": v for k, v in answer_stats(members).items()})
    opened = [r for r in records if answer_type(r.references) == OPEN_TYPE]
    if opened:
        out["open_token_f1"] = M.corpus_token_f1(*_maps(opened))["f1"]
    return Scores(out, per)


def _mean(per: Mapping[str, Mapping[str, float]], key: str, records: Sequence[Prediction]) -> float:
    return sum(per[r.id][key] for r in records) / len(records)


def answer_stats(records: Sequence[Prediction]) -> dict[str, float]:
    """What a trivial model scores and how varied the answers are: `majority_baseline` is
    the exact match of always giving the most common reference answer of these samples
    (the best constant answer on this very set, so an upper bound for a model that ignores
    the image); `distinct_predictions` / `distinct_references` count normalised answers
    (a model answering one word to everything shows as 1)."""
    counts = Counter(M.normalize_closed(r.references[0]) for r in records if r.references)
    top = counts.most_common(1)[0][0] if counts else ""
    hits = sum(any(M.normalize_closed(ref) == top for ref in r.references) for r in records)
    return {
        "majority_baseline": hits / len(records) if records else 0.0,
        "distinct_predictions": float(len({M.normalize_closed(r.prediction) for r in records})),
        "distinct_references": float(len(counts)),
    }


def mcq(records: Sequence[Prediction]) -> Scores:
    """Letter extraction with `parse_choice` (MMMU's parser plus deterministic
    extensions, never a random guess)."""
    preds, refs = _maps(records)
    options = {r.id: list(r.choices) for r in records}
    per = {
        r.id: {"correct": float(M.parse_choice(r.prediction, r.choices) == r.references[0].strip().upper())}
        for r in records
    }
    return Scores({"accuracy": M.multiple_choice_accuracy(preds, refs, options)}, per)


def relaxed(records: Sequence[Prediction]) -> Scores:
    preds, refs = _maps(records)
    correct = _each(records, M.relaxed_accuracy)
    return Scores(
        {"relaxed_accuracy": M.relaxed_accuracy(preds, refs)},
        {k: {"correct": v} for k, v in correct.items()},
    )


def pope(records: Sequence[Prediction]) -> Scores:
    preds, refs = _maps(records)
    per = {r.id: {"correct": float(M.pope_parse(r.prediction) == r.references[0].strip().lower())} for r in records}
    return Scores(M.pope(preds, refs), per)


def hallusion(records: Sequence[Prediction]) -> Scores:
    preds, refs = _maps(records)
    correct = _each(records, M.hallusionbench_accuracy)
    return Scores(
        {"accuracy": M.hallusionbench_accuracy(preds, refs)},
        {k: {"correct": v} for k, v in correct.items()},
    )


def captions(records: Sequence[Prediction]) -> Scores:
    """COCO-toolkit BLEU-1..4, METEOR, ROUGE-L, CIDEr (per-sample CIDEr uses the corpus IDF)."""
    preds, refs = _maps(records)
    result = M.caption_metrics(preds, refs)
    return Scores(dict(result.corpus), {str(k): dict(v) for k, v in result.per_sample.items()})


def mmvet_judge(records: Sequence[Prediction]) -> Scores:
    """MM-Vet through the configured judge; `MetricUnavailable` when there is none."""
    preds, refs = _maps(records)
    questions = {r.id: question_text(r.prompt) for r in records}
    return Scores(M.mmvet_score(preds, refs, questions))


SCORERS: dict[str, Callable[[Sequence[Prediction]], Scores]] = {
    "closed": closed,
    "closed_llava_med": closed_llava_med,
    "open": open_answers,
    "open_llava_med": open_llava_med,
    "mcq": mcq,
    "vqa": vqa,
    "relaxed": relaxed,
    "pope": pope,
    "hallusion": hallusion,
    "caption": captions,
    "mmvet_judge": mmvet_judge,
}


# Scorers of short answers, where a constant answer is a meaningful baseline (not captions).
ANSWER_SCORERS = frozenset({"closed", "closed_llava_med", "open", "open_llava_med", "mcq", "vqa", "relaxed", "pope"})


def _pooled_baseline(spec: BenchmarkSpec, metrics: Mapping[str, float]) -> dict[str, float]:
    """Beside a pooled accuracy: always giving each task's most common answer (the groups'
    baselines weighted by their counts), and the distinct answers summed over groups."""
    heads = [f"{g.prefix}_" for g in spec.groups if g.scorer in ANSWER_SCORERS and f"{g.prefix}_n" in metrics]
    n = sum(metrics[f"{h}n"] for h in heads)
    if not n:
        return {}
    return {
        "majority_baseline": sum(metrics[f"{h}majority_baseline"] * metrics[f"{h}n"] for h in heads) / n,
        "distinct_predictions": sum(metrics[f"{h}distinct_predictions"] for h in heads),
    }


def score_records(spec: BenchmarkSpec, records: Sequence[Prediction]) -> Scores:
    """All metrics of `spec` over `records`: flat floats, group metrics prefixed when the
    benchmark has several groups, counts as `n` / `<prefix>_n`. A group with no samples
    (e.g. after `--limit`) contributes nothing rather than a made-up zero."""
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate prediction ids: {dupes[:10]}")
    metrics: dict[str, float] = {"n": float(len(records))}
    per: dict[str, dict[str, float]] = {}
    prefixed = len(spec.groups) > 1
    for group in spec.groups:
        members = [r for r in records if r.task in group.tasks]
        if not members:
            continue
        scores = SCORERS[group.scorer](members)
        head = f"{group.prefix}_" if prefixed and group.prefix else ""
        metrics.update({head + k: float(v) for k, v in scores.metrics.items()})
        if group.scorer in ANSWER_SCORERS:
            metrics.update({head + k: v for k, v in answer_stats(members).items()})
        if head:
            metrics[f"{head}n"] = float(len(members))
        for key, values in scores.per_sample.items():
            per.setdefault(key, {}).update(values)
    stray = sorted({r.task for r in records} - set(spec.tasks))
    if stray:
        raise ValueError(f"benchmark {spec.name!r} does not score tasks {stray}")
    if spec.overall_accuracy:
        hits = [per[i]["correct"] for i in ids if "correct" in per.get(i, {})]
        if hits:
            metrics["accuracy"] = sum(hits) / len(hits)
        metrics.update(_pooled_baseline(spec, metrics))
    if spec.overall_token_f1 and records:
        # Over every question, closed ones too (Med-PaLM M); `open_token_f1` stays the open-only figure.
        preds, refs = _maps(records)
        metrics.update({f"token_{k}": v for k, v in M.corpus_token_f1(preds, refs).items()})
    return Scores(dict(sorted(metrics.items())), per)
