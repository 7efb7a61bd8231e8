"""The pipeline declared once (dragonfly/pipeline/declaration.py): the flow's order, dvc.yaml,
ablation/dvc.yaml and sky/pipeline.yaml follow it, and the code a step runs is its import
closure. In-process and fast: the real `dvc repro` and flow runs are test_dvc.py and
test_flow_runs.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from dragonfly.fingerprint import code_version
from dragonfly.pipeline import declaration, generate

REPO = Path(__file__).resolve().parents[2]


def _flow_module():
    spec = importlib.util.spec_from_file_location("dragonfly_flow", REPO / "flows/dragonfly_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _derived() -> dict:
    return {path: yaml.safe_load_all(text) for path, text in generate.derived(REPO, REPO / "params.yaml").items()}


def test_the_committed_files_are_derived_from_the_declaration():
    assert generate.stale(REPO, REPO / "params.yaml") == [], "run `dragonfly pipeline-files`"
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert list(stages) == [s.name for s in declaration.STEPS]
    # med1 reads general2's model (params.yaml: init_from) and its mixture's data folders.
    assert stages["med1"]["deps"][-5:] == [
        "runs/${dvc.profile}/general2/final",
        "runs/${dvc.profile}/general2/fingerprint.json",
        "${data.out_dir}/tiny_med",
        "${data.root}/synth/biomedical",
        "${data.root}/synth/general",
    ]


def test_editing_the_declaration_moves_the_flow_dvc_and_skypilot_together(monkeypatch):
    """Drop med3 and let the med track end at med2: all three follow, with no other edit."""
    flow = _flow_module()
    profile_stages = {"general1": {}, "general2": {}, "med1": {}, "med2": {}, "med3": {}}
    before = flow._wanted(None, profile_stages)
    steps = [s for s in declaration.STEPS if s.name != "med3"]
    steps = [dataclasses.replace(s, evaluates="med2") if s.name == "eval-med" else s for s in steps]
    monkeypatch.setattr(declaration, "STEPS", tuple(steps))

    assert before == ["general1", "general2", "med1", "med2", "med3"]
    assert flow._wanted(None, profile_stages) == ["general1", "general2", "med1", "med2"]
    assert declaration.evaluation_after("med2").track == "med" and declaration.evaluation_after("med3") is None
    derived = _derived()
    (dvc,) = derived["dvc.yaml"]
    assert "med3" not in dvc["stages"]
    assert "runs/${dvc.profile}/med2/final" in dvc["stages"]["eval-med"]["deps"]
    assert "--model runs/${dvc.profile}/med2/final" in dvc["stages"]["eval-med"]["cmd"]
    _, *sky = derived["sky/pipeline.yaml"]
    assert [task["name"] for task in sky] == ["general1", "general2", "med1", "med2"]
    assert [task["envs"]["STAGE"] for task in sky] == ["general1", "general2", "med1", "med2"]


def test_a_stage_input_in_params_reaches_dvc_and_skypilot(tmp_path):
    """What a stage starts from is configuration: med1 from general1 changes its deps."""
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    for profile in ("tiny", "paper"):
        tree["profiles"][profile]["stages"]["med1"]["init_from"] = "general1"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tree))
    shutil.copytree(REPO / "sky", tmp_path / "sky")
    (dvc,) = yaml.safe_load_all(generate.dvc_yaml(params))
    assert "runs/${dvc.profile}/general1/final" in dvc["stages"]["med1"]["deps"]
    assert "runs/${dvc.profile}/general2/final" not in dvc["stages"]["med1"]["deps"]
    sky = generate.sky_pipeline((REPO / generate.SKY_TEMPLATE).read_text(), params)
    assert "# med1: the tower and projector, on biomedical captions (trains vision, projector; from general1)." in sky


def test_a_steps_code_is_its_import_closure():
    train, tower, evaluate = declaration.code("train"), declaration.code("tower"), declaration.code("eval")
    # What the trainer imports, however deep: the zoom selection, the checkpoint format.
    assert {"train/trainer.py", "model/zoom.py", "train/checkpoint.py", "safe_load.py"} <= set(train)
    assert {"eval/evaluator.py", "metrics/vqa.py", "model/zoom.py"} <= set(evaluate)
    assert "train/backbone.py" in tower and "model/modeling.py" not in tower
    # Nothing around the work: an edit to the CLI, the pipeline or the registry retrains nothing.
    for files in (train, tower, evaluate):
        assert not [f for f in files if f.startswith(("cli/", "pipeline/")) or f in ("registry.py", "report.py")]
    assert code_version(train) != code_version(tower)


def test_dvc_deps_name_folders_only_when_the_step_runs_all_of_them():
    (dvc,) = _derived()["dvc.yaml"]
    deps = dvc["stages"]["general1"]["deps"]
    assert "dragonfly/data/sources" in deps  # every converter: the mixture loader dispatches to all
    assert "dragonfly/train" not in deps and "dragonfly/train/trainer.py" in deps  # not backbone.py
    code = [d.removeprefix("dragonfly/") for d in deps if d.startswith("dragonfly/")]
    covered = {f for f in declaration.code("train") if any(f == c or f.startswith(f"{c}/") for c in code)}
    assert covered == set(declaration.code("train"))


def test_pipeline_files_check_fails_on_a_stale_copy_and_the_command_fixes_it(tmp_path):
    for path in ("params.yaml", generate.SKY_TEMPLATE, *generate.GENERATED):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, tmp_path / path)
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text(dvc.read_text().replace("      - dragonfly/model/zoom.py\n", "", 1))
    cli = [sys.executable, "-m", "dragonfly.cli", "pipeline-files"]
    check = subprocess.run([*cli, "--check"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 1
    assert "stale: dvc.yaml; run `dragonfly pipeline-files`" in check.stderr
    fixed = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True)
    assert fixed.returncode == 0 and "rewrote dvc.yaml" in fixed.stdout
    assert dvc.read_text() == (REPO / "dvc.yaml").read_text()


def test_every_declared_stage_is_in_the_shipped_profiles():
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    for profile in ("tiny", "paper"):
        assert set(declaration.train_stages()) <= set(tree["profiles"][profile]["stages"]), profile
