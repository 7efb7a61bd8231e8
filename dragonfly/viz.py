"""Pictures of what the zoom did: the medium grid and the kept high tiles on the image."""

from __future__ import annotations

from PIL import Image, ImageDraw

Grid = tuple[int, int]


def _cell(index: int, grid: Grid, size: tuple[int, int]) -> tuple[float, float, float, float]:
    cols, rows = grid
    width, height = size
    col, row = index % cols, index // cols
    return (col * width / cols, row * height / rows, (col + 1) * width / cols, (row + 1) * height / rows)


def draw_selection(
    image: Image.Image, medium: Grid, high: Grid | None, kept: list[int] | None, max_side: int = 768
) -> Image.Image:
    """The image with the medium grid (thick white), the dropped high tiles dimmed and
    the kept ones outlined in cyan, drawn in stretch coordinates."""
    image = image.convert("RGB")
    scale = min(1.0, max_side / max(image.size))
    canvas = image.resize((round(image.width * scale), round(image.height * scale)))
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    line = max(1, round(min(canvas.size) / 150))
    if high and high != (0, 0):
        kept_set = set(kept or [])
        for i in range(high[0] * high[1]):
            if i not in kept_set:
                draw.rectangle(_cell(i, high, canvas.size), fill=(0, 0, 0, 140), outline=(160, 160, 160, 200))
        for i in kept_set:
            draw.rectangle(_cell(i, high, canvas.size), outline=(0, 230, 255, 255), width=line + 1)
    for i in range(medium[0] * medium[1]):
        draw.rectangle(_cell(i, medium, canvas.size), outline=(255, 255, 255, 255), width=line * 2)
    return Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
