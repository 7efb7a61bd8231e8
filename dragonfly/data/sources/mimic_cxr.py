"""MIMIC-CXR(-JPG): report text -> the FINDINGS section.

Layout (PhysioNet): `mimic-cxr-2.0.0-split.csv[.gz]` (dicom_id, study_id, subject_id,
split in train/validate/test), optional `mimic-cxr-2.0.0-metadata.csv[.gz]` (ViewPosition),
images `files/p10/p10000032/s50414267/<dicom_id>.jpg`, reports
`files/p10/p10000032/s50414267.txt` (in the reports release, same tree). One sample per
study; studies whose report has no findings section are filtered out as `no_findings` (the paper's
selection; a filter does not count toward the error threshold).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from dragonfly.data.quarantine import Converted, ConverterError, Rejection
from dragonfly.data.schema import qa_sample
from dragonfly.data.sources._common import filtered, normalise_split, read_csv, rel_to_root

OPTIONS = {
    "source": "source name stored in every sample and its id prefix",
    "reports_dir": "folder holding the reports' files/ tree, under the data root when relative "
    "(default: the dataset folder)",
    "max_images": "images per study, frontal views first when the metadata CSV is present",
}
SPLIT = "per study, from the split column of mimic-cxr-2.0.0-split.csv (train, validate, test)"
PROMPT = "Write the findings section of the radiology report for this chest X-ray."
FRONTAL = ("PA", "AP")
# A section header is an upper-case phrase at the start of a line followed by a colon
# ("IMPRESSION:", "RECOMMENDATION(S):"), or a known section name in any case ("Impression:").
_HEADER = re.compile(
    r"^\s*(?:[A-Z][A-Z /&()-]{2,}|(?i:impression|recommendations?|recommendation\(s\)|"
    r"conclusions?|notification|comparison|indication|technique|examination|history))\s*:",
    re.MULTILINE,
)
# Findings headers seen in the reports: "FINDINGS:", "Findings:", "FINDINGS AND
# IMPRESSION:", "FINDINGS/IMPRESSION:", and "FINDINGS" alone on its line.
_FINDINGS = re.compile(r"^\s*FINDINGS(?:\s*(?:AND|/|&)\s*IMPRESSIONS?)?\s*(?::|\n)", re.IGNORECASE | re.MULTILINE)


def extract_findings(report: str) -> str:
    """The FINDINGS section of a report with whitespace collapsed; '' when there is none."""
    match = _FINDINGS.search(report)
    if not match:
        return ""
    rest = report[match.end() :]
    nxt = _HEADER.search(rest)
    body = rest[: nxt.start()] if nxt else rest
    return " ".join(body.split())


def _table(folder: Path, stem: str) -> pd.DataFrame | None:
    for suffix in (".csv", ".csv.gz"):
        file = folder / f"{stem}{suffix}"
        if file.is_file():
            return read_csv(file, dtype=str)
    return None


def study_dir(subject_id: str, study_id: str) -> Path:
    return Path("files") / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def convert(
    path: Path,
    root: Path,
    source: str = "mimic_cxr",
    reports_dir: str | Path | None = None,
    max_images: int = 1,
) -> Converted:
    """`max_images` images per study, frontal views first when the metadata CSV is present."""
    split_table = _table(path, "mimic-cxr-2.0.0-split")
    if split_table is None:
        raise ConverterError(path, "mimic-cxr-2.0.0-split.csv[.gz] (dicom_id,study_id,subject_id,split)")
    absent = [c for c in ("dicom_id", "study_id", "subject_id", "split") if c not in split_table]
    if absent:
        raise ConverterError(path / "mimic-cxr-2.0.0-split.csv", f"columns; missing {absent}")
    meta = _table(path, "mimic-cxr-2.0.0-metadata")
    views = dict(zip(meta["dicom_id"], meta["ViewPosition"].fillna(""), strict=True)) if meta is not None else {}
    # `path` already includes the data root (as a mixture resolves it); only `reports_dir`
    # is relative to the root. Joining the root onto `path` again broke a relative root.
    reports = Path(reports_dir) if reports_dir else path
    if reports_dir and not reports.is_absolute():
        reports = root / reports
    out = Converted()
    grouped = split_table.groupby(["subject_id", "study_id"], sort=True)
    for row, ((subject, study), group) in enumerate(grouped):
        rid = f"{source}:s{study}"
        split = normalise_split(str(group["split"].iloc[0]), path)
        sdir = study_dir(subject, study)
        report_file = reports / sdir.with_suffix(".txt")
        if not report_file.is_file():
            out.rejections.append(
                Rejection(source, rid, "missing_report", f"no file {report_file}", str(report_file), row)
            )
            continue
        findings = extract_findings(report_file.read_text(encoding="utf-8", errors="replace"))
        if not findings:
            # A filter, not an error: the paper keeps only studies with findings (Table 7), and
            # about a third of MIMIC-CXR's reports have none, which would trip the error threshold.
            out.rejections.append(
                filtered(source, rid, report_file, row, "no_findings", "report has no FINDINGS section")
            )
            continue
        dicoms = sorted(group["dicom_id"], key=lambda d: (views.get(d, "") not in FRONTAL, d))
        images = [rel_to_root(path / sdir / f"{d}.jpg", root) for d in dicoms[:max_images]]
        out.samples.append(
            qa_sample(
                rid,
                source,
                split,
                "report",
                images,
                PROMPT,
                findings,
                meta={"subject_id": subject, "study_id": study},
                origin=f"{report_file}:0",
            )
        )
    return out
