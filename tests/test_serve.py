"""The registered champion behind the real `mlflow models serve` (one server for the module):
the README's curl and Python calls get the answer `answer()` gives on the same image; every
bad body and every path gets a one-line 400, and the server goes on answering."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image
from serve_bodies import PATHS, bad_bodies, chat, data_url, encoded, image, text

from dragonfly.inference import answer
from dragonfly.registry import RegistryTrack, register

pytestmark = pytest.mark.integration  # a real server in a subprocess: not in `make test-fast`

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
METRIC = "synth_general.vqa_open_exact_match"
QUESTION = "What is in the image?"  # the README's question
START_TIMEOUT = 180


def readme_blocks(language: str) -> list[str]:
    """The ``language`` code blocks of the README's "Serve the model" section."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Serve the model\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int) -> list[str]:
    """The README's serve command, with this test's port; the README activates the venv
    first, which the test's environment does by putting its bin folder on PATH."""
    [block] = [b for b in readme_blocks("bash") if "models serve" in b]
    activate, line = block.strip().splitlines()
    assert activate.split("#")[0].strip() == "source .venv/bin/activate"
    args = shlex.split(line.replace("-p 5000", f"-p {port}"))
    assert args[0] == "mlflow"
    return args


def wait_until_up(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server did not answer /ping in {START_TIMEOUT} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def server(saved_tiny, tmp_path_factory):
    """The tiny model registered as models:/dragonfly@champion in a fresh sqlite store, served
    by `mlflow models serve` (its own process group, stopped after the module)."""
    root = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        register(saved_tiny, {METRIC: 0.5}, RegistryTrack(model="dragonfly", metric=METRIC), uri=uri)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # what `source .venv/bin/activate` does
    log = root / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            serve_command(port), cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, url, log)
        yield url, port
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (the CLI and the uvicorn it execs), then
    SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))


def expected(tiny, picture: Image.Image, max_tokens: int = 32) -> dict:
    [want] = answer(*tiny, [picture], [QUESTION], max_new_tokens=max_tokens)
    zoom = {
        "selected_tiles": want.selected_tiles,
        "medium_grid": list(want.medium_grid),
        "high_grid": list(want.high_grid),
    }
    return {"content": want.text, "custom_outputs": zoom}


def got(reply: dict) -> dict:
    return {"content": reply["choices"][0]["message"]["content"], "custom_outputs": reply["custom_outputs"]}


def post(url: str, body: dict) -> requests.Response:
    return requests.post(f"{url}/invocations", json=body, timeout=120)


def refused(reply: requests.Response, *words: str) -> str:
    assert reply.status_code == 400, (reply.status_code, reply.text[:500])
    message = reply.json()["message"]
    assert "\n" not in message and len(message) < 400, message  # one line, no echo of the request
    assert all(w in message for w in words), (words, message)
    return message


def test_the_readme_curl_gets_the_answer_of_answer(server, tiny, photo, tmp_path):
    url, port = server
    photo.save(tmp_path / "photo.png")
    [block] = [b for b in readme_blocks("bash") if "curl" in b]
    done = subprocess.run(
        ["bash", "-c", block.replace("127.0.0.1:5000", f"127.0.0.1:{port}")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["object"] == "chat.completion" and reply["model"] == "dragonfly"
    assert got(reply) == expected(tiny, photo)


def test_the_readme_python_client_and_a_jpeg(server, tiny, photo, tmp_path):
    url, port = server
    photo.save(tmp_path / "photo.png")
    [block] = [b for b in readme_blocks("python") if "requests.post" in b]
    done = subprocess.run(
        [sys.executable, "-c", block.replace("127.0.0.1:5000", f"127.0.0.1:{port}")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(expected(tiny, photo)["content"]), done.stdout

    jpeg = encoded(photo, "JPEG")
    reply = post(url, chat(text(QUESTION), image(data_url(jpeg, "image/jpeg")), max_tokens=8, temperature=0))
    assert reply.status_code == 200, reply.text[:500]
    sent = Image.open(io.BytesIO(jpeg)).convert("RGB")  # what the JPEG decodes to, not the PNG's pixels
    assert got(reply.json()) == expected(tiny, sent, 8)


def test_every_bad_body_is_a_one_line_400_and_the_server_goes_on(server, tiny, photo):
    url, _ = server
    readme_error = next(json.loads(b) for b in readme_blocks("json") if "error_code" in b)
    for name, body, words in bad_bodies(encoded(photo)):
        reply = post(url, body)
        refused(reply, *words)
        if name == "two images":
            assert reply.json() == readme_error  # the README shows the real reply
    good = post(url, chat(text(QUESTION), image(data_url(encoded(photo))), max_tokens=4))
    assert good.status_code == 200 and got(good.json()) == expected(tiny, photo, 4)


def test_no_path_in_any_field_is_opened(server, tiny, photo):
    url, _ = server
    for path in PATHS:
        refused(post(url, chat(text(QUESTION), image(path))), "the server", "data:image/png")
        frame = pd.DataFrame({"image": [path], "question": [QUESTION]})
        batch = requests.post(f"{url}/invocations", json={"dataframe_split": frame.to_dict(orient="split")}, timeout=60)
        refused(batch, "row 0 image")
    # The batch route itself works with the image inside the request.
    frame = pd.DataFrame({"image": [data_url(encoded(photo))], "question": [QUESTION]})
    batch = requests.post(f"{url}/invocations", json={"dataframe_split": frame.to_dict(orient="split")}, timeout=60)
    assert batch.status_code == 200, batch.text[:500]
    assert batch.json() == {"predictions": [expected(tiny, photo)["content"]]}
