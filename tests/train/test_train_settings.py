"""`dragonfly train --set` reaches any key of the profile and the data section."""

import json


def test_train_set_changes_the_model_layout_and_the_data_root(workspace, run_cli, tmp_path):
    out = tmp_path / "run"
    run_cli(
        "train",
        "--stage",
        "general1",
        "--out",
        str(out),
        "--set",
        "model.layout.select_k=2",
        "--set",
        "model.layout.strategy=global",
        "max_steps=1",
        "save_every=1",
        cwd=workspace,
    )
    config = json.loads((out / "final" / "config.json").read_text())
    assert (config["select_k"], config["strategy"]) == (2, "global")

    moved = tmp_path / "nowhere"
    failed = run_cli(
        "train",
        "--stage",
        "general1",
        "--out",
        str(tmp_path / "run2"),
        "--set",
        f"data.out_dir={moved}",
        "max_steps=1",
        cwd=workspace,
        check=False,
    )
    assert failed.returncode == 1 and str(moved) in failed.stderr
