"""Table 3's "Token F1" as Med-PaLM M defines it (Tu et al., 2024): over all questions of
the test set, closed and open, beside the open-only figure the project reported before."""

from __future__ import annotations

import pytest

from dragonfly.eval.benchmarks import get_benchmark
from dragonfly.eval.scoring import Prediction, score_records

# (task, prediction, reference) and each pair's token F1 worked out by hand:
CASES = [
    ("vqa_closed", "yes", "yes", 1.0),
    ("vqa_closed", "yes", "no", 0.0),
    ("vqa_open", "the left lung", "left lung", 1.0),  # the article is normalised away
    ("vqa_open", "kidney", "right kidney", 2 * 1.0 * 0.5 / 1.5),  # P 1, R 1/2
    ("vqa_open", "mass in liver", "liver", 2 * (1 / 3) * 1.0 / (4 / 3)),  # P 1/3, R 1
]


@pytest.mark.parametrize("name", ["vqa_rad", "slake", "pathvqa"])
def test_token_f1_covers_every_question_and_open_token_f1_the_open_ones(name):
    records = [
        Prediction(f"{i}", name, task, ["x.png"], "q", pred, [ref]) for i, (task, pred, ref, _) in enumerate(CASES)
    ]
    metrics = score_records(get_benchmark(name), records).metrics
    every = [f1 for *_, f1 in CASES]
    opened = [f1 for task, *_, f1 in CASES if task == "vqa_open"]
    assert metrics["token_f1"] == pytest.approx(sum(every) / len(every))  # 0.6333
    assert metrics["open_token_f1"] == pytest.approx(sum(opened) / len(opened))  # 0.7222
    assert metrics["token_recall"] == pytest.approx((1 + 0 + 1 + 0.5 + 1) / 5)
    assert metrics["closed_accuracy"] == 0.5


def test_general_benchmarks_keep_their_metrics():
    records = [Prediction("0", "synth_general", "vqa_open", ["x.png"], "q", "red", ["red"])]
    assert "token_f1" not in score_records(get_benchmark("synth_general"), records).metrics


def test_the_eval_table_shows_both_token_f1s_without_a_misleading_baseline():
    from rich.console import Console

    from dragonfly.cli.eval import _summary_table

    records = [Prediction(f"{i}", "vqa_rad", t, ["x.png"], "q", p, [r]) for i, (t, p, r, _) in enumerate(CASES)]
    console = Console(width=200, record=True)
    console.print(_summary_table({"vqa_rad": score_records(get_benchmark("vqa_rad"), records).metrics}))
    lines = console.export_text().splitlines()
    every = next(line for line in lines if "vqa_rad (all questions)" in line).split("│")
    opened = next(line for line in lines if "open only" in line).split("│")
    assert every[2].strip() == "token_f1" and every[3].strip() == "0.6333" and every[4].strip() == "-"
    assert opened[3].strip() == "0.7222" and opened[6].strip() == "3"
