"""SLAKE (Slake1.0): `train.json`, `validate.json`, `test.json` + `imgs/xmlab<N>/source.jpg`.

Records: img_id, img_name ("xmlab1/source.jpg", relative to imgs/), question, answer,
q_lang ("en"/"zh"), answer_type (OPEN/CLOSED), content_type, base_type, location,
modality, qid (and a `triple`). The dataset is bilingual; the paper uses English only, so
Chinese rows are quarantined as `non_english` (filtered, not an error).
"""

from __future__ import annotations

from pathlib import Path

from dragonfly.data.quarantine import Converted, ConverterError
from dragonfly.data.schema import qa_sample
from dragonfly.data.sources._common import (
    SHORT_SUFFIX,
    answer_text,
    filtered,
    malformed,
    missing_keys,
    normalise_split,
    read_json,
    rel_to_root,
    yes_no,
)

OPTIONS = {
    "source": "source name stored in every sample and its id prefix",
    "images_dir": "image folder beside the JSON files",
}
SPLIT = "from the file: train.json, validate.json, test.json (one other file: its name must be a split name)"
FILES = {"train.json": "train", "validate.json": "validation", "test.json": "test"}
REQUIRED = ("img_name", "question", "answer", "q_lang", "answer_type", "qid")
META_KEYS = ("img_id", "content_type", "base_type", "location", "modality", "answer_type")


def _files(path: Path) -> list[tuple[Path, str]]:
    if path.is_file():
        return [(path, FILES.get(path.name) or normalise_split(path.stem, path))]
    found = [(path / name, split) for name, split in FILES.items() if (path / name).is_file()]
    if not found:
        raise ConverterError(path, f"a SLAKE folder with any of {list(FILES)}")
    return found


def convert(path: Path, root: Path, source: str = "slake", images_dir: str = "imgs") -> Converted:
    out = Converted()
    for file, split in _files(path):
        records = read_json(file, "a JSON list of SLAKE records")
        if not isinstance(records, list):
            raise ConverterError(file, "a JSON list of SLAKE records")
        imgs = file.parent / images_dir
        for row, rec in enumerate(records):
            qid = rec.get("qid", f"row{row}") if isinstance(rec, dict) else f"row{row}"
            rid = f"{source}:{split}:{qid}"
            absent = missing_keys(rec, REQUIRED) if isinstance(rec, dict) else list(REQUIRED)
            if absent:
                out.rejections.append(malformed(source, rid, file, row, f"keys {list(REQUIRED)}; missing {absent}"))
                continue
            if str(rec["q_lang"]).lower() != "en":
                out.rejections.append(filtered(source, rid, file, row, "non_english", f"q_lang={rec['q_lang']}"))
                continue
            answer = answer_text(rec["answer"])
            closed = str(rec["answer_type"]).upper() == "CLOSED"
            # CLOSED also covers "which is larger, A or B?" questions: only yes/no is normalised.
            answer = (yes_no(answer) or answer) if closed else answer
            question = str(rec["question"]).strip()
            out.samples.append(
                qa_sample(
                    rid,
                    source,
                    split,
                    "vqa_closed" if closed else "vqa_open",
                    [rel_to_root(imgs / str(rec["img_name"]), root)],
                    f"{question}\n{SHORT_SUFFIX}",
                    answer,
                    meta={k: str(rec[k]) for k in META_KEYS if k in rec} | {"question": question},
                    origin=f"{file}:{row}",
                )
            )
    return out
