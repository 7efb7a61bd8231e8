"""docs/img/demo.png: the demo page (`dragonfly demo`) after an answer, as a visitor sees it.

    .venv/bin/python scripts/demo_screenshot.py --model models:/dragonfly@champion

Starts `dragonfly demo` on a free port, uploads the image (default: scikit-image's
astronaut photograph) in Debian's chromium (`make browser`), asks, waits for the answer and
the zoom picture, and saves a screenshot of the whole page.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image
from playwright.sync_api import sync_playwright

BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
# Headless, as root on a server, with nothing fetched behind the page's back.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="as `dragonfly demo --model` takes it")
    parser.add_argument("--image", type=Path, help="PNG or JPEG to upload (default: the astronaut)")
    parser.add_argument("--question", default="What is in the image?")
    parser.add_argument("--out", type=Path, default=Path("docs/img/demo.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image or astronaut(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [str(BIN / "dragonfly"), "demo", "--model", args.model, "--port", str(port)], start_new_session=True
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(server, url)
            shoot(url, image, args.question, args.out)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    print(f"wrote {args.out}")


def astronaut(folder: Path) -> Path:
    from skimage import data

    path = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def wait_until_up(server: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"dragonfly demo exited with {server.returncode}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    sys.exit(f"the page did not come up in {timeout:.0f} s")


def shoot(url: str, image: Path, question: str, out: Path) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.locator("input[type=file]").set_input_files(image)
        page.get_by_label(f"Remove {image.name}").wait_for()  # uploaded: the form may be sent
        page.get_by_label("Question").fill(question)
        page.get_by_role("button", name="Answer").click()
        page.locator(".st-key-answer").wait_for()
        page.wait_for_function("() => document.querySelector('[data-testid=stImage] img')?.naturalWidth > 0")
        # The page scrolls inside Streamlit's main block, not the document: grow the window
        # to the block's height so the shot holds the whole page.
        height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
        page.set_viewport_size({"width": 1280, "height": height})
        out.parent.mkdir(parents=True, exist_ok=True)
        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        browser.close()
    # 256 colours: the page's flat colours survive and the file, kept in git, is a third the size.
    shot.quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)


if __name__ == "__main__":
    main()
