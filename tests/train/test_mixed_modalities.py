"""Text-only samples beside image samples, as the paper's SFT mixtures hold them (OpenHermes
beside LLaVA): a micro-batch without images must train in one process, where only the
projector may be trainable, and in two, where every rank takes part in every collective
whatever its batch holds (plain DDP and DeepSpeed ZeRO-1 on gloo), with the same losses."""

import json
import math

import pytest
import yaml
from datasets import load_from_disk

from dragonfly.data.config import DataConfig
from dragonfly.data.mixture import build_mixture
from dragonfly.train.data import ConversationDataset, StepBatches

RUN = ["train", "--params", "params.yaml", "data.mixture=tiny_mixed", "save_every=100", "num_workers=0"]
# group_by_length off: micro-batches mix at random, so some rank's batch is all text while
# another's holds images (checked below against the sampler itself).
G2 = ["--stage", "general2", "init_from=init", "max_steps=8", "global_batch=2", "micro_batch=1"]
G2 += ["group_by_length=false", "lr=1e-3", "warmup_ratio=0"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, new_workspace):
    """A workspace whose mixture `tiny_mixed` holds 16 image and 16 text-only LLaVA samples."""
    root = tmp_path_factory.mktemp("mixed")
    params = new_workspace(root, n_train=4)
    text = [
        {"id": f"hermes-{i}", "conversations": [{"from": "human", "value": f"What is {i} plus {i}?"}]}
        for i in range(16)
    ]
    for i, row in enumerate(text):
        row["conversations"].append({"from": "gpt", "value": f"{2 * i}"})
    (root / "data" / "hermes").mkdir()
    (root / "data" / "hermes" / "openhermes.json").write_text(json.dumps(text))
    tree = yaml.safe_load(params.read_text())
    mixtures = tree["data"]["mixtures"]
    images = dict(mixtures["tiny_general"]["sources"][0], cap=16)
    hermes = {"name": "hermes", "format": "llava", "path": "hermes/openhermes.json", "options": {"split": "train"}}
    mixtures["tiny_mixed"] = {**mixtures["tiny_general"], "sources": [images, hermes]}
    params.write_text(yaml.safe_dump(tree, sort_keys=False))
    cfg = DataConfig.from_dict(tree["data"])
    build_mixture(cfg.mixture("tiny_mixed"), root / "data", root / "data" / "mixtures" / "tiny_mixed")
    rows = load_from_disk(str(root / "data/mixtures/tiny_mixed/dataset"))["train"]
    assert sum(bool(r) for r in rows["images"]) == 16 and sum(not r for r in rows["images"]) == 16
    return root, rows


def _losses(out):
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def test_projector_only_stage_trains_through_text_only_micro_batches(mixed, run_cli):
    root, rows = mixed
    out = root / "runs" / "g1"
    run_cli(*RUN, "--stage", "general1", "--out", str(out), "max_steps=8", "global_batch=4", "micro_batch=2", cwd=root)
    losses = _losses(out)
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)


@pytest.fixture(scope="module")
def one_process(mixed, run_cli):
    root, rows = mixed
    out = root / "runs" / "one"
    run_cli(*RUN, *G2, "--out", str(out), cwd=root)
    return _losses(out)


@pytest.mark.parametrize("engine", ["plain", "deepspeed"])
def test_two_processes_train_the_same_losses_when_a_rank_holds_no_image(engine, mixed, one_process, run_cli):
    root, rows = mixed
    if engine == "deepspeed":
        pytest.importorskip("deepspeed")
    # The sampler gives one rank a text-only sample while the other holds an image at some step.
    dataset = ConversationDataset(rows, root / "data", None, 4096)
    ranks = [list(StepBatches(dataset, 2, 1, 2, rank, 0, 8)) for rank in (0, 1)]
    has_image = [[bool(rows[b[0]]["images"]) for b in batches] for batches in ranks]
    assert any(a != b for a, b in zip(*has_image, strict=True))
    out = root / "runs" / f"two-{engine}"
    run_cli(*RUN, *G2, f"engine={engine}", "--out", str(out), cwd=root, torchrun=2)
    two = _losses(out)
    assert len(two) == len(one_process) == 8
    assert max(abs(a - b) for a, b in zip(two, one_process, strict=True)) < 1e-5, (two, one_process)


def test_a_text_only_batch_keeps_the_image_path_in_the_graph_at_zero_weight(tiny):
    """The loss is the text's alone; the tower and projector get gradients of exactly 0."""
    import torch

    from dragonfly.inference import user_message

    model, processor = tiny
    messages = user_message("What is 2 plus 2?", with_image=False) + [{"role": "assistant", "content": "4"}]
    ex = processor.encode_conversation(messages, [])
    batch = {"input_ids": ex["input_ids"][None], "labels": ex["labels"][None]}
    with torch.no_grad():
        expected = model(**batch).loss
    model.train()
    try:
        loss = model(**batch).loss
        loss.backward()
        assert loss.item() == expected.item()
        projector = [p.grad for p in model.projector.parameters()]
        assert all(g is not None and not g.any() for g in projector)
        # The tower's reachable layers (those before vision_feature_layer) are in the graph.
        tower = [p.grad for p in model.vision_tower.parameters() if p.grad is not None]
        assert tower and not any(g.any() for g in tower)
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_max_length_below_one_image_is_refused_at_start(workspace, run_cli):
    args = ["train", "--stage", "general1", "--out", str(workspace / "runs" / "short"), "data.max_length=40"]
    result = run_cli(*args, cwd=workspace, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "data.max_length 40 leaves no room for text beside one image" in result.stderr
    assert "first batch" not in result.stdout  # refused before training began


def test_samples_longer_than_max_length_are_left_out_and_listed(workspace, run_cli):
    """One image takes 306 positions in the tiny profile and the questions 30 to 70 more: at
    345 truncation would cut the reply of about half the samples (before: a stage that stops
    on "no trained tokens", again on --resume)."""
    out = workspace / "runs" / "too-long"
    args = ["train", "--stage", "general1", "--out", str(out), "data.max_length=345", "max_steps=2"]
    result = run_cli(*args, "global_batch=2", "micro_batch=2", cwd=workspace)
    listed = [json.loads(line) for line in (out / "too_long.jsonl").read_text().splitlines()]
    assert listed and all(r["reason"] == "too_long" and r["length"] > r["max_length"] == 345 for r in listed)
    assert f"{len(listed)} sample(s) longer than data.max_length 345" in result.stdout
    assert len(_losses(out)) == 2
