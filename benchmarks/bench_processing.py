"""Image processing throughput: DragonflyImageProcessor vs transformers' LlavaNextImageProcessorPil.

Both run in this process, on the same real images (shipped by scikit-image, mahotas and
pydicom-data, so nothing is downloaded), at R = 224 with the paper's high grids as the
peer's ``image_grid_pinpoints``. The peer makes 1 + 24 tiles per image, Dragonfly 29
(low + 4 medium + 24 high). The figure of merit is tiles per second; images per second
are printed too.

    .venv/bin/python benchmarks/bench_processing.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image
from transformers.models.llava_next.image_processing_pil_llava_next import (
    LlavaNextImageProcessorPil,
)

from dragonfly.model.images import load_image
from dragonfly.model.processor import DragonflyImageProcessor

HIGH_GRIDS = [(6, 4), (4, 6), (3, 8), (8, 3)]


def real_images() -> dict[str, Image.Image]:
    import mahotas.demos
    import numpy as np
    from pydicom.data import get_testdata_file
    from skimage import data

    images = {
        "astronaut 512x512": Image.fromarray(data.astronaut()),
        "retina 1411x1411": Image.fromarray(data.retina()),
        "hubble 1000x872": Image.fromarray(data.hubble_deep_field()),
        "ihc 512x512": Image.fromarray(data.immunohistochemistry()),
        "coffee 600x400": Image.fromarray(data.coffee()),
        "chest x-ray (DICOM)": load_image(get_testdata_file("RG1_UNCI.dcm")),
    }
    nuclear = Path(mahotas.demos.__file__).parent / "data" / "nuclear.png"
    images["nuclear 1344x1024"] = Image.fromarray(np.asarray(Image.open(nuclear).convert("RGB")))
    return {name: img.convert("RGB") for name, img in images.items()}


def timed(fn, images, repeats: int) -> float:
    fn(images[:1])  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(images)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = list(real_images().values())

    ours = DragonflyImageProcessor(tile_size=224, high_grids=HIGH_GRIDS)
    peer = LlavaNextImageProcessorPil(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        image_grid_pinpoints=[[rows * 224, cols * 224] for cols, rows in HIGH_GRIDS],  # (height, width)
    )
    our_tiles = ours(images[:1])["pixel_values"].shape[1]
    peer_tiles = peer(images[:1], return_tensors="pt")["pixel_values"].shape[1]

    t_ours = timed(lambda xs: ours(xs), images, args.repeats)
    t_peer = timed(lambda xs: peer(xs, return_tensors="pt"), images, args.repeats)
    n = len(images)
    ours_tps, peer_tps = n * our_tiles / t_ours, n * peer_tiles / t_peer
    print(f"{n} real images, median of {args.repeats} runs, 1 torch thread")
    print(f"{'processor':<36}{'tiles/img':>10}{'images/s':>10}{'tiles/s':>10}")
    print(f"{'DragonflyImageProcessor':<36}{our_tiles:>10}{n / t_ours:>10.1f}{ours_tps:>10.1f}")
    print(f"{'LlavaNextImageProcessorPil (peer)':<36}{peer_tiles:>10}{n / t_peer:>10.1f}{peer_tps:>10.1f}")
    print(f"ratio (tiles/s, ours / peer): {ours_tps / peer_tps:.2f}x; images/s: {t_peer / t_ours:.2f}x")


if __name__ == "__main__":
    main()
