"""The optimiser settings a stage runs with: which parameters AdamW decays (train/parts.py), the
paper profile's values, and the note when epochs end a stage before max_steps."""

from __future__ import annotations

from dragonfly.config import load_profile
from dragonfly.train.config import load_stage
from dragonfly.train.parts import param_groups, set_trainable


def test_decay_spares_norms_biases_token_embeddings_and_lm_head_as_released(tiny):
    model, _ = tiny
    trainable = set_trainable(model, ["projector", "vision", "llm"])
    stage = load_stage(load_profile("paper"), "general2")
    names = {id(p): n for named in trainable.values() for n, p in named}
    decayed = {names[id(p)] for g in param_groups(trainable, stage) if g["weight_decay"] > 0 for p in g["params"]}
    kept = set(names.values()) - decayed
    assert stage.weight_decay == 0.1 and stage.warmup_ratio == 0.01  # the released scripts' values
    assert any(n.endswith("q_proj.weight") for n in decayed) and any("fc1.weight" in n for n in decayed)
    for word in ("lm_head", "embed_tokens", "norm", "bias"):
        assert not any(word in n for n in decayed), word
        assert any(word in n for n in kept), word


def test_a_stage_that_epochs_end_before_max_steps_says_so():
    from dragonfly.train.trainer import epochs_cap

    capped = load_stage(load_profile("tiny"), "general2", ["max_steps=1200", "epochs=4", "global_batch=8"])
    note = epochs_cap(capped, 960)
    assert note is not None and "runs 480 steps, not max_steps=1200" in note and "raise epochs" in note
    assert epochs_cap(load_stage(load_profile("tiny"), "general2", ["max_steps=100", "global_batch=8"]), 960) is None
