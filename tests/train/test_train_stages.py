"""Stage semantics, guards and learning, run in-process on a real (small) workspace."""

import json

import pytest
import torch

from dragonfly.config import ConfigError, load_profile
from dragonfly.inference import load
from dragonfly.pipeline import train
from dragonfly.train import checkpoint
from dragonfly.train.config import load_stage
from dragonfly.train.parts import part_modules, start_model, unreachable_vision_params
from dragonfly.train.trainer import TrainingError

SMALL = ["max_steps=2", "global_batch=4", "micro_batch=2", "save_every=100"]


def _changed(before, after) -> dict[str, set[str]]:
    """Per part, the names of parameters whose values differ."""
    out = {}
    for part, module in part_modules(after).items():
        ref = dict(part_modules(before)[part].named_parameters())
        out[part] = {n for n, p in module.named_parameters() if not torch.equal(p, ref[n])}
    return out


def _names(model, part):
    return {n for n, _ in part_modules(model)[part].named_parameters()}


@pytest.fixture(scope="module")
def chain(workspace):
    """general1 → general2 → med1 → med2, two steps each; every stage's saved model."""
    params = workspace / "params.yaml"
    finals = {}
    for stage in ("general1", "general2", "med1", "med2"):
        finals[stage] = train(stage, "tiny", params, SMALL)
    return params, finals


def test_general1_changes_only_the_projector(chain, workspace):
    params, finals = chain
    profile = load_profile("tiny", params)
    # The same fresh build general1 starts from (its tokenizer learns general1's data too).
    start, _ = start_model(profile, load_stage(profile, "general1"), workspace / "data/mixtures/tiny_general/dataset")
    after, _ = load(finals["general1"])
    changed = _changed(start, after)
    assert changed["projector"] == _names(after, "projector")
    assert changed["vision"] == set() and changed["llm"] == set()


def test_general2_changes_everything_reachable(chain):
    _, finals = chain
    before, _ = load(finals["general1"])
    after, _ = load(finals["general2"])
    changed = _changed(before, after)
    unreachable = unreachable_vision_params(after)
    assert unreachable  # layers past the feature layer (-2) and the final norm
    assert changed["vision"] == _names(after, "vision") - unreachable
    assert changed["projector"] == _names(after, "projector")
    assert changed["llm"] == _names(after, "llm")


@pytest.mark.parametrize(
    "stage,previous,parts",
    [("med1", "general2", {"vision", "projector"}), ("med2", "med1", {"vision", "projector", "llm"})],
)
def test_med_stages_change_exactly_their_parts(chain, stage, previous, parts):
    _, finals = chain
    before, _ = load(finals[previous])
    after, _ = load(finals[stage])
    changed = _changed(before, after)
    assert {part for part, names in changed.items() if names} == parts


def test_stage_outputs_are_complete_models(chain):
    _, finals = chain
    for final in finals.values():
        assert (final / "model.safetensors").is_file() and (final / "processor_config.json").is_file()
        model, processor = load(final)
        assert processor.image_seq_length == model.config.image_seq_length


def test_config_errors_name_the_problem(workspace):
    profile = load_profile("tiny", workspace / "params.yaml")
    with pytest.raises(ConfigError, match="train must list parts"):
        load_stage(profile, "general1", ["train=[]"])
    with pytest.raises(ConfigError, match="stages.general1.learning_rate"):
        load_stage(profile, "general1", ["learning_rate=1"])
    with pytest.raises(ConfigError, match="not a multiple"):
        load_stage(profile, "general1", ["global_batch=6", "micro_batch=4"]).accumulation(1)
    with pytest.raises(ConfigError, match="stage 'general9' not in profile"):
        load_stage(profile, "general9")


def test_samples_truncation_would_empty_never_reach_training(workspace, tmp_path):
    """At 316 positions every sample's reply would be cut (it used to stop the run at its first
    batch with "all labels are -100"): all are left out, listed, and the stage says so."""
    with pytest.raises(TrainingError, match=r"0 samples \(\d+ left out as longer than data.max_length"):
        train("general1", "tiny", workspace / "params.yaml", [*SMALL, "data.max_length=316"], out_dir=tmp_path)
    assert (tmp_path / "too_long.jsonl").read_text().count('"too_long"') > 0


def test_non_finite_loss_saves_last_good_state_and_stops(workspace, tmp_path):
    with pytest.raises(TrainingError, match="non-finite loss at step"):
        train(
            "general2",
            "tiny",
            workspace / "params.yaml",
            ["init_from=init", "lr=1e30", "max_steps=6", "global_batch=4", "micro_batch=2", "warmup_ratio=0"],
            out_dir=tmp_path,
        )
    saved = checkpoint.latest_valid(tmp_path / "checkpoints")
    assert saved is not None
    state = checkpoint.read_state(saved)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert state["step"] == len(logged) and all(map(lambda r: r["loss"] == r["loss"], logged))


def test_resume_refuses_a_changed_configuration(workspace, tmp_path):
    run = ["max_steps=2", "global_batch=2", "micro_batch=2", "save_every=1"]
    train("general1", "tiny", workspace / "params.yaml", run, out_dir=tmp_path)
    with pytest.raises(TrainingError, match=r"different configuration \(lr: 0.001 → 0.0005\)"):
        train("general1", "tiny", workspace / "params.yaml", [*run, "lr=5e-4"], resume=True, out_dir=tmp_path)
    # Bookkeeping and how a step is split may change: the run picks up where it stopped.
    final = train(
        "general1",
        "tiny",
        workspace / "params.yaml",
        [*run, "keep_last=3", "micro_batch=1"],
        resume=True,
        out_dir=tmp_path,
    )
    assert (final / "config.json").is_file()


def test_first_batch_is_logged_decoded(workspace, tmp_path, capsys):
    train(
        "general1",
        "tiny",
        workspace / "params.yaml",
        ["max_steps=1", "global_batch=2", "micro_batch=2"],
        out_dir=tmp_path,
    )
    out = capsys.readouterr().out
    assert "first batch of general1" in out and "<image×306>" in out
    assert "labels: '" in out and "<|eot_id|>" in out.split("labels:")[1]


def test_it_learns(workspace, tmp_path):
    final = train(
        "general2",
        "tiny",
        workspace / "params.yaml",
        ["init_from=init", "lr=1e-3", "epochs=8", "max_steps=48", "global_batch=8", "micro_batch=4", "save_every=1000"],
        out_dir=tmp_path,
    )
    losses = [json.loads(line)["loss"] for line in (final.parent / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 48
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, (first, last)  # deterministic: same seed, same data order


def test_gradient_checkpointing_gives_the_same_step(workspace, tmp_path):
    """Same loss and weights with the LLM's gradient checkpointing on (it trades compute for memory only)."""
    runs = {}
    for flag in ("false", "true"):
        final = train(
            "general2",
            "tiny",
            workspace / "params.yaml",
            [
                "init_from=init",
                "max_steps=2",
                "global_batch=4",
                "micro_batch=2",
                "save_every=100",
                f"gradient_checkpointing={flag}",
            ],
            out_dir=tmp_path / flag,
        )
        runs[flag] = (final.parent / "metrics.jsonl").read_text().splitlines(), load(final)[0].state_dict()
    (log_a, w_a), (log_b, w_b) = runs["false"], runs["true"]
    assert [json.loads(x)["loss"] for x in log_a] == pytest.approx([json.loads(x)["loss"] for x in log_b], abs=1e-6)
    assert max((w_a[k] - w_b[k]).abs().max().item() for k in w_a) < 1e-6
