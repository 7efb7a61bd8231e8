"""Images from a request: the bytes it carries, never a file or URL it names.

A chat request's ``image_url`` must be a ``data:image/png;base64,...`` or
``data:image/jpeg;base64,...`` URL. A batch cell may hold bytes or such a data URL, or a
path, which is read only when it resolves (symbolic links followed) under the operator's
``image_root``; with no root configured every path is refused. Nothing here opens a path
before that check.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dragonfly.model.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageLoadError,
    ImageTooLargeError,
    load_image,
    load_image_bytes,
)
from dragonfly.serve.errors import RequestError

# The types a request may declare, and the only Pillow decoders its bytes are offered to.
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG"}
SEND_BYTES = "send the image's bytes as data:image/png;base64,... or data:image/jpeg;base64,..."
_DATA_URL = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*),(?P<payload>.*)$", re.DOTALL)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ImageRules:
    """What a request's image may be: ``root`` is the folder batch paths may point into
    (None: no paths at all); the limits bound the decoded bytes and the pixels."""

    root: Path | None = None
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES


def _shown(value: str, limit: int = 48) -> str:
    """The start of what the client sent, enough to recognise it (never a whole base64)."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def from_data_url(url: str, where: str, rules: ImageRules) -> Image.Image:
    """The RGB image a ``data:image/png|jpeg;base64,`` URL carries; RequestError naming
    ``where`` for anything else: a path, a URL of another scheme, another type, bad base64."""
    match = _DATA_URL.match(url)
    if match is None:
        return _refuse_reference(url, where)
    declared = match["type"].strip().lower()
    if declared not in IMAGE_TYPES:
        raise RequestError(
            f"{where} is a data URL of type {declared or 'none'!r}, not an image this model reads: {SEND_BYTES}"
        )
    if "base64" not in [p.strip().lower() for p in match["params"].split(";")]:
        raise RequestError(f"{where} is a data URL without ;base64: {SEND_BYTES}")
    # base64 is 4 characters per 3 bytes (line breaks aside): refuse an oversized image
    # before decoding it.
    payload = match["payload"]
    if (len(payload) - payload.count("\n") - payload.count("\r")) // 4 * 3 > rules.max_bytes + 3:
        raise RequestError(f"{where} holds over {rules.max_bytes} bytes, the limit: send a smaller image")
    data = _b64decode(payload, where)
    return decode(data, where, rules, (IMAGE_TYPES[declared],))


def _refuse_reference(value: str, where: str) -> Image.Image:
    what = "a URL" if _SCHEME.match(value) and not value.lower().startswith("file:") else "a file"
    fetch = "fetches no URLs" if what == "a URL" else "opens no file a request names"
    raise RequestError(f"{where} names {what} ({_shown(value)}); the server {fetch}: {SEND_BYTES}")


def _b64decode(payload: str, where: str) -> bytes:
    # Clients wrap long base64 in lines; anything else that is not base64 is an error, not
    # silently dropped (b64decode's default would skip it and decode garbage).
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"{where}'s base64 does not decode ({err}): send the file's bytes base64-encoded") from None


def decode(data: bytes, where: str, rules: ImageRules, formats: tuple[str, ...] = ("PNG", "JPEG")) -> Image.Image:
    """RGB image from encoded bytes, or RequestError: too many bytes or pixels, not an image
    of ``formats``, or an undecodable one."""
    if len(data) > rules.max_bytes:
        raise RequestError(f"{where} is {len(data)} bytes, above the limit of {rules.max_bytes}: send a smaller image")
    try:
        return load_image_bytes(data, where, formats, rules.max_pixels)
    except ImageTooLargeError as err:
        raise RequestError(f"{err}: send an image of at most {rules.max_pixels} pixels") from None
    except ImageLoadError as err:
        kinds = " or ".join(formats)
        raise RequestError(f"{err}: send the bytes of a {kinds} file, with its own type") from None


def from_cell(value: object, where: str, rules: ImageRules) -> Image.Image:
    """A batch cell's image: bytes, a data URL, or a path under ``rules.root``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return decode(bytes(value), where, rules)
    if not isinstance(value, str):
        raise RequestError(f"{where} is a {type(value).__name__}: put the image's bytes, or a data URL, in the cell")
    if value.startswith("data:") or _SCHEME.match(value) and not _is_windows_drive(value):
        return from_data_url(value, where, rules)
    path = _path_under_root(value, where, rules.root)
    try:
        return load_image(path, rules.max_pixels)
    except ImageLoadError as err:
        raise RequestError(f"{where}: {err.reason}: use a path under image_root to a readable image") from None


def _is_windows_drive(value: str) -> bool:
    return bool(re.match(r"^[A-Za-z]:[\\/]", value))


def _path_under_root(value: str, where: str, root: Path | None) -> Path:
    """The resolved path, when it lies under ``root`` (links followed, ``..`` resolved)."""
    if root is None:
        raise RequestError(
            f"{where} names a file ({_shown(value)}) and no image_root is configured: put the image's bytes "
            "in the cell, or set image_root in the model config to allow files under it"
        )
    if "\0" in value:
        raise RequestError(f"{where} holds a NUL byte, which no path can: send the image's bytes")
    base = Path(os.path.realpath(root))
    path = Path(os.path.realpath(base / value))
    if path != base and base not in path.parents:
        raise RequestError(
            f"{where} ({_shown(value)}) is outside image_root {base}: use a path under it, or send the bytes"
        )
    return path
