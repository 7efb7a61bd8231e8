"""Request bodies for the serving tests: good ones, and every bad one with the words its
one-line refusal must hold. Shared by the in-process tests (test_serve_chat.py) and the
real server's (test_serve.py), so both refuse the same things."""

from __future__ import annotations

import base64
import io
import struct
import zlib

from PIL import Image


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def chat(*parts: dict, **options) -> dict:
    """A chat-completions body with one user message of ``parts``."""
    return {"messages": [{"role": "user", "content": list(parts)}], **options}


def text(words: str) -> dict:
    return {"type": "text", "text": words}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid PNG header claiming 1.6 gigapixels in a few dozen bytes: Pillow reads the
    size from the header, so a loader that checks before decoding never allocates it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def bad_bodies(png: bytes) -> list[tuple[str, dict, list[str]]]:
    """(case, body, words the refusal must hold): each is a 400 naming the problem and the fix."""
    good = image(data_url(png))
    q = text("What is this?")
    return [
        (
            "broken base64",
            chat(q, image("data:image/png;base64,iVBOR%%%not-base64")),
            ["base64 does not decode", "send"],
        ),
        (
            "not an image",
            chat(q, image(data_url(b"just some text, no picture"))),
            ["not a PNG image", "send the bytes"],
        ),
        ("decompression bomb", chat(q, image(data_url(bomb_png()))), ["pixels", "send an image of at most"]),
        ("two images", chat(q, good, good), ["2 images", "place for exactly one", "send one image_url"]),
        ("no image", chat(q), ["0 images", "send one image_url"]),
        ("text content", {"messages": [{"role": "user", "content": "What is this?"}]}, ["no image", "image_url"]),
        ("over-long prompt", chat(text("the " * 3000), good), ["positions", "shorten the question"]),
        ("gif data URL", chat(q, image(data_url(b"GIF89a", "image/gif"))), ["'image/gif'", "data:image/png"]),
        ("text data URL", chat(q, image(data_url(b"hello", "text/plain"))), ["'text/plain'", "data:image/png"]),
        (
            "audio part",
            chat(q, {"type": "input_audio", "input_audio": {}}),
            ["'input_audio'", "'text' and 'image_url'"],
        ),
        ("max_tokens", chat(q, good, max_tokens=0), ["max_tokens must be", "send one in range"]),
        ("temperature", chat(q, good, temperature="hot"), ["temperature must be", "send one in range"]),
        ("stream", chat(q, good, stream=True), ["stream=True is not supported", "leave stream out"]),
        ("system turn", {"messages": [{"role": "system", "content": "Be brief."}]}, ["role 'system'", "role 'user'"]),
    ]


# Every way a request could name a file or a URL: none may be opened or fetched.
PATHS = [
    "/etc/passwd",
    "file:///etc/passwd",
    "../../../../etc/passwd",
    "images/../../../etc/passwd",
    "https://example.com/photo.png",
    "http://127.0.0.1:1/x.png",
]
