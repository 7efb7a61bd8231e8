"""A transient failure mid-training is retried by Prefect and the retry resumes from the
last checkpoint; an expected error is not retried."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.mark.slow
def test_a_disk_hiccup_mid_training_is_retried_and_resumes(tmp_path, kit, monkeypatch):
    from dragonfly.train import checkpoint

    root = kit.enter(kit.workspace(tmp_path / "checkout"), monkeypatch)
    commit, calls = checkpoint.commit, []

    def flaky_commit(tmp, state, *args, **kwargs):  # the second checkpoint write fails once, like a full disk
        calls.append(state["step"])
        if len(calls) == 2:
            raise OSError(28, "No space left on device (injected)")
        return commit(tmp, state, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "commit", flaky_commit)
    flows = kit.flows(root)
    with prefect_test_harness():
        summary = flows.dragonfly_pipeline(
            "tiny", ["general1"], ["stages.general1.max_steps=3", "stages.general1.save_every=1"], register_models=False
        )
    assert summary["stages"] == ["general1"]
    assert (root / "runs/tiny/general1/final/config.json").is_file()
    # Step 1 committed, step 2 failed; the retry resumed after step 1 and wrote 2 and 3.
    assert calls == [1, 2, 2, 3]


def test_expected_errors_are_not_retried(kit, tmp_path):
    from prefect.states import Failed

    from dragonfly.config import ConfigError

    flows = kit.flows(kit.workspace(tmp_path / "checkout"))
    assert not flows.retry_unless_expected(None, None, Failed(data=ConfigError("bad key")))
    assert flows.retry_unless_expected(None, None, Failed(data=OSError("disk")))
    from dragonfly.train.checkpoint import CheckpointWriteError  # one line for a person, retried by the flow

    assert flows.retry_unless_expected(None, None, Failed(data=CheckpointWriteError("disk full while saving")))
