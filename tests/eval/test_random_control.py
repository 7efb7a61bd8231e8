"""The random-selection control (`strategy: random`) through the model: a generation keeps
the tiles `answer` reports, evaluation gives the same answers on every run and for any
batch size, and different images keep different tiles."""

from __future__ import annotations

import torch

from dragonfly.build import build_tiny
from dragonfly.config import Layout
from dragonfly.data.schema import Sample, read_jsonl
from dragonfly.eval import get_benchmark, predict


def test_random_selection_is_the_same_in_every_pass(synth_data):
    root, samples_jsonl = synth_data
    everything = [Sample.from_record(r) for r in read_jsonl(samples_jsonl)]
    samples = everything[:4]
    model, processor = build_tiny(layout=Layout(strategy="random"), seed=0)
    model.eval()
    kept_log: list[list[int]] = []
    features = model.get_image_features

    def recording(*args, **kwargs):  # observe what each forward keeps
        sequence, kept = features(*args, **kwargs)
        kept_log.extend(kept.tolist())
        return sequence, kept

    model.get_image_features = recording
    spec = get_benchmark("synth_general")
    answers, kept = [], []
    for batch_size, caller_seed in ((2, 123), (4, 999)):  # other batches, another global RNG state
        torch.manual_seed(caller_seed)
        kept_log.clear()
        answers.append(
            [p.prediction for p in predict(model, processor, spec, samples, root, batch_size, 3, progress=False)]
        )
        kept.append(sorted(kept_log))
    assert answers[0] == answers[1] and kept[0] == kept[1]
    # Another image, other tiles (the draw is not one fixed subset).
    pictures = sorted({root / s.images[0] for s in everything})
    assert len(pictures) > 1
    batch = processor.image_processor(pictures)
    picks = model.zoom_scores(batch["pixel_values"], batch["image_regions"])[0]
    assert len({tuple(p.tolist()) for p in picks}) > 1
