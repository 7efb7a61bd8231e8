"""A fine-grained synthetic benchmark that needs zoom: the tiny profile's default data.

Each image holds a few small glyphs (circle, square, triangle, cross) of distinct colours on
a textured background. Questions name a glyph by its colour and ask for its shape. All
shapes are drawn with the same area, so once the image is shrunk to a low-resolution tile
a glyph becomes the same coloured blob whatever its shape: the shape is readable only in
high-resolution tiles. The "biomedical" variant draws the glyphs as stained cells on an
H&E-like tissue background for the Med stages.

Everything derives from (seed, split, index), so any image can be regenerated alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dragonfly.data.prompts import letters, mcq_prompt
from dragonfly.data.schema import Sample, qa_sample, write_samples_jsonl
from dragonfly.errors import DragonflyError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SPLIT_INDEX = {"train": 0, "validation": 1, "test": 2}
PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "general": {
        "red": (220, 40, 40),
        "blue": (40, 80, 220),
        "green": (30, 150, 60),
        "orange": (240, 150, 20),
    },
    # Stain colours: hematoxylin purple, DAB brown, a blue counterstain, a red chromogen.
    "biomedical": {
        "purple": (95, 40, 135),
        "brown": (130, 75, 25),
        "blue": (45, 60, 160),
        "red": (185, 30, 60),
    },
}
NOUN = {"general": "glyph", "biomedical": "cell"}
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class SynthConfig:
    """Sizes are (width, height); `n_*` count images, each gives one sample per task."""

    variant: str = "general"
    seed: int = 0
    n_train: int = 160
    n_validation: int = 32
    n_test: int = 32
    sizes: tuple[tuple[int, int], ...] = (
        (384, 256),
        (256, 384),
        (512, 192),
        (192, 512),
        (320, 320),
    )
    glyph_area: float = 196.0
    min_glyphs: int = 1
    max_glyphs: int = 3
    tasks: tuple[str, ...] = ("vqa_closed", "vqa_open", "mcq", "caption")
    subdir: str = "synth"

    def __post_init__(self) -> None:
        if self.variant not in PALETTES:
            raise ValueError(f"variant must be one of {sorted(PALETTES)}, got {self.variant!r}")
        if not 1 <= self.min_glyphs <= self.max_glyphs <= len(PALETTES[self.variant]):
            raise ValueError("need 1 <= min_glyphs <= max_glyphs <= number of colours")
        unknown = set(self.tasks) - {"vqa_closed", "vqa_open", "mcq", "caption"}
        if unknown:
            raise ValueError(f"unknown synthetic tasks {sorted(unknown)}")

    @property
    def source(self) -> str:
        return f"synth_{self.variant}"

    def counts(self) -> dict[str, int]:
        return {"train": self.n_train, "validation": self.n_validation, "test": self.n_test}


@dataclass(frozen=True)
class Glyph:
    shape: str
    color: str
    cx: float
    cy: float


@dataclass(frozen=True)
class Scene:
    size: tuple[int, int]
    background_seed: int
    glyphs: tuple[Glyph, ...] = field(default_factory=tuple)


_MAX_PLACEMENTS = 10_000  # tries to place a scene's glyphs apart; ~10 suffice at the default sizes


def glyph_extent(area: float) -> float:
    """Half-width of the largest glyph (the cross) of the given area, for placement."""
    return math.sqrt(9 * area / 5) / 2


def make_scene(cfg: SynthConfig, rng: np.random.Generator) -> Scene:
    size = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
    n = int(rng.integers(cfg.min_glyphs, cfg.max_glyphs + 1))
    colors = [str(c) for c in rng.permutation(list(PALETTES[cfg.variant]))[:n]]
    half = glyph_extent(cfg.glyph_area) + 2
    glyphs: list[Glyph] = []
    for _attempt in range(_MAX_PLACEMENTS):
        if len(glyphs) == n:
            break
        cx = float(rng.uniform(half, size[0] - half))
        cy = float(rng.uniform(half, size[1] - half))
        if all(math.hypot(cx - g.cx, cy - g.cy) > 4 * half for g in glyphs):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            glyphs.append(Glyph(shape, colors[len(glyphs)], cx, cy))
    if len(glyphs) < n:  # rejection sampling never ends when the glyphs cannot fit
        raise DragonflyError(
            f"data.synth: {n} glyphs of area {cfg.glyph_area:g} px² do not fit apart in a {size[0]}×{size[1]} image",
            hint="use larger `sizes`, a smaller `glyph_area` or fewer `max_glyphs`",
        )
    return Scene(size=size, background_seed=int(rng.integers(2**31)), glyphs=tuple(glyphs))


def _polygon(shape: str, cx: float, cy: float, area: float) -> list[tuple[float, float]]:
    """Vertices of an equal-area shape centred at (cx, cy)."""
    if shape == "square":
        h = math.sqrt(area) / 2
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        side = math.sqrt(4 * area / math.sqrt(3))
        height = side * math.sqrt(3) / 2
        # Centroid at the centre, so the blob's centre of mass does not move with the shape.
        return [
            (cx, cy - 2 * height / 3),
            (cx + side / 2, cy + height / 3),
            (cx - side / 2, cy + height / 3),
        ]
    if shape == "cross":
        arm = math.sqrt(9 * area / 5)  # arm length L, width L/3: area = 5 L^2 / 9
        a, w = arm / 2, arm / 6
        return [
            (cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w),
            (cx + a, cy + w), (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a),
            (cx - w, cy + w), (cx - a, cy + w), (cx - a, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}")


def _mask(glyph: Glyph, area: float) -> tuple[Image.Image, tuple[int, int]]:
    """Anti-aliased coverage mask of one glyph and where to paste it.

    Drawn supersampled on a small patch around the glyph and box-filtered down, so the
    coverage (hence the low-resolution blob) has the same total for every shape.
    """
    s = _SUPERSAMPLE
    half = math.ceil(glyph_extent(area)) + 2
    x0, y0 = math.floor(glyph.cx) - half, math.floor(glyph.cy) - half
    side = 2 * half + 1
    big = Image.new("L", (side * s, side * s), 0)
    draw = ImageDraw.Draw(big)
    cx, cy = glyph.cx - x0, glyph.cy - y0
    if glyph.shape == "circle":
        r = math.sqrt(area / math.pi) * s
        draw.ellipse([cx * s - r, cy * s - r, cx * s + r, cy * s + r], fill=255)
    else:
        draw.polygon([(x * s, y * s) for x, y in _polygon(glyph.shape, cx, cy, area)], fill=255)
    return big.resize((side, side), Image.Resampling.BOX), (x0, y0)


def coverage_mask(size: tuple[int, int], glyph: Glyph, area: float) -> Image.Image:
    """The glyph's anti-aliased coverage (0-255) on a blank canvas of the image's size."""
    mask, offset = _mask(glyph, area)
    canvas = Image.new("L", size, 0)
    canvas.paste(mask, offset)
    return canvas


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cell: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    w, h = size
    coarse = rng.random((max(2, h // cell), max(2, w // cell)))
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def background(scene: Scene, variant: str) -> Image.Image:
    rng = np.random.default_rng(scene.background_seed)
    w, h = scene.size
    if variant == "general":
        n = _smooth_noise(rng, scene.size, 48)
        base = np.array([205.0, 208.0, 200.0]) + 30.0 * (n[..., None] - 0.5)
        return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    # H&E-like tissue: eosin-pink stroma with lighter lumen-like patches and fine grain,
    # then many small pale-purple nuclei far smaller than the cells the questions are about.
    coarse = _smooth_noise(rng, scene.size, 40)
    fine = _smooth_noise(rng, scene.size, 6)
    pink = np.array([232.0, 170.0, 205.0])
    light = np.array([248.0, 228.0, 240.0])
    t = np.clip(coarse * 1.4 - 0.2, 0, 1)[..., None]
    arr = pink * (1 - t) + light * t + 18.0 * (fine[..., None] - 0.5)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(w * h // 900):
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        r = float(rng.uniform(1.0, 2.0))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(175, 120, 190))
    return img.filter(ImageFilter.GaussianBlur(0.6))


def render(scene: Scene, cfg: SynthConfig) -> Image.Image:
    img = background(scene, cfg.variant)
    palette = PALETTES[cfg.variant]
    for g in scene.glyphs:
        mask, (x0, y0) = _mask(g, cfg.glyph_area)
        patch = Image.new("RGB", mask.size, palette[g.color])
        img.paste(patch, (x0, y0), mask)
    return img


def with_shape(scene: Scene, index: int, shape: str) -> Scene:
    glyphs = list(scene.glyphs)
    glyphs[index] = replace(glyphs[index], shape=shape)
    return replace(scene, glyphs=tuple(glyphs))


def shape_variants(cfg: SynthConfig, seed: int) -> tuple[Scene, dict[str, Image.Image]]:
    """One scene rendered once per shape of its first glyph; nothing else changes."""
    scene = make_scene(cfg, np.random.default_rng([cfg.seed, seed, 99]))
    return scene, {s: render(with_shape(scene, 0, s), cfg) for s in SHAPES}


def detail_pair(cfg: SynthConfig, seed: int) -> tuple[Scene, Image.Image, Image.Image]:
    """Two images that differ only in the shape of glyph 0, hence in every answer about it."""
    scene, variants = shape_variants(cfg, seed)
    other = next(s for s in SHAPES if s != scene.glyphs[0].shape)
    return scene, variants[scene.glyphs[0].shape], variants[other]


# --- questions ---------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe(scene: Scene, noun: str) -> str:
    parts = [f"{_article(g.color)} {g.color} {g.shape}" for g in sorted(scene.glyphs, key=lambda g: (g.cx, g.cy))]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    plural = noun if len(parts) == 1 else noun + "s"
    return f"There {'is' if len(parts) == 1 else 'are'} {len(parts)} {plural}: {listed}."


def questions(scene: Scene, cfg: SynthConfig, rng: np.random.Generator) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(task, question, answer, choices) for every configured task."""
    noun = NOUN[cfg.variant]
    out = []
    for task in cfg.tasks:
        g = scene.glyphs[int(rng.integers(len(scene.glyphs)))]
        if task == "vqa_closed":
            # "no" questions name a colour that is present with a shape it does not have,
            # so colour alone (visible at low resolution) never gives the answer away.
            yes = bool(rng.integers(2))
            shape = g.shape if yes else str(rng.choice([s for s in SHAPES if s != g.shape]))
            q = f"Is the {g.color} {noun} in the image a {shape}? Answer yes or no."
            out.append((task, q, "yes" if yes else "no", ()))
        elif task == "vqa_open":
            q = f"What shape is the {g.color} {noun}? Answer with one word."
            out.append((task, q, g.shape, ()))
        elif task == "mcq":
            choices = tuple(str(s) for s in rng.permutation(list(SHAPES)))
            q = mcq_prompt(f"What shape is the {g.color} {noun}?", choices)
            out.append((task, q, letters(len(choices))[choices.index(g.shape)], choices))
        else:
            q = f"Describe the {noun}s in the image."
            out.append((task, q, _describe(scene, noun), ()))
    return out


