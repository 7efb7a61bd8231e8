"""COCO captions (`annotations/captions_val2017.json`, images in `val2017/`).

{"images": [{"id", "file_name", ...}], "annotations": [{"id", "image_id", "caption"}]};
one sample per image, all of its captions as references (about five).
"""

from __future__ import annotations

import re
from pathlib import Path

from dragonfly.data.quarantine import Converted, ConverterError, Rejection
from dragonfly.data.schema import qa_sample
from dragonfly.data.sources._common import normalise_split, read_json, rel_to_root

OPTIONS = {
    "source": "source name stored in every sample and its id prefix",
    "images_dir": "image folder, under the data root when relative (default: ../<split><year> beside annotations/)",
}
SPLIT = "from the file name: captions_<split><year>.json (train, val or test)"
PROMPT = "Provide a one-sentence caption for the provided image."


def convert(path: Path, root: Path, source: str = "coco", images_dir: str | Path | None = None) -> Converted:
    data = read_json(path, "COCO captions JSON")
    if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
        raise ConverterError(path, 'an object with "images" and "annotations" lists')
    match = re.search(r"(train|val|test)(\d{4})", path.name)
    if not match:
        raise ConverterError(path, "a file named captions_<split><year>.json")
    split = normalise_split(match.group(1), path)
    folder = Path(images_dir) if images_dir else path.parent.parent / f"{match.group(1)}{match.group(2)}"
    if not folder.is_absolute() and images_dir:
        folder = root / folder
    captions: dict[int, list[tuple[int, str]]] = {}
    for ann in data["annotations"]:
        captions.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), str(ann["caption"]).strip()))
    out = Converted()
    for row, img in enumerate(sorted(data["images"], key=lambda i: int(i["id"]))):
        rid = f"{source}:{img['id']}"
        refs = [c for _, c in sorted(captions.get(int(img["id"]), [])) if c]
        if not refs:
            out.rejections.append(Rejection(source, rid, "empty_answer", "image has no captions", str(path), row))
            continue
        image = rel_to_root(folder / img["file_name"], root)
        out.samples.append(
            qa_sample(rid, source, split, "caption", [image], PROMPT, refs[0], answers=refs, origin=f"{path}:{row}")
        )
    return out
