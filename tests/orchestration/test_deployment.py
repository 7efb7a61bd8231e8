"""The README's deployment commands against a real Prefect server on 127.0.0.1: create the
process pool, deploy from prefect.yaml, start a worker, `prefect deployment run --watch`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

PREFECT = str(Path(sys.executable).parent / "prefect")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(args: list[str], root: Path, env: dict, log: Path) -> subprocess.Popen:
    # A session of its own, so stopping it stops the processes it started too.
    return subprocess.Popen(
        args, cwd=root, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_healthy(api: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy after {timeout}s: {log.read_text()[-3000:]}")


def _prefect(*args: str, root: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([PREFECT, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_prefect_deployment_run_watch_trains_evaluates_and_registers(tmp_path, kit):
    root = kit.workspace(tmp_path / "checkout")
    port = _free_port()
    env = {**kit.env(root), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    server = _start(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], root, env, tmp_path / "server.log"
    )
    worker = None
    try:
        _wait_healthy(env["PREFECT_API_URL"], server, tmp_path / "server.log")
        _prefect("work-pool", "create", "dragonfly", "--type", "process", "--overwrite", root=root, env=env)
        deployed = _prefect("--no-prompt", "deploy", "--all", root=root, env=env)
        assert "dragonfly-pipeline/tiny" in deployed.stdout
        worker = _start(
            [PREFECT, "worker", "start", "--pool", "dragonfly", "--type", "process"], root, env, tmp_path / "worker.log"
        )
        params = {"stages": ["general1", "general2"], "overrides": kit.budget, "eval_limit": 4}
        run = subprocess.run(
            [
                PREFECT,
                "deployment",
                "run",
                "dragonfly-pipeline/tiny",
                "--params",
                json.dumps(params),
                "--watch",
                "--watch-timeout",
                "600",
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=700,
        )
        assert run.returncode == 0, run.stdout[-3000:] + (tmp_path / "worker.log").read_text()[-5000:]
        assert "Completed" in run.stdout
    finally:
        if worker is not None:
            _stop(worker)  # the worker before the server, or the server waits for it
        _stop(server)
    assert (root / "runs/tiny/general2/final/config.json").is_file()
    assert json.loads((root / "eval/general/summary.json").read_text())["synth_general"]["accuracy"] >= 0
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    assert int(client.get_model_version_by_alias("dragonfly", "candidate").version) == 1
