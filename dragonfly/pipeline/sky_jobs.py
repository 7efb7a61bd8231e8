"""A pipeline stage as a SkyPilot managed job, waited for: the flow's ``train_on="sky"``.

SkyPilot cannot share the training environment (its click pin, docs/sky.md), so it is a
command here, ``.venv-sky/bin/sky`` from ``make sky``, never an import. A stage is
``sky jobs launch sky/train-managed.yaml`` detached, then ``sky jobs queue -o json`` polled
until the job ends: a detached launch does not hold a log stream open for the 27 hours of a
general2, and a flow retried after a crash finds its job still running by name and waits for
it instead of launching a second one. Recoveries (preemptions) are SkyPilot's, inside the
job; the flow only reports them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, fields
from pathlib import Path

from dragonfly.errors import DragonflyError

# SkyPilot 0.14.1's ManagedJobStatus, split as its is_terminal() / is_failed() split it
# (tests/test_sky_flow.py checks these sets against the installed SkyPilot).
ACTIVE = frozenset({"PENDING", "SUBMITTED", "STARTING", "RUNNING", "WINDING_DOWN", "RECOVERING", "CANCELLING"})
FAILED = frozenset({"FAILED", "FAILED_SETUP", "FAILED_PRECHECKS", "FAILED_NO_RESOURCE", "FAILED_CONTROLLER"})
ENDED = frozenset({"SUCCEEDED", "CANCELLED", *FAILED})
TRAIN_TASK = "sky/train-managed.yaml"
EVAL_TASK = "sky/eval.yaml"
# What `sky jobs queue -o json` says when the jobs controller has never run: no job, not an error.
NO_JOBS = "No in-progress managed jobs"
JOB_ID = re.compile(r"Managed Job ID: (\d+)")


class SkyJobError(DragonflyError):
    """A managed job that failed, or a ``sky`` command that did."""


@dataclass(frozen=True)
class SkyTarget:
    """Where and how the flow's stages run on SkyPilot (the flow parameter ``sky``).

    ``data_bucket``/``ckpt_bucket``: the task files' DATA_BUCKET and CKPT_BUCKET (docs/sky.md).
    ``mirror``: a local folder where the checkpoint bucket is visible (a mount or a sync);
    with it the flow registers each track's model from there, without it registration is
    left to the user. ``secrets``: names only; ``sky`` reads their values from this
    process's environment."""

    data_bucket: str
    ckpt_bucket: str
    num_nodes: int = 1
    mirror: str | None = None
    sky: str = ".venv-sky/bin/sky"
    infra: str | None = None
    use_spot: bool | None = None
    secrets: tuple[str, ...] = ("HF_TOKEN", "MLFLOW_TRACKING_URI")
    poll_seconds: float = 60.0

    @classmethod
    def from_dict(cls, values: dict | None) -> SkyTarget:
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        if unknown := sorted(set(values) - set(known)):
            raise DragonflyError(f"unknown sky setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        if missing := [k for k in ("data_bucket", "ckpt_bucket") if not values.get(k)]:
            raise DragonflyError(
                f"train_on=sky needs sky.{' and sky.'.join(missing)}",
                hint="e.g. --sky data_bucket=s3://my-dragonfly-data --sky ckpt_bucket=my-dragonfly-runs",
            )
        try:  # values from a command line are strings; from a deployment's JSON, typed already
            for key, kind in (("num_nodes", int), ("poll_seconds", float)):
                if key in values:
                    values[key] = kind(values[key])
        except ValueError as err:
            raise DragonflyError(f"sky setting: {err}") from None
        if isinstance(values.get("use_spot"), str):
            values["use_spot"] = {"true": True, "false": False}.get(values["use_spot"].lower(), values["use_spot"])
        if isinstance(values.get("secrets"), str):
            values["secrets"] = [name for name in values["secrets"].split(",") if name]
        if "secrets" in values:
            values["secrets"] = tuple(values["secrets"])
        return cls(**values)


def job_name(profile: str, what: str) -> str:
    return f"dragonfly-{profile}-{what}"


def stage_args(stage: str, overrides: list[str]) -> list[str]:
    """The flow's ``--set`` overrides as the stage overrides of sky/launch.py (TRAIN_ARGS):
    ``stages.<stage>.KEY=VALUE`` becomes ``KEY=VALUE`` for that stage. Any other key would
    be dropped on the nodes, which read params.yaml from the synced checkout: an error."""
    mine, prefix = [], "stages."
    for item in overrides:
        key = item.split("=", 1)[0]
        if not key.startswith(prefix) or key.count(".") < 2:
            raise DragonflyError(
                f"override {item!r} is not passed to SkyPilot: only stages.<stage>.KEY=VALUE is",
                hint="edit params.yaml instead; the nodes read it from the synced checkout",
            )
        if any(c.isspace() for c in item):  # TRAIN_ARGS is split on whitespace on the node
            raise DragonflyError(f"override {item!r} holds whitespace, which TRAIN_ARGS cannot carry")
        if key.startswith(f"{prefix}{stage}.") or key.startswith(f"{prefix}defaults."):
            mine.append(item.split(".", 2)[2])
    return mine


def launch_argv(
    target: SkyTarget, task_file: str, name: str, envs: dict[str, str], nodes: bool = True, secrets=None
) -> list[str]:
    """``sky jobs launch``, detached and unattended (``-y -d``): values through ``--env``,
    secrets by name only (never a value on a command line, where ``ps`` shows it)."""
    argv = [target.sky, "jobs", "launch", task_file, "-n", name, "-y", "-d"]
    if nodes and target.num_nodes != 1:
        argv += ["--num-nodes", str(target.num_nodes)]
    if target.infra:
        argv += ["--infra", target.infra]
    if target.use_spot is not None:
        argv.append("--use-spot" if target.use_spot else "--no-use-spot")
    envs = {"DATA_BUCKET": target.data_bucket, "CKPT_BUCKET": target.ckpt_bucket, **envs}
    for key, value in envs.items():
        argv += ["--env", f"{key}={value}"]
    for secret in target.secrets if secrets is None else secrets:
        argv += ["--secret", secret]
    return argv


def _sky(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    if not Path(argv[0]).is_file() and "/" in argv[0]:
        raise SkyJobError(f"SkyPilot not found at {argv[0]}", hint="`make sky` creates it (docs/sky.md)")
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as err:
        raise SkyJobError(f"SkyPilot not found: {argv[0]}", hint="`make sky` creates .venv-sky/bin/sky") from err


def _last_line(result: subprocess.CompletedProcess) -> str:
    """SkyPilot's own message: its last line naming an error (it prints progress to both streams)."""
    lines = [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"(Error|error)\b", line)]
    return (errors or lines or [f"exit status {result.returncode}"])[-1]


def queue(target: SkyTarget) -> list[dict]:
    """Every managed job of this user, as ``sky jobs queue -o json`` gives them."""
    result = _sky([target.sky, "jobs", "queue", "-o", "json", "--all"])
    if result.returncode != 0:
        if NO_JOBS in result.stderr + result.stdout:
            return []
        raise SkyJobError(f"sky jobs queue failed: {_last_line(result)}")
    return json.loads(result.stdout)


def unset_secrets(names, environ=os.environ) -> list[str]:
    """The secrets ``sky`` would refuse to launch without (it reads them from this environment)."""
    return [name for name in names if name not in environ]


def launch(argv: list[str]) -> int:
    result = _sky(argv, timeout=3600)  # uploads the checkout and starts the controller
    if result.returncode != 0:
        raise SkyJobError(f"sky jobs launch failed: {_last_line(result)}", hint="`sky check` lists the usable clouds")
    found = JOB_ID.search(result.stdout + result.stderr)
    if found is None:
        raise SkyJobError(f"sky jobs launch printed no job ID: {_last_line(result)}")
    return int(found.group(1))


def wait(job_id: int, name: str, status_of, log=print, sleep=time.sleep, poll: float = 60.0) -> dict:
    """Poll ``status_of(job_id)`` (a queue record or None) until the job ends; returns its
    last record, or raises naming the status, SkyPilot's reason and the commands to read
    the logs. Each change of status and each recovery is logged once."""
    seen = None
    while True:
        record = status_of(job_id)
        if record is None:
            raise SkyJobError(f"managed job {job_id} ({name}) is not in `sky jobs queue` any more")
        status, recoveries = record.get("status"), record.get("recovery_count") or 0
        if (status, recoveries) != seen:
            after = f" after {recoveries} recover{'y' if recoveries == 1 else 'ies'}" if recoveries else ""
            log(f"SkyPilot job {job_id} ({name}): {status}{after}")
            seen = (status, recoveries)
        if status == "SUCCEEDED":
            return record
        if status in ENDED:
            reason = record.get("failure_reason") or record.get("details")
            raise SkyJobError(
                f"managed job {job_id} ({name}) ended {status}" + (f": {reason}" if reason else ""),
                hint=f"sky jobs logs {job_id}  (the controller's: sky jobs logs --controller {job_id})",
            )
        sleep(poll)


def run_job(
    target: SkyTarget, task_file: str, name: str, envs: dict[str, str], log=print, nodes: bool = True, secrets=None
) -> dict:
    """Launch ``task_file`` as the managed job ``name`` (or wait for the one of that name
    still running, after a flow retry) and wait for it to succeed."""
    if not Path(task_file).is_file():
        raise SkyJobError(f"{task_file} not found: run the flow from the repository root (sky/ is there)")

    def status_of(job_id: int) -> dict | None:
        return next((r for r in queue(target) if r.get("job_id") == job_id), None)

    secrets = target.secrets if secrets is None else secrets
    if missing := unset_secrets(secrets):
        raise SkyJobError(
            f"secret {', '.join(missing)} not set in this environment (SkyPilot reads the value from it)",
            hint="export it (empty is allowed: MLFLOW_TRACKING_URI=), or name fewer: --sky secrets=MLFLOW_TRACKING_URI",
        )
    running = [r for r in queue(target) if r.get("job_name") == name and r.get("status") in ACTIVE]
    if running:
        job_id = int(running[0]["job_id"])
        log(f"SkyPilot job {job_id} ({name}) is already running: waiting for it")
    else:
        argv = launch_argv(target, task_file, name, envs, nodes, secrets)
        log(f"launching: {shlex.join(argv)}")
        job_id = launch(argv)
    return wait(job_id, name, status_of, log, poll=target.poll_seconds)


def train_stage(target: SkyTarget, stage: str, profile: str, params: str, overrides: list[str], log=print) -> str:
    """One training stage on SkyPilot; returns its ``final/`` on the checkpoint bucket."""
    envs = {"STAGE": stage, "PROFILE": profile, "PARAMS": params, "TRAIN_ARGS": " ".join(stage_args(stage, overrides))}
    run_job(target, TRAIN_TASK, job_name(profile, stage), envs, log)
    return f"{target.ckpt_bucket}/runs/{profile}/{stage}/final"


def evaluate_stage(target: SkyTarget, stage: str, profile: str, benchmarks: list[str], log=print) -> dict | None:
    """``dragonfly eval`` of a stage's model on SkyPilot (sky/eval.yaml); returns the
    metrics from the mirror when there is one, else None (they are on the bucket)."""
    envs = {"MODEL_STAGE": stage, "PROFILE": profile, "BENCHMARK": " ".join(benchmarks) or "all"}
    secrets = [s for s in target.secrets if s != "HF_TOKEN"]  # the model comes from the bucket, not the Hub
    run_job(target, EVAL_TASK, job_name(profile, f"eval-{stage}"), envs, log, nodes=False, secrets=secrets)
    if target.mirror is None:
        return None
    summary = Path(target.mirror) / "eval" / stage / "summary.json"
    if not summary.is_file():
        raise SkyJobError(f"{summary} not found although the eval job succeeded", hint="is sky.mirror the bucket?")
    return json.loads(summary.read_text())


def mirrored_model(target: SkyTarget, profile: str, stage: str) -> Path | None:
    """The stage's ``final/`` as the mirror shows it (None without a mirror)."""
    return None if target.mirror is None else Path(target.mirror) / "runs" / profile / stage / "final"
