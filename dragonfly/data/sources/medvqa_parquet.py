"""VQA-RAD and Path-VQA as published on the HF hub (flaviagammarino/vqa-rad, path-vqa).

Parquet shards `data/<split>-0000N-of-0000M-<hash>.parquet` with columns
`image` ({bytes, path}), `question`, `answer`. Closed questions are the yes/no ones; their
answers come in any case ("Yes", "no") and are normalised.
"""

from __future__ import annotations

from pathlib import Path

from dragonfly.data.quarantine import Converted
from dragonfly.data.schema import qa_sample
from dragonfly.data.sources._common import (
    SHORT_SUFFIX,
    answer_text,
    closed_or_open,
    malformed,
    parquet_rows,
    split_from_filename,
    store_image_bytes,
)

OPTIONS = {"source": "source name stored in every sample and its id prefix"}
SPLIT = "from each shard's name: data/<split>-0000N-of-0000M-<hash>.parquet"


def convert(path: Path, root: Path, source: str) -> Converted:
    out = Converted()
    counters: dict[str, int] = {}
    for file, row, rec in parquet_rows(path, ("image", "question", "answer")):
        split = split_from_filename(file)
        n = counters.get(split, 0)
        counters[split] = n + 1
        rid = f"{source}:{split}:{n}"
        image = store_image_bytes(rec["image"], root, f"images/{source}")
        if image is None:
            out.rejections.append(malformed(source, rid, file, row, "image.bytes with the picture"))
            continue
        task, answer = closed_or_open(answer_text(rec["answer"]))
        question = str(rec["question"] or "").strip()
        out.samples.append(
            qa_sample(
                rid,
                source,
                split,
                task,
                [image],
                f"{question}\n{SHORT_SUFFIX}",
                answer,
                meta={"question": question},
                origin=f"{file}:{row}",
            )
        )
    return out
