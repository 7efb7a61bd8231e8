"""The demo page (`dragonfly demo`, README "Demo page") in a real browser: Debian's chromium,
driven by Playwright, uploads an image and asks; the page shows the answer `answer()` gives
on the same image and the zoom picture, redraws it under another selection rule, and answers
a file that is not an image with one error line, then goes on answering."""

from __future__ import annotations

import contextlib
import io
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
import pytest
import requests
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from dragonfly.inference import answer
from dragonfly.registry import RegistryTrack, register

pytestmark = pytest.mark.integration  # a real server and a browser: not in `make test-fast`

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
METRIC = "synth_general.vqa_open_exact_match"
CHROMIUM = "/usr/bin/chromium"  # Debian's package (`make browser`), not Playwright's download
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUESTION = "Which colour is the square?"  # not the page's default question: the typed one is asked
START_TIMEOUT = 120
WAIT_MS = 60_000
IMAGE = "[data-testid='stImage'] img"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def readme_command(port: int) -> list[str]:
    """The README's demo command ("Demo page"), on this test's port."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Demo page\n", 1)[1].split("\n## ", 1)[0]
    [line] = [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL) if "dragonfly demo" in b]
    args = shlex.split(line, comments=True)
    assert args[0] == ".venv/bin/dragonfly"
    return [str(BIN / "dragonfly"), *args[1:], "--port", str(port)]


@pytest.fixture(scope="module")
def demo(saved_tiny, tmp_path_factory):
    """The README's `dragonfly demo --model models:/dragonfly@champion`, the tiny model
    registered as the champion of a fresh store, in its own process group, stopped after
    the module; yields the page's URL."""
    root = tmp_path_factory.mktemp("demo")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        register(saved_tiny, {METRIC: 0.5}, RegistryTrack(model="dragonfly", metric=METRIC), uri=uri)
    port = free_port()
    log = root / "demo.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            readme_command(port),
            cwd=root,
            env={**os.environ, "MLFLOW_TRACKING_URI": uri},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(process, url, log)
        yield url
    finally:
        stop(process)


def wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dragonfly demo exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    pytest.fail(f"the page did not come up in {START_TIMEOUT} s:\n{log.read_text()[-4000:]}")


def stop(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def browser():
    # A failure, not a skip: CI installs chromium (`make browser`), and a skipped browser
    # test would pass a page nobody looked at.
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, demo):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    page.goto(demo)
    yield page
    page.close()


def ask(page, name: str, data: bytes, question: str = QUESTION) -> None:
    """Upload ``data`` as the file ``name``, type the question, press Answer."""
    page.locator("input[type=file]").set_input_files(files=[{"name": name, "mimeType": "image/png", "buffer": data}])
    # The file travels in its own request: the button submits the form before it has arrived
    # unless we wait, as a person does, for the chip to offer "Remove" instead of "Cancel upload".
    page.get_by_label(f"Remove {name}").wait_for()
    page.get_by_label("Question").fill(question)
    page.get_by_role("button", name="Answer").click()


def shown(page, selector: str, holding: str | None = None) -> str:
    """The text of ``selector`` (the one ``holding`` that text) once it shows; a failure
    naming what the page shows instead."""
    element = page.locator(selector, has_text=holding)
    try:
        element.wait_for()
    except PlaywrightTimeout:
        pytest.fail(
            f"no {selector} {holding or ''} after {WAIT_MS / 1000:.0f} s; the page shows:\n{page.inner_text('body')}"
        )
    return element.text_content()


def shown_picture(page, other_than: str | None = None) -> str:
    """The zoom picture's src once it is loaded (and differs from ``other_than``)."""
    try:
        page.wait_for_function(
            "([sel, old]) => { const i = document.querySelector(sel);"
            " return i && i.complete && i.naturalWidth > 0 && i.src !== old; }",
            arg=[IMAGE, other_than],
        )
    except PlaywrightTimeout:
        pytest.fail(f"no new zoom picture after {WAIT_MS / 1000:.0f} s (the last: {other_than})")
    return page.locator(IMAGE).get_attribute("src")


def test_the_page_answers_and_redraws_the_zoom_per_rule(page, tiny, photo):
    [want] = answer(*tiny, [photo], [QUESTION])
    ask(page, "photo.png", png(photo))
    assert shown(page, ".st-key-answer") == want.text
    first = shown_picture(page)
    first_bytes = page.request.get(first).body()
    assert Image.open(io.BytesIO(first_bytes)).width > 0
    page.get_by_text("global / least similar", exact=True).click()
    second = shown_picture(page, other_than=first)
    assert page.request.get(second).body() != first_bytes
    assert page.locator(".st-key-answer").text_content() == want.text  # the answer stays the model's own


def test_a_file_that_is_not_an_image_is_one_error_line_then_the_page_answers(page, tiny, photo):
    page.get_by_role("button", name="Answer").click()
    shown(page, "[data-testid='stAlert']", holding="No image yet")
    ask(page, "notes.png", b"these bytes are not an image")
    line = shown(page, "[data-testid='stAlert']", holding="not a PNG or JPEG image").strip()
    assert line.startswith("the upload: ") and "\n" not in line, line
    assert page.locator("[data-testid='stException']").count() == 0  # no traceback on the page
    [want] = answer(*tiny, [photo], [QUESTION])
    ask(page, "photo.png", png(photo))
    assert shown(page, ".st-key-answer") == want.text
    assert page.locator("[data-testid='stAlert']").count() == 0
    shown_picture(page)


def test_a_model_that_is_not_there_is_refused_before_a_page_starts(tmp_path):
    from typer.testing import CliRunner

    from dragonfly.cli import app

    result = CliRunner().invoke(app, ["demo", "--model", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "nope not found" in str(result.exception)