def image_path(cfg: SynthConfig, split: str, index: int) -> str:
    return f"{cfg.subdir}/{cfg.variant}/{split}/{index:05d}.png"


def generate(cfg: SynthConfig, root: Path, progress: Callable[[int], None] | None = None) -> list[Sample]:
    """Write the PNGs under `root` and return the samples (paths relative to `root`)."""
    samples: list[Sample] = []
    for split, count in cfg.counts().items():
        for i in range(count):
            rng = np.random.default_rng([cfg.seed, SPLIT_INDEX[split], i])
            scene = make_scene(cfg, rng)
            rel = image_path(cfg, split, i)
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            # Fast zlib level: noisy textures barely compress and level 6 triples the run time.
            render(scene, cfg).save(target, format="PNG", compress_level=1)
            for task, q, answer, choices in questions(scene, cfg, rng):
                samples.append(
                    qa_sample(
                        f"{cfg.source}:{split}:{i:05d}:{task}",
                        cfg.source,
                        split,
                        task,
                        [rel],
                        q,
                        answer,
                        answers=[answer],
                        choices=choices,
                        meta={
                            "width": str(scene.size[0]),
                            "height": str(scene.size[1]),
                            "shapes": ",".join(f"{g.color}:{g.shape}" for g in scene.glyphs),
                        },
                        origin=f"{rel}:0",
                    )
                )
            if progress is not None:
                progress(1)
    return samples


def write(cfg: SynthConfig, root: Path, progress: Callable[[int], None] | None = None) -> Path:
    """Generate the benchmark and its `samples.jsonl`; returns the JSONL path."""
    samples = generate(cfg, root, progress)
    out = root / cfg.subdir / cfg.variant / "samples.jsonl"
    write_samples_jsonl(samples, out)
    return out
