"""Serving: the registered model behind `mlflow models serve` against in-process `answer()`.

The tiny model (seed 0) is registered in a throwaway sqlite store and served by MLflow's
scoring server (`--env-manager local`, 127.0.0.1). ``--clients`` threads each send
``--requests`` chat-completions bodies (a base64 PNG or JPEG of a real image shipped by
scikit-image, one question, greedy, ``--max-tokens``) one after another. The peer answers
the same requests one at a time in a fresh process: decode the same bytes, `answer()`.
Recorded: throughput, p50/p95 latency, peak memory (the server's whole process tree,
sampled with psutil; the peer's own peak RSS) and whether every answer matched the peer's.

    .venv/bin/python benchmarks/bench_serve.py [--clients 8 --requests 20]
    .venv/bin/python benchmarks/bench_serve.py --clients 2 --requests 2   # a smoke run
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUESTIONS = ["What is in the image?", "What colour is it?", "Is there a lesion?", "How many are there?"]
METRIC = "bench.score"


def request_bodies(count: int, max_tokens: int) -> list[dict]:
    """``count`` chat bodies cycling through five real images (PNG and JPEG) and four questions."""
    from PIL import Image
    from skimage import data

    images = [data.astronaut(), data.coffee(), data.chelsea(), data.retina(), data.immunohistochemistry()]
    encoded = []
    for i, pixels in enumerate(images):
        fmt, kind = ("PNG", "image/png") if i % 2 == 0 else ("JPEG", "image/jpeg")
        out = io.BytesIO()
        Image.fromarray(pixels).convert("RGB").save(out, format=fmt)
        encoded.append(f"data:{kind};base64,{base64.b64encode(out.getvalue()).decode()}")
    return [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]},
                        {"type": "image_url", "image_url": {"url": encoded[i % len(encoded)]}},
                    ],
                }
            ],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        for i in range(count)
    ]


def percentiles(latencies: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49], cuts[94]


# --- the peer: in-process answer(), in a process of its own ------------------------------


def peer(model_dir: str, bodies_file: str) -> None:
    """Answer every body with `answer()` one at a time; print the figures as JSON."""
    from dragonfly.inference import answer, load
    from dragonfly.serve.chat import parse_chat
    from dragonfly.serve.images import ImageRules

    bodies = json.loads(Path(bodies_file).read_text())
    model, processor = load(model_dir)
    first = parse_chat(bodies[0], ImageRules())
    answer(model, processor, [first.image], [first.question], first.max_tokens)  # warm-up
    texts, latencies = [], []
    start = time.perf_counter()
    for body in bodies:
        began = time.perf_counter()
        asked = parse_chat(body, ImageRules())  # the same decoding the server does
        [done] = answer(model, processor, [asked.image], [asked.question], asked.max_tokens)
        latencies.append(time.perf_counter() - began)
        texts.append(done.text)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    print(json.dumps({"wall": wall, "latencies": latencies, "texts": texts, "peak_bytes": peak}))


# --- the server -------------------------------------------------------------------------


def register_tiny(root: Path) -> str:
    """The tiny model registered as models:/dragonfly@champion in ``root``; its directory."""
    from dragonfly.build import build_tiny
    from dragonfly.registry import RegistryTrack, register

    model, processor = build_tiny(seed=0)
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    os.chdir(root)  # mlflow's ./mlruns lands in the scratch folder
    register(model_dir, {METRIC: 1.0}, RegistryTrack("dragonfly", METRIC), uri=f"sqlite:///{root}/mlflow.db")
    return str(model_dir)


def start_server(root: Path, port: int, concurrent: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "PYTHONPATH": str(REPO)}
    env["SERVING_MODEL_CONFIG"] = json.dumps({"max_concurrent": concurrent})  # the operator's setting
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # mlflow execs `uvicorn` from PATH
    command = ["mlflow", "models", "serve", "-m", "models:/dragonfly@champion", "--env-manager", "local"]
    log = (root / "server.log").open("w")
    return subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def wait_for(server: subprocess.Popen, url: str, root: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited:\n{(root / 'server.log').read_text()[-3000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    sys.exit(f"the server did not start in {timeout} s")


class PeakMemory:
    """The largest summed RSS of a process and its descendants, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.root, self.peak, self.done = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.wait(0.02):
            total = 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def drive(url: str, bodies: list[dict], clients: int) -> tuple[float, list[float], list[str]]:
    """Send ``bodies`` from ``clients`` threads (each its share, one after another)."""
    shares = [bodies[i::clients] for i in range(clients)]

    def client(share: list[dict]) -> list[tuple[float, str]]:
        out = []
        with requests.Session() as session:
            for body in share:
                began = time.perf_counter()
                reply = session.post(f"{url}/invocations", json=body, timeout=300)
                reply.raise_for_status()
                out.append((time.perf_counter() - began, reply.json()["choices"][0]["message"]["content"]))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, shares))
    wall = time.perf_counter() - start
    latencies = [lat for r in results for lat, _ in r]
    # Back in the bodies' order: share i holds bodies i, i + clients, ...
    texts = [""] * len(bodies)
    for i, r in enumerate(results):
        for j, (_, text) in enumerate(r):
            texts[i + j * clients] = text
    return wall, latencies, texts


def stop(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def serve_figures(root: Path, bodies: list[dict], clients: int, concurrent: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = start_server(root, port, concurrent)
    try:
        wait_for(server, url, root)
        requests.post(f"{url}/invocations", json=bodies[0], timeout=300).raise_for_status()  # warm-up
        with PeakMemory(server.pid) as memory:
            wall, latencies, texts = drive(url, bodies, clients)
    finally:
        stop(server)
    return {"wall": wall, "latencies": latencies, "texts": texts, "peak_bytes": memory.peak}


def report(name: str, figures: dict, count: int) -> dict:
    p50, p95 = percentiles(figures["latencies"])
    row = {"req/s": count / figures["wall"], "p50 ms": p50 * 1e3, "p95 ms": p95 * 1e3}
    row["peak MiB"] = figures["peak_bytes"] / 2**20
    print(f"{name:>22}: " + "  ".join(f"{k} {v:.1f}" for k, v in row.items()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="per client")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-concurrent", type=int, default=1, help="the model config's generations at once")
    parser.add_argument("--peer", nargs=2, metavar=("MODEL_DIR", "BODIES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        return peer(*args.peer)
    count = args.clients * args.requests
    bodies = request_bodies(count, args.max_tokens)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        model_dir = register_tiny(root)
        (root / "bodies.json").write_text(json.dumps(bodies))
        served = serve_figures(root, bodies, args.clients, args.max_concurrent)
        done = subprocess.run(
            [sys.executable, __file__, "--peer", model_dir, str(root / "bodies.json")],
            capture_output=True,
            text=True,
            check=True,
        )
        inproc = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"{count} requests ({args.clients} clients x {args.requests}), max_tokens {args.max_tokens}, "
        f"max_concurrent {args.max_concurrent}"
    )
    ours, theirs = report("mlflow models serve", served, count), report("in-process answer()", inproc, count)
    print("ratios (serve / in-process): " + "  ".join(f"{k} {ours[k] / theirs[k]:.2f}x" for k in ours))
    same = sum(a == b for a, b in zip(served["texts"], inproc["texts"], strict=True))
    print(f"answers equal to in-process answer(): {same}/{count}")


if __name__ == "__main__":
    main()
