"""ScienceQA both ways (issue #16): `scienceqa_img` is the image subset (lmms-eval's), and
`scienceqa` every test question, the text-only ones asked without an image, in the same
batches as the others."""

from __future__ import annotations

from dragonfly.data.schema import Sample, user_assistant
from dragonfly.eval import EvalOptions, evaluate
from dragonfly.eval.benchmarks import get_benchmark
from dragonfly.eval.samples import select_samples


def _mcq(i: int, with_image: bool) -> Sample:
    question = "Which is a mammal?\nA. cat\nB. trout\nAnswer with the option's letter from the given choices directly."
    images = ("q.png",) if with_image else ()
    return Sample(
        f"scienceqa:test:{i}",
        "scienceqa",
        "test",
        "mcq",
        images,
        user_assistant(question, "A", len(images)),
        ("A",),
        ("cat", "trout"),
    )


def test_the_image_subset_and_the_whole_split(tmp_path, saved_tiny, astronaut):
    samples = [_mcq(0, True), _mcq(1, False), _mcq(2, True), _mcq(3, False), _mcq(4, False)]
    assert [s.id[-1] for s in select_samples(get_benchmark("scienceqa_img"), samples)] == ["0", "2"]
    assert len(select_samples(get_benchmark("scienceqa"), samples)) == 5
    astronaut.resize((64, 64)).save(tmp_path / "q.png")
    options = EvalOptions(root=tmp_path, batch_size=4, progress=False)
    metrics = evaluate(saved_tiny, "scienceqa", tmp_path / "out", options, samples=samples)
    assert metrics["n"] == 5.0 and 0.0 <= metrics["accuracy"] <= 1.0
    prompts = [line for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert sum('"<image>' in p for p in prompts) == 2  # the text-only questions carry no placeholder
