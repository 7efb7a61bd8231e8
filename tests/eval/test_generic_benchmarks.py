"""The generic benchmarks for a user's data (issue #12, item 4): `vqa` splits questions by
answer type, and every short-answer benchmark reports the majority-answer baseline and the
number of distinct answers."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dragonfly.data.schema import Sample, user_assistant
from dragonfly.eval.benchmarks import get_benchmark
from dragonfly.eval.samples import NoSamplesError, load_samples, select_samples
from dragonfly.eval.scoring import Prediction, score_records
from dragonfly.metrics import vqa_accuracy


def _record(i: int, answer: str, prediction: str, task: str = "vqa_open") -> Prediction:
    return Prediction(f"r{i}", "mine", task, ["a.png"], "<image>\nQ?", prediction, [answer])


def test_vqa_splits_by_answer_type_whatever_the_task_label() -> None:
    # Every row labelled vqa_open, as the LLaVA converter writes them: 4 yes/no, 3 colours.
    rows = [("yes", "yes"), ("yes", "yes"), ("no", "yes"), ("Yes.", "yes")]
    rows += [("red", "red"), ("blue", "red"), ("green", "red")]
    records = [_record(i, ref, pred) for i, (ref, pred) in enumerate(rows)]
    m = score_records(get_benchmark("vqa"), records).metrics
    assert (m["closed_n"], m["open_n"]) == (4, 3)
    assert m["closed_exact_match"] == pytest.approx(3 / 4) and m["open_exact_match"] == pytest.approx(1 / 3)
    assert m["exact_match"] == pytest.approx(4 / 7) == m["vqa_accuracy"]
    # The trivial answers: "yes" to every closed question (3 of 4), any colour (1 of 3).
    assert m["closed_majority_baseline"] == pytest.approx(3 / 4)
    assert m["open_majority_baseline"] == pytest.approx(1 / 3)
    assert m["majority_baseline"] == pytest.approx(3 / 7)
    # The model said only "yes" and "red".
    assert m["distinct_predictions"] == 2 and m["distinct_references"] == 5


def test_vqa_accuracy_follows_the_ten_annotator_formula() -> None:
    ten = ["cat"] * 2 + ["dog"] * 8
    # Leaving out one of the 2 "cat" answers: min(1, 1/3); one of the 8 "dog": min(1, 2/3).
    assert vqa_accuracy("Cat", ten) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("dog", ten) == 1.0
    assert vqa_accuracy("a cat", ["cat"]) == 1.0 and vqa_accuracy("dog", ["cat", "kitten"]) == 0.0


def test_synthetic_benchmarks_report_a_pooled_baseline() -> None:
    spec = get_benchmark("synth_general")
    records = [_record(0, "yes", "no", "vqa_closed"), _record(1, "yes", "yes", "vqa_closed")]
    records += [_record(2, "A", "A", "mcq"), _record(3, "B", "A", "mcq")]
    for r in records[2:]:
        object.__setattr__(r, "choices", ["x", "y"])
    m = score_records(spec, records).metrics
    assert m["vqa_closed_majority_baseline"] == 1.0 and m["mcq_majority_baseline"] == 0.5
    assert m["majority_baseline"] == pytest.approx(0.75) and m["distinct_predictions"] == 3


def test_generic_benchmarks_take_any_source_and_need_data(tmp_path) -> None:
    spec = get_benchmark("vqa")
    samples = [
        Sample("x:1", "my_vqa", "test", "vqa_open", ("a.png",), user_assistant("Q?", "yes", 1), ("yes",)),
        Sample("x:2", "other", "train", "vqa_open", ("a.png",), user_assistant("Q?", "no", 1), ("no",)),
    ]
    assert [s.id for s in select_samples(spec, samples)] == ["x:1"]
    with pytest.raises(NoSamplesError, match="pass --data"):
        load_samples(spec, None, tmp_path)


def test_eval_help_names_the_generic_benchmarks_and_list_shows_all() -> None:
    from dragonfly.cli import app

    runner = CliRunner()
    help_text = runner.invoke(app, ["eval", "--help"], terminal_width=80).output
    assert "…" not in help_text  # rich cuts a word too long for its column; none is
    words = " ".join(help_text.replace("│", " ").split())  # the help panel's text, unwrapped
    assert "generic one for your data: vqa, mcq, caption. `--list` shows every name" in words
    listed = runner.invoke(app, ["eval", "--list"], terminal_width=200)
    assert listed.exit_code == 0
    for name in ("vqa", "mcq", "caption", "synth_general", "vqa_rad", "mimic_cxr"):
        assert f"│ {name} " in listed.output
