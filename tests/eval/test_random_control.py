"""The random-selection control (`strategy: random`) evaluates reproducibly: the evaluator
seeds the draw (on a forked generator), so two runs keep the same tiles and give the same
answers, and the caller's generator state is untouched."""

from __future__ import annotations

import torch

from dragonfly.build import build_tiny
from dragonfly.config import Layout
from dragonfly.data.schema import Sample, read_jsonl
from dragonfly.eval import get_benchmark, predict


def test_random_selection_evaluates_the_same_twice(synth_data):
    root, samples_jsonl = synth_data
    samples = [Sample.from_record(r) for r in read_jsonl(samples_jsonl)][:4]
    model, processor = build_tiny(layout=Layout(strategy="random"), seed=0)
    model.eval()
    kept_log: list[list[list[int]]] = []
    features = model.get_image_features

    def recording(*args, **kwargs):  # observe what each forward keeps
        sequence, kept = features(*args, **kwargs)
        kept_log.append(kept.tolist())
        return sequence, kept

    model.get_image_features = recording
    spec = get_benchmark("synth_general")
    runs = []
    for caller_seed in (123, 999):  # a different caller state changes nothing
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        kept_log.clear()
        runs.append(predict(model, processor, spec, samples, root, batch_size=2, max_new_tokens=3, progress=False))
        assert torch.equal(torch.get_rng_state(), before)
        runs.append(kept_log.copy())
    assert [r.prediction for r in runs[0]] == [r.prediction for r in runs[2]]
    assert runs[1] == runs[3] and runs[1]
    # ... and the draw is random: other seeds keep other tiles of the same image.
    batch = processor.image_processor([root / samples[0].images[0]])
    picks = set()
    for seed in range(6):
        torch.manual_seed(seed)
        picks.add(tuple(model.zoom_scores(batch["pixel_values"], batch["image_regions"])[0][0].tolist()))
    assert len(picks) > 1
