"""The flow's ``train_on="sky"``: training stages and evaluations as SkyPilot managed jobs,
each waited for (dragonfly/pipeline/sky_jobs.py).

What SkyPilot says is read from the installed SkyPilot itself (.venv-sky): its job statuses,
its queue record's fields, its launch message. The flow then runs for real from the
repository root, as a user types it, against the real `sky` command; with no cloud here the
launch fails, and the test checks that the failure is SkyPilot's own message in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dragonfly.errors import DragonflyError
from dragonfly.pipeline import sky_jobs
from dragonfly.pipeline.sky_jobs import SkyJobError, SkyTarget

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

REPO = Path(__file__).resolve().parents[1]
TARGET = SkyTarget(data_bucket="s3://dragonfly-test-data", ckpt_bucket="dragonfly-test-runs")

FACTS = r"""
import json
from sky.jobs.state import ManagedJobStatus
from sky.schemas.api.responses import ManagedJobRecord
from sky.utils import ux_utils
print(json.dumps({
    "statuses": {s.value: [s.is_terminal(), s.is_failed()] for s in ManagedJobStatus},
    "fields": sorted(ManagedJobRecord.model_fields),
    "hint": ux_utils.command_hint_messages(ux_utils.CommandHintType.MANAGED_JOB, job_id="17"),
}))
"""


def test_statuses_fields_and_job_id_are_skypilots_own(sky_env):
    done = subprocess.run([str(sky_env), "-c", FACTS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    facts = json.loads(done.stdout)
    statuses = facts["statuses"]
    assert set(statuses) == sky_jobs.ACTIVE | sky_jobs.ENDED
    assert {s for s, (terminal, _) in statuses.items() if terminal} == sky_jobs.ENDED
    assert {s for s, (_, failed) in statuses.items() if failed} == sky_jobs.FAILED
    assert {"job_id", "job_name", "status", "recovery_count", "failure_reason", "details"} <= set(facts["fields"])
    assert sky_jobs.JOB_ID.search(facts["hint"]).group(1) == "17"


def test_a_stage_launch_line_carries_values_by_env_and_secrets_by_name(monkeypatch):
    target = SkyTarget.from_dict(
        {"data_bucket": "s3://d", "ckpt_bucket": "c", "num_nodes": "2", "use_spot": "false", "secrets": "HF_TOKEN"}
    )
    argv = sky_jobs.launch_argv(target, sky_jobs.TRAIN_TASK, "dragonfly-paper-general2", {"STAGE": "general2"})
    assert argv[:8] == [".venv-sky/bin/sky", "jobs", "launch", "sky/train-managed.yaml"] + [
        "-n",
        "dragonfly-paper-general2",
        "-y",
        "-d",
    ]
    assert "--no-use-spot" in argv
    rest = [a for a in argv[8:] if a != "--no-use-spot"]
    pairs = list(zip(rest[::2], rest[1::2], strict=True))
    assert ("--num-nodes", "2") in pairs
    assert {v for k, v in pairs if k == "--env"} >= {"DATA_BUCKET=s3://d", "CKPT_BUCKET=c", "STAGE=general2"}
    assert [v for k, v in pairs if k == "--secret"] == ["HF_TOKEN"]  # a name: sky reads the value itself

    sets = ["stages.general2.max_steps=50", "stages.defaults.save_every=10", "stages.general1.lr=1e-4"]
    assert sky_jobs.stage_args("general2", sets) == ["max_steps=50", "save_every=10"]
    with pytest.raises(DragonflyError, match="registry.general.metric"):
        sky_jobs.stage_args("general2", ["registry.general.metric=x"])  # the nodes would never see it
    with pytest.raises(DragonflyError, match="unknown sky setting.*bucket"):
        SkyTarget.from_dict({"data_bucket": "s3://d", "ckpt_bucket": "c", "bucket": "x"})
    with pytest.raises(DragonflyError, match="sky.ckpt_bucket"):
        SkyTarget.from_dict({"data_bucket": "s3://d"})
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(SkyJobError, match="secret HF_TOKEN not set"):  # before any `sky` command runs
        sky_jobs.run_job(TARGET, sky_jobs.TRAIN_TASK, "dragonfly-paper-general1", {}, log=lambda _: None)


def _records(*statuses: tuple[str, int]):
    """A status callable answering one queue record per poll, as `sky jobs queue` would."""
    polls = iter(statuses)

    def status_of(job_id):
        status, recoveries = next(polls)
        return {"job_id": job_id, "job_name": "j", "status": status, "recovery_count": recoveries}

    return status_of


def test_waiting_logs_each_change_and_recovery_and_fails_with_the_logs_command():
    lines, sleeps = [], []
    seq = [("PENDING", 0), ("RUNNING", 0), ("RUNNING", 0), ("RECOVERING", 1), ("RUNNING", 1), ("SUCCEEDED", 1)]
    record = sky_jobs.wait(7, "j", _records(*seq), lines.append, sleeps.append, poll=5)
    assert record["status"] == "SUCCEEDED" and sleeps == [5] * 5
    assert lines == [
        "SkyPilot job 7 (j): PENDING",
        "SkyPilot job 7 (j): RUNNING",
        "SkyPilot job 7 (j): RECOVERING after 1 recovery",
        "SkyPilot job 7 (j): RUNNING after 1 recovery",
        "SkyPilot job 7 (j): SUCCEEDED after 1 recovery",
    ]
    with pytest.raises(SkyJobError, match="ended FAILED_SETUP") as failed:
        sky_jobs.wait(8, "j", _records(("STARTING", 0), ("FAILED_SETUP", 0)), lines.append, sleeps.append)
    assert "sky jobs logs 8" in failed.value.hint
    with pytest.raises(SkyJobError, match="not in `sky jobs queue`"):
        sky_jobs.wait(9, "j", lambda _: None, lines.append, sleeps.append)


@pytest.fixture
def sky_home(tmp_path, sky_env):
    """A HOME of its own for SkyPilot's state (~/.sky) and the local API server it starts."""
    home = tmp_path / "home"
    home.mkdir()
    yield home
    subprocess.run(
        [str(REPO / ".venv-sky" / "bin" / "sky"), "api", "stop"],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        timeout=120,
    )


def test_the_flow_sends_a_stage_to_skypilot_and_reports_its_failure_in_one_line(sky_home, tmp_path):
    """From the repository root, as docs/sky.md says: the queue is read (empty, not an
    error), the launch runs, and with no cloud reachable SkyPilot's own error ends the flow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRAGONFLY_"))}
    env.update(HOME=str(sky_home), PREFECT_HOME=str(tmp_path / "prefect"), HF_TOKEN="x", MLFLOW_TRACKING_URI="")
    # Prefect's default (20 s) is short for a loaded 2-core machine: this test timed out once.
    env.update(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    cmd = [sys.executable, "flows/dragonfly_pipeline.py", "--profile", "paper", "--stage", "general1"]
    cmd += ["--train-on", "sky", "--sky", "data_bucket=s3://dragonfly-test-data", "--sky", "ckpt_bucket=test-runs"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    logs = done.stdout + done.stderr
    assert "launching: .venv-sky/bin/sky jobs launch sky/train-managed.yaml -n dragonfly-paper-general1" in logs
    assert "--env STAGE=general1" in logs and "--secret HF_TOKEN" in logs and "HF_TOKEN=x" not in logs
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: sky jobs launch failed: sky.exceptions."), errors
    assert "hint: `sky check`" in done.stderr
    assert not (REPO / "runs" / "paper").exists()  # nothing trained here
