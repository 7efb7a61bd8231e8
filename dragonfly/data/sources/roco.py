"""ROCO radiology captions.

The packaged release has one CSV per split (`radiologytraindata.csv`,
`radiologyvaldata.csv`, `radiologytestdata.csv`) with columns `id,name,caption`, where
`name` is the image file (e.g. "PMC4083729_AMHSR-4-14-g002.jpg") in an images folder
next to it (`radiology/images/` or `images/`).
"""

from __future__ import annotations

import re
from pathlib import Path

from dragonfly.data.quarantine import Converted, ConverterError
from dragonfly.data.schema import qa_sample
from dragonfly.data.sources._common import malformed, normalise_split, read_csv, rel_to_root

OPTIONS = {
    "source": "source name stored in every sample and its id prefix",
    "images_dir": "image folder beside each CSV (default: radiology/images or images, whichever exists)",
}
SPLIT = "from the file name: radiology{train,val,test}data.csv"
PROMPT = "Describe the radiology image in one sentence."
COLUMNS = ("id", "name", "caption")
_NAME = re.compile(r"radiology(train|val|validation|test)data\.csv$", re.IGNORECASE)


def _csv_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.csv") if _NAME.search(p.name))
    if not files:
        raise ConverterError(path, "radiology{train,val,test}data.csv files (columns id,name,caption)")
    return files


def _images_dir(csv_file: Path, images_dir: str | None) -> Path:
    if images_dir:
        return csv_file.parent / images_dir
    for candidate in ("radiology/images", "images"):
        if (csv_file.parent / candidate).is_dir():
            return csv_file.parent / candidate
    return csv_file.parent / "images"


def convert(path: Path, root: Path, source: str = "roco", images_dir: str | None = None) -> Converted:
    out = Converted()
    for file in _csv_files(path):
        match = _NAME.search(file.name)
        if not match:
            raise ConverterError(file, "a file named radiology{train,val,test}data.csv")
        split = normalise_split(match.group(1), file)
        frame = read_csv(file, dtype=str, keep_default_na=False)
        absent = [c for c in COLUMNS if c not in frame.columns]
        if absent:
            raise ConverterError(file, f"columns {list(COLUMNS)}; missing {absent}")
        imgs = _images_dir(file, images_dir)
        for row, rec in enumerate(frame.to_dict("records")):
            rid = f"{source}:{rec['id'].strip() or f'row{row}'}"
            if not rec["name"].strip():
                out.rejections.append(malformed(source, rid, file, row, "an image file name"))
                continue
            caption = rec["caption"].strip()
            image = rel_to_root(imgs / rec["name"].strip(), root)
            out.samples.append(
                qa_sample(rid, source, split, "caption", [image], PROMPT, caption, origin=f"{file}:{row}")
            )
    return out
