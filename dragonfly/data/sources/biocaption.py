"""IU X-Ray and PEIR Gross captioning splits.

Two layouts are read:
- bioCaption (nlpaueb/bioCaption): `<name>/train_images.tsv`, `test_images.tsv`, lines
  "<image file>\\t<caption>" without a header, images in `<name>/<name>_images/`
  (IU X-Ray there is one row per image, its report's impression + findings).
- R2Gen's IU X-Ray: `annotation.json` = {"train"|"val"|"test": [{"id", "report",
  "image_path": [frontal, lateral], "split"}]}, images under `images/`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from dragonfly.data.quarantine import Converted, ConverterError
from dragonfly.data.schema import qa_sample
from dragonfly.data.sources._common import (
    malformed,
    missing_keys,
    normalise_split,
    read_json,
    read_text,
    rel_to_root,
)

PROMPTS = {
    "caption": "Describe the image in one sentence.",
    "report": "Write the findings and impression of the radiology report for this study.",
}
OPTIONS = {
    "source": "source name stored in every sample and its id prefix",
    "task": "'report' or 'caption' (default: report when the source name contains 'iu', else caption)",
    "images_dir": "image folder inside the dataset folder (default: <name>_images for bioCaption, images for R2Gen)",
}
SPLIT = "from the data: train_images.tsv/val_images.tsv/test_images.tsv, or the train/val/test keys of annotation.json"
TSV_SPLITS = {
    "train_images.tsv": "train",
    "val_images.tsv": "validation",
    "test_images.tsv": "test",
}


def convert_tsv(folder: Path, root: Path, source: str, task: str, images_dir: str | None = None) -> Converted:
    imgs = folder / (images_dir or f"{folder.name}_images")
    files = [(folder / n, s) for n, s in TSV_SPLITS.items() if (folder / n).is_file()]
    if not files:
        raise ConverterError(folder, f"a bioCaption folder with any of {list(TSV_SPLITS)}")
    out = Converted()
    for file, split in files:
        with io.StringIO(read_text(file), newline="") as fh:
            for row, cols in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)):
                if not cols or not "".join(cols).strip():
                    continue
                rid = f"{source}:{cols[0]}"
                if len(cols) != 2:
                    out.rejections.append(malformed(source, rid, file, row, f"2 tab-separated fields, got {len(cols)}"))
                    continue
                image = rel_to_root(imgs / cols[0], root)
                text = cols[1].strip()
                out.samples.append(
                    qa_sample(rid, source, split, task, [image], PROMPTS[task], text, origin=f"{file}:{row}")
                )
    return out


def convert_r2gen(file: Path, root: Path, source: str, task: str, images_dir: str = "images") -> Converted:
    data = read_json(file, "R2Gen annotation JSON")
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ConverterError(file, 'an object {"train": [...], "val": [...], "test": [...]}')
    imgs = file.parent / images_dir
    out = Converted()
    row = 0
    for key in sorted(data):
        split = normalise_split(key, file)
        for rec in data[key]:
            rid = f"{source}:{rec.get('id', f'row{row}')}" if isinstance(rec, dict) else f"{source}:row{row}"
            absent = missing_keys(rec, ("id", "report", "image_path")) if isinstance(rec, dict) else ["id"]
            if absent or not isinstance(rec["image_path"], list):
                out.rejections.append(malformed(source, rid, file, row, 'keys "id", "report", "image_path" (a list)'))
            else:
                images = [rel_to_root(imgs / p, root) for p in rec["image_path"]]
                text = str(rec["report"] or "").strip()
                out.samples.append(
                    qa_sample(rid, source, split, task, images, PROMPTS[task], text, origin=f"{file}:{row}")
                )
            row += 1
    return out


def convert(
    path: Path,
    root: Path,
    source: str = "iu_xray",
    task: str | None = None,
    images_dir: str | None = None,
) -> Converted:
    """`task` defaults to 'report' for IU X-Ray (source name containing 'iu') else 'caption'."""
    task = task or ("report" if "iu" in source.lower() else "caption")
    if task not in PROMPTS:
        raise ConverterError(path, f"task in {sorted(PROMPTS)}, got {task!r}")
    if path.is_file() and path.suffix == ".json":
        return convert_r2gen(path, root, source, task, images_dir or "images")
    if path.is_dir() and (path / "annotation.json").is_file():
        return convert_r2gen(path / "annotation.json", root, source, task, images_dir or "images")
    if path.is_dir():
        return convert_tsv(path, root, source, task, images_dir)
    raise ConverterError(path, "a bioCaption folder or an R2Gen annotation.json")
