"""Prompt construction per task: what the evaluator sends for each kind of sample."""

from __future__ import annotations

import pytest

from dragonfly.data.prompts import MCQ_SUFFIX, SHORT_SUFFIX, mcq_prompt
from dragonfly.data.schema import Sample, Turn, user_assistant
from dragonfly.eval import PromptError, get_benchmark, messages, user_text
from dragonfly.eval.benchmarks import CLOSED_SUFFIX
from dragonfly.eval.prompts import has_instruction


def make(task: str, question: str, n_images: int = 1, answer: str = "a", choices=()) -> Sample:
    images = tuple(f"img{i}.png" for i in range(n_images))
    return Sample(
        f"x:{task}",
        "x",
        "test",
        task,
        images,
        user_assistant(question, answer, n_images),
        (answer,),
        tuple(choices),
    )


def test_mcq_lists_lettered_options_then_the_instruction() -> None:
    s = make("mcq", "Which animal is shown?", answer="B", choices=("cat", "dog", "bird"))
    text = user_text(s, get_benchmark("ai2d"))
    assert text == "<image>\nWhich animal is shown?\nA. cat\nB. dog\nC. bird\n" + MCQ_SUFFIX


def test_mcq_already_formatted_by_a_converter_is_left_alone() -> None:
    question = mcq_prompt("Which animal?", ["cat", "dog"], context="A farm.")
    s = make("mcq", question, answer="A", choices=("cat", "dog"))
    assert user_text(s, get_benchmark("scienceqa_img")) == "<image>\n" + question
    assert user_text(s, get_benchmark("scienceqa_img")).count("A. cat") == 1


def test_closed_question_gets_yes_no_instruction_only_when_it_has_none() -> None:
    bare = make("vqa_closed", "Is there a fracture?", answer="no")
    assert user_text(bare, get_benchmark("vqa_rad")).endswith("fracture?\n" + CLOSED_SUFFIX)
    synth = make("vqa_closed", "Is the red glyph in the image a circle? Answer yes or no.")
    assert user_text(synth, get_benchmark("synth_general")) == "<image>\n" + synth.instruction()[8:]
    converted = make("vqa_closed", f"Is it normal?\n{SHORT_SUFFIX}")
    assert user_text(converted, get_benchmark("pope")).count("Answer") == 1


def test_open_question_gets_short_answer_suffix_but_mmvet_asks_as_is() -> None:
    s = make("vqa_open", "What organ is shown?")
    assert user_text(s, get_benchmark("pathvqa")) == f"<image>\nWhat organ is shown?\n{SHORT_SUFFIX}"
    assert user_text(s, get_benchmark("mmvet")) == "<image>\nWhat organ is shown?"


def test_caption_and_report_use_the_benchmark_prompt() -> None:
    coco = make("caption", "whatever the sample said")
    assert user_text(coco, get_benchmark("coco_val")) == (
        "<image>\nProvide a one-sentence caption for the provided image."
    )
    study = make("report", "x", n_images=2)
    text = user_text(study, get_benchmark("iu_xray"))
    assert text.startswith("<image>\n<image>\n") and text.count("<image>") == 2


def test_multi_image_question_keeps_one_placeholder_per_image() -> None:
    """MMMU: up to 7 pictures, placeholders in front, tags kept as plain text."""
    s = make(
        "mcq",
        "Compare [image 1] and [image 2] with [image 3].",
        n_images=3,
        answer="A",
        choices=("same", "different"),
    )
    msgs = messages(s, get_benchmark("mmmu_val"))
    assert msgs[0]["role"] == "user"
    assert msgs[0]["content"].count("<image>") == 3
    assert "A. same\nB. different" in msgs[0]["content"]


def test_text_only_question_has_no_placeholder() -> None:
    s = Sample(
        "hb:1",
        "hallusion_bench",
        "test",
        "text_only",
        (),
        (Turn("user", "Is Paris the capital of France?"), Turn("assistant", "yes")),
        ("yes",),
    )
    assert user_text(s, get_benchmark("hallusion_bench")) == "Is Paris the capital of France?"


def test_placeholder_mismatch_and_missing_choices_are_errors() -> None:
    broken = Sample("b:1", "x", "test", "vqa_open", ("a.png", "b.png"), user_assistant("q?", "a", 1), ("a",))
    with pytest.raises(PromptError, match="1 <image> placeholder"):
        user_text(broken, get_benchmark("vqa_rad"))
    with pytest.raises(PromptError, match="without choices"):
        user_text(make("mcq", "Which?", answer="A"), get_benchmark("ai2d"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Is it a circle? Answer yes or no.", True),
        ("What is it?\nAnswer the question using a single word or phrase.", True),
        ("Is there an answer in the text?", False),
        ("Reply in one word. What is it?", False),
        ("<image>\n", False),
    ],
)
def test_has_instruction(text: str, expected: bool) -> None:
    assert has_instruction(text) is expected
