"""Scoring groups against the metric functions directly, and the three ways samples are
read (converted JSONL, built mixture, raw release through its converter)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dragonfly import metrics as M
from dragonfly.data.mixture import MixtureConfig, SourceSpec, build_mixture
from dragonfly.eval import get_benchmark, load_samples, score_records, select_samples
from dragonfly.eval.scoring import Prediction


def rec(i: int, task: str, pred: str, ref: str, choices=(), source="vqa_rad") -> Prediction:
    return Prediction(f"{source}:{i}", source, task, ["a.png"], "<image>\nq", pred, [ref], list(choices))


def test_medvqa_groups_report_closed_and_open_metrics_with_llava_med_variants() -> None:
    records = [
        rec(0, "vqa_closed", "Yes.", "yes"),
        rec(1, "vqa_closed", "not sure", "no"),  # LLaVA-Med's substring quirk counts this
        rec(2, "vqa_open", "left lung", "left lung"),
        rec(3, "vqa_open", "the liver", "liver lobe"),
    ]
    scores = score_records(get_benchmark("vqa_rad"), records)
    m = scores.metrics
    closed = {r.id: r.prediction for r in records[:2]}, {r.id: r.references for r in records[:2]}
    opened = {r.id: r.prediction for r in records[2:]}, {r.id: r.references for r in records[2:]}
    assert m["closed_accuracy"] == M.closed_accuracy(*closed) == 0.5
    assert m["closed_accuracy_llava_med"] == M.llava_med_closed_accuracy(*closed) == 1.0
    assert m["open_token_f1"] == pytest.approx(M.corpus_token_f1(*opened)["f1"])
    assert m["open_recall_llava_med"] == pytest.approx(M.llava_med_open_recall(*opened))
    assert m["closed_n"] == m["open_n"] == 2.0 and m["n"] == 4.0
    assert scores.per_sample["vqa_rad:1"] == {"correct": 0.0, "correct_llava_med": 1.0}
    assert scores.per_sample["vqa_rad:3"]["token_f1"] == pytest.approx(M.token_f1("the liver", "liver lobe"))


def test_mcq_pope_and_relaxed_per_sample_scores_agree_with_corpus() -> None:
    mcq = [
        rec(0, "mcq", "B", "B", ("x", "y"), "ai2d"),
        rec(1, "mcq", "(A)", "B", ("x", "y"), "ai2d"),
    ]
    s = score_records(get_benchmark("ai2d"), mcq)
    assert s.metrics["accuracy"] == 0.5 and [v["correct"] for v in s.per_sample.values()] == [
        1.0,
        0.0,
    ]
    pope = [
        rec(0, "vqa_closed", "yes", "yes", source="pope"),
        rec(1, "vqa_closed", "Yes.", "no", source="pope"),
    ]
    s = score_records(get_benchmark("pope"), pope)
    assert s.metrics["f1"] == M.pope({"pope:0": "yes", "pope:1": "Yes."}, {"pope:0": "yes", "pope:1": "no"})["f1"]
    chart = [rec(0, "vqa_open", "10.4", "10", source="chartqa")]
    assert score_records(get_benchmark("chartqa"), chart).metrics["relaxed_accuracy"] == 1.0


def test_mmmu_overall_accuracy_spans_choice_and_open_questions() -> None:
    records = [
        rec(0, "mcq", "A", "A", ("p", "q"), "mmmu"),
        rec(1, "mcq", "B", "A", ("p", "q"), "mmmu"),
        rec(2, "vqa_open", "42", "42", source="mmmu"),
        rec(3, "vqa_open", "41", "42", source="mmmu"),
    ]
    m = score_records(get_benchmark("mmmu_val"), records).metrics
    assert m["accuracy"] == 0.5 and m["mcq_accuracy"] == 0.5 and m["open_exact_match"] == 0.5


def test_duplicate_ids_and_unscored_tasks_are_errors() -> None:
    spec = get_benchmark("vqa_rad")
    with pytest.raises(ValueError, match="duplicate"):
        score_records(spec, [rec(0, "vqa_closed", "yes", "yes")] * 2)
    with pytest.raises(ValueError, match="does not score tasks"):
        score_records(spec, [rec(0, "caption", "a", "b")])


def test_mixture_split_is_read_with_its_data_root(synth_data, tmp_path: Path) -> None:
    root, samples_jsonl = synth_data
    cfg = MixtureConfig("m", (SourceSpec("synth_general", "dragonfly_jsonl", str(samples_jsonl)),))
    build_mixture(cfg, root, tmp_path / "mix")
    spec = get_benchmark("synth_general_vqa_open")
    loaded = load_samples(spec, tmp_path / "mix", tmp_path / "missing-root")
    assert loaded.root == root.resolve() and loaded.origin.startswith("dataset:")
    chosen = select_samples(spec, loaded.samples)
    assert len(chosen) == 2 and {s.task for s in chosen} == {"vqa_open"}
    assert all((loaded.root / s.images[0]).is_file() for s in chosen)


def test_raw_release_goes_through_the_benchmarks_converter(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 10, 10)).save(buf, format="PNG")
    rows = [
        {"image": {"bytes": buf.getvalue(), "path": "x.png"}, "question": q, "answer": a}
        for q, a in (("is this normal?", "Yes"), ("which organ?", "liver"))
    ]
    raw = tmp_path / "vqa-rad" / "data" / "test-00000-of-00001.parquet"
    raw.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), raw)
    spec = get_benchmark("vqa_rad")
    loaded = load_samples(spec, tmp_path / "vqa-rad", tmp_path / "root")
    chosen = select_samples(spec, loaded.samples)
    assert [(s.task, s.answers) for s in chosen] == [
        ("vqa_closed", ("yes",)),
        ("vqa_open", ("liver",)),
    ]
    assert (tmp_path / "root" / chosen[0].images[0]).is_file()
