"""`dragonfly ablate` on a user's own mixture (issue #26, item 3): the generic `vqa` benchmark
scores the mixture's test split without `--data`, and every input the ablation will need
(variants, their layouts, the mixture, each benchmark's data) is checked before the first
stage trains: a wrong one is one line, exit 1, and nothing written.

The data is `dragonfly data example-llava`'s layout at 10 images (32 training, 8 test
questions), read by the llava converter straight from the mixture; stages train 1–2 steps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dragonfly.data.config import DataConfig
from dragonfly.data.llava_example import write_example
from dragonfly.data.mixture import build_mixture

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ["baseline1", "dragonfly_least_similar"]
BUDGET = ["max_steps=1", "global_batch=2", "micro_batch=2", "save_every=100", "stages.general2.max_steps=2"]
LIMIT = 4


def _source(split: str) -> dict:
    return {"name": f"my_{split}", "format": "llava", "path": f"my_vqa/{split}.json"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """params.yaml with `my_vqa` (train + test) and `my_train_only` (no test split), both built."""
    root = tmp_path_factory.mktemp("own_ablate")
    data = root / "data"
    write_example(data / "my_vqa", images=10)
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["data"].update(root="data", out_dir="data/mixtures", synth=[])  # as a user's: relative
    tree["data"]["mixtures"] = {
        "my_vqa": {"sources": [_source("train"), _source("test")]},
        "my_train_only": {"sources": [_source("train")]},
    }
    tree["profiles"]["tiny"]["model"]["tiny"]["vision_from"] = None  # a random tower keeps this fast
    tree["ablations"]["broken"] = {"strategy": "zoom_everywhere"}
    cfg = DataConfig.from_dict(tree["data"])
    for name in tree["data"]["mixtures"]:
        build_mixture(cfg.mixture(name), data, data / "mixtures" / name)
    (root / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    return root


def _ablate(project: Path, monkeypatch, capsys, *args: str, variants=VARIANTS) -> tuple[int, str, str]:
    """The real `dragonfly ablate` (its entry point, so an error prints as a user sees it)."""
    from dragonfly.cli import main

    monkeypatch.chdir(project)
    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal: still one line per variant
    monkeypatch.delenv("DRAGONFLY_DEBUG", raising=False)
    argv = ["ablate", "--no-mlflow", "--no-progress", "--limit", str(LIMIT), "--batch-size", str(LIMIT)]
    argv += [a for v in variants for a in ("--variant", v)]
    with pytest.raises(SystemExit) as exited:
        main([*argv, *args])
    out, err = capsys.readouterr()
    return exited.value.code or 0, out, err


def test_vqa_scores_the_mixtures_test_split_without_data(project, monkeypatch, capsys) -> None:
    code, out, err = _ablate(
        project, monkeypatch, capsys, "--benchmark", "vqa", "--out", "ab", "data.mixture=my_vqa", *BUDGET
    )
    assert code == 0, err[-3000:]
    assert "vqa scored on data/mixtures/my_vqa (test split, 4 samples)" in out
    table = out[out.index("┏") :]
    header = " ".join(table[: table.index("┡")].split())  # the column names, wrapped or not
    for word in ("variant", "vqa", "exact_match", "×100", "distinct", "answers %", "visual", "tokens", "final loss"):
        assert word in header, header
    for name, tokens in zip(VARIANTS, (90, 306), strict=True):
        row = next(line for line in table.splitlines() if f" {name} " in line)
        cells = [c.strip() for c in re.split(r"[│┃|]", row) if c.strip()]
        assert cells[0] == name and cells[3] == str(tokens)
        assert all(re.fullmatch(r"\d+\.\d+", c) for c in (cells[1], cells[2], cells[4])), cells
    markdown = (project / "ab" / "ablation.md").read_text()
    assert "vqa on data/mixtures/my_vqa (test split, 4 samples)" in markdown
    assert len(re.findall(r"^\| vqa \| exact_match ×100 \| \d+\.\d \|", markdown, re.M)) == 2  # Tables 1 and 5
    for name in VARIANTS:
        metrics = yaml.safe_load((project / "ab" / name / "eval" / "vqa" / "metrics.json").read_text())
        assert metrics["n"] == LIMIT and "closed_n" in metrics  # scored as the generic VQA benchmark
        assert (project / "ab" / name / "general2" / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("args", "variants", "message"),
    [
        (
            ["--benchmark", "vqa", "--data", "no/such/data", "data.mixture=my_vqa"],
            VARIANTS,
            r"no data for benchmark 'vqa' at no/such/data: pass --data \(",
        ),
        (["--benchmark", "vqaa", "data.mixture=my_vqa"], VARIANTS, r"unknown benchmark 'vqaa' \(did you mean"),
        (
            ["--benchmark", "vqa", "data.mixture=my_train_only"],
            VARIANTS,
            r"benchmark 'vqa' found no samples in data/mixtures/my_train_only with split 'test'.*"
            r"my_train/train/vqa_\w+: \d+.*or --data for other data",
        ),
        (
            ["--benchmark", "vqa", "data.mixture=my_vqa"],
            ["baseline1", "broken"],
            r"ablation variant 'broken' \(ablations\.broken in params\.yaml\): .*strategy must be one of",
        ),
        (["data.mixture=my_vqa"], ["baseline1", "dragonfly_least_similr"], r"did you mean 'dragonfly_least_similar'"),
        (["--benchmark", "vqa", "data.mixture=not_built"], VARIANTS, r"not_built"),
    ],
    ids=["data-missing", "benchmark-unknown", "no-test-split", "bad-variant-setting", "variant-unknown", "no-mixture"],
)
def test_a_wrong_input_fails_before_anything_is_written(project, monkeypatch, capsys, args, variants, message) -> None:
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    code, out, err = _ablate(project, monkeypatch, capsys, "--out", "refused", *args, *BUDGET, variants=variants)
    assert code == 1
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("error: "), err  # a `hint:` line may follow
    assert re.search(message, lines[0]), lines[0]
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # no run folder, no checkpoint
