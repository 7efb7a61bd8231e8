"""`transformers.pipeline("image-text-to-text", model=DIR)` on a saved Dragonfly checkpoint:
after `import dragonfly.model.auto` (which registers the Auto classes; no remote code), it
answers exactly what `dragonfly.inference.answer` answers, one message or a batch."""

from __future__ import annotations

from PIL import Image
from transformers import pipeline

import dragonfly.model.auto  # noqa: F401  (registers Dragonfly with the Auto classes)
from dragonfly.inference import answer, load


def _message(image, question):
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]


def test_the_image_text_to_text_pipeline_answers_as_dragonfly_does(saved_tiny, retina):
    pipe = pipeline("image-text-to-text", model=str(saved_tiny))
    model, processor = load(saved_tiny)
    images = [retina.resize((320, 240)), Image.new("RGB", (96, 64), (200, 30, 30))]
    questions = ["What is shown?", "What colour is it?"]
    ours = [a.text for a in answer(model, processor, images, questions, max_new_tokens=6)]
    single = pipe(text=_message(images[0], questions[0]), max_new_tokens=6)
    assert single[0]["generated_text"][-1]["content"].strip() == ours[0]
    batch = pipe(text=[_message(i, q) for i, q in zip(images, questions, strict=True)], max_new_tokens=6, batch_size=2)
    assert [b[0]["generated_text"][-1]["content"].strip() for b in batch] == ours
