"""Fixture builders: small real files in the exact layouts of the public releases."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


class Files:
    """Writers for fixture files; every image is a real, decodable picture."""

    @staticmethod
    def image_bytes(
        size: tuple[int, int] = (40, 30),
        color: tuple[int, int, int] = (200, 30, 30),
        fmt: str = "JPEG",
    ) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", size, color).save(buf, format=fmt)
        return buf.getvalue()

    def image(
        self,
        path: Path,
        size: tuple[int, int] = (40, 30),
        color: tuple[int, int, int] = (10, 120, 200),
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = "PNG" if path.suffix == ".png" else "JPEG"
        path.write_bytes(self.image_bytes(size, color, fmt))
        return path

    @staticmethod
    def hf_image(data: bytes | None, name: str = "img.jpg") -> dict[str, Any] | None:
        """The {bytes, path} struct the HF `Image()` feature stores in parquet."""
        return None if data is None else {"bytes": data, "path": name}

    @staticmethod
    def parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path

    @staticmethod
    def json(path: Path, data: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")
        return path


@pytest.fixture
def files() -> Files:
    return Files()
