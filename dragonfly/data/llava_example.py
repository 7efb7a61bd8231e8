"""A small VQA dataset in the LLaVA conversation layout, to try the own-data path without
data of one's own (`dragonfly data example-llava DIR`), and the tests' fixture for it.

Written as a user's dataset usually arrives: `train.json` and `test.json` (one single-turn
record per question, the split in the file name) and `images/` beside them. Each image
holds one large shape in one colour; each gets four questions: its colour, its shape, and
two yes/no questions (about half of them "yes"). Images are split, not questions, so no
test image is seen in training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dragonfly.files import atomic_write_text

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = ((256, 192), (192, 256), (224, 224), (320, 160))


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Corners of `shape` centred at (cx, cy) with circumradius r (a circle is drawn apart)."""
    corners = {"square": (4, math.pi / 4), "triangle": (3, -math.pi / 2), "diamond": (4, 0.0)}[shape]
    n, start = corners
    return [
        (cx + r * math.cos(start + 2 * math.pi * k / n), cy + r * math.sin(start + 2 * math.pi * k / n))
        for k in range(n)
    ]


def draw(shape: str, colour: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One shape, a third of the shorter side across, somewhere inside the image."""
    w, h = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 250, 3)))
    r = min(w, h) / 6
    cx, cy = rng.uniform(r * 1.2, w - r * 1.2), rng.uniform(r * 1.2, h - r * 1.2)
    pen = ImageDraw.Draw(image)
    if shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[colour])
    else:
        pen.polygon(_polygon(shape, cx, cy, r), fill=COLOURS[colour])
    return image


def _questions(shape: str, colour: str, rng: np.random.Generator) -> list[tuple[str, str]]:
    asked_colour = colour if rng.random() < 0.5 else str(rng.choice([c for c in COLOURS if c != colour]))
    asked_shape = shape if rng.random() < 0.5 else str(rng.choice([s for s in SHAPES if s != shape]))
    return [
        ("What colour is the shape?", colour),
        ("What shape is in the image?", shape),
        (f"Is the shape {asked_colour}?", "yes" if asked_colour == colour else "no"),
        (f"Is there a {asked_shape}?", "yes" if asked_shape == shape else "no"),
    ]


def write_example(out: str | Path, images: int = 300, test_share: float = 0.2, seed: int = 0) -> dict[str, int]:
    """Write the dataset under `out`; returns the number of questions per split."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_test = max(1, round(images * test_share))
    records: dict[str, list[dict]] = {"train": [], "test": []}
    for i in range(images):
        shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
        name = f"images/{i:05d}.png"
        draw(shape, colour, SIZES[i % len(SIZES)], rng).save(out / name)
        split = "test" if i < n_test else "train"
        for k, (question, answer) in enumerate(_questions(shape, colour, rng)):
            records[split].append(
                {
                    "id": f"{i:05d}-{k}",
                    "image": name,
                    "conversations": [
                        {"from": "human", "value": f"<image>\n{question}"},
                        {"from": "gpt", "value": answer},
                    ],
                }
            )
    for split, rows in records.items():
        atomic_write_text(out / f"{split}.json", json.dumps(rows, indent=1))
    return {split: len(rows) for split, rows in records.items()}
