"""What a profile's mixtures need on disk: which source files are present, which are
missing (the files the converter reads, where the dataset is published, the paper's count)
and the command that builds each mixture. Nothing is downloaded.

The registry below is data: `PUBLISHED` per source name (the same source in several
mixtures is one dataset), `PAPER_COUNTS` per `mixture.source` (the count differs between
stages), `PAPER_TOTALS` per mixture, and `NO_CONVERTER`, the datasets the paper names that
no converter here reads (left out of params.yaml, listed by the plan). docs/paper-data.md
is the same table for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dragonfly.data.config import DataConfig
from dragonfly.data.mixture import MixtureConfig, SourceSpec

PRESENT, MISSING, DROPPED = "present", "missing", "dropped"


@dataclass(frozen=True)
class Published:
    """Where a dataset is published (hub id or URL, as text) and what its converter reads.
    `needs`: globs that must match inside the source's folder (its path when that is a
    folder, else the file's folder); a name ending in "/" is a folder."""

    dataset: str
    where: str
    expects: str
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoConverter:
    """A dataset the paper trains on that no converter here reads."""

    name: str
    dataset: str
    where: str
    needs: str  # the converter it would take
    paper: str  # what the paper says of its size, as text


_SHAREGPT4V = "HF dataset Lin-Chen/ShareGPT4V (JSON); images as its docs/Data.md lays them out in its data folder"
_ALLAVA = "HF dataset FreedomIntelligence/ALLaVA-4V"
_LLAVA_MED = "github.com/microsoft/LLaVA-Med (data download section; images from PMC with its download_images.py)"
_SVIT = (
    "HF dataset BAAI/SVIT, the LLaVA-1.5-format release in format/llava-v1.5/ (the whole set; save its JSON as "
    "svit.json); its images are ShareGPT4V's vg/ and coco/ folders"
)

PUBLISHED: dict[str, Published] = {
    "llava_pretrain": Published(
        "LLaVA-Pretrain (LAION/CC/SBU BLIP captions)",
        "HF dataset liuhaotian/LLaVA-Pretrain",
        "blip_laion_cc_sbu_558k.json, and images.zip unzipped into images/",
        ("images/",),
    ),
    "sharegpt4v_cap100k": Published(
        "ShareGPT4V GPT-4V captions", _SHAREGPT4V, "sharegpt4v_instruct_gpt4-vision_cap100k.json", ("coco/train2017/",)
    ),
    "sharegpt4v_pt": Published(
        "ShareGPT4V-PT (Share-Captioner)",
        _SHAREGPT4V,
        "share-captioner_coco_lcs_sam_1246k_1107.json",
        ("coco/train2017/",),
    ),
    "sharegpt4v_sft": Published(
        "ShareGPT4V SFT mix",
        _SHAREGPT4V,
        "sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json",
        ("coco/train2017/",),
    ),
    "allava_caption_laion": Published(
        "ALLaVA Caption LAION",
        _ALLAVA,
        "allava_laion/ALLaVA-Caption-LAION-4V.json, images in allava_laion/images/",
        ("images/",),
    ),
    "allava_instruct_laion": Published(
        "ALLaVA Instruct LAION",
        _ALLAVA,
        "allava_laion/ALLaVA-Instruct-LAION-4V.json, images in allava_laion/images/",
        ("images/",),
    ),
    "allava_caption_vflan": Published(
        "ALLaVA Caption VFLAN",
        _ALLAVA,
        "allava_vflan/ALLaVA-Caption-VFLAN-4V.json, images (Vision-Flan's) in allava_vflan/images/",
        ("images/",),
    ),
    "allava_instruct_vflan": Published(
        "ALLaVA Instruct VFLAN",
        _ALLAVA,
        "allava_vflan/ALLaVA-Instruct-VFLAN-4V.json, images (Vision-Flan's) in allava_vflan/images/",
        ("images/",),
    ),
    "svit": Published("SVIT", _SVIT, "svit.json (LLaVA conversation JSON)"),
    "openhermes": Published("OpenHermes-2.5 (text only)", "HF dataset teknium/OpenHermes-2.5", "openhermes2_5.json"),
    "llava_med_alignment": Published(
        "LLaVA-Med alignment captions", _LLAVA_MED, "llava_med_alignment_500k.json, images in images/", ("images/",)
    ),
    "llava_med_instruct": Published(
        "LLaVA-Med-Instruct 60K-IM",
        _LLAVA_MED,
        "llava_med_instruct_60k_inline_mention.json, images in images/",
        ("images/",),
    ),
    "mimic_cxr": Published(
        "MIMIC-CXR-JPG 2.1.0 + MIMIC-CXR reports",
        "https://physionet.org/content/mimic-cxr-jpg/2.1.0/ (credentialed access); reports: mimic-cxr-reports.zip "
        "of https://physionet.org/content/mimic-cxr/2.0.0/, unzipped into the same folder",
        "mimic-cxr-2.0.0-split.csv.gz, mimic-cxr-2.0.0-metadata.csv.gz, files/pNN/pSUBJECT/sSTUDY/*.jpg and "
        "files/pNN/pSUBJECT/sSTUDY.txt",
        ("mimic-cxr-2.0.0-split.csv*", "files/"),
    ),
    "roco": Published(
        "ROCO (radiology)",
        "https://github.com/razorx89/roco-dataset (scripts/fetch.py), packaged with radiology*data.csv per split",
        "{train,validation,test}/radiology{train,val,test}data.csv (id,name,caption), images in radiology/images/ "
        "beside each CSV",
        ("**/radiologytraindata.csv",),
    ),
    "vqa_rad": Published(
        "VQA-RAD",
        "HF dataset flaviagiammarino/vqa-rad (the paper writes flaviagammarino)",
        "data/train-*.parquet, data/test-*.parquet (image, question, answer)",
        ("data/train-*.parquet", "data/test-*.parquet"),
    ),
    "slake": Published(
        "SLAKE 1.0",
        "https://www.med-vqa.com/slake/ (Slake1.0.zip)",
        "train.json, validate.json, test.json, imgs/xmlab*/source.jpg",
        ("train.json", "test.json", "imgs/"),
    ),
    "pathvqa": Published(
        "Path-VQA",
        "HF dataset flaviagiammarino/path-vqa (data: github.com/UCSD-AI4H/PathVQA)",
        "data/{train,validation,test}-*.parquet (image, question, answer)",
        ("data/train-*.parquet", "data/test-*.parquet"),
    ),
    "iu_xray": Published(
        "IU X-Ray",
        "https://github.com/nlpaueb/bioCaption (DownloadData().download_iu_xray(), from openi.nlm.nih.gov)",
        "train_images.tsv, test_images.tsv, iu_xray_images/",
        ("train_images.tsv", "test_images.tsv", "iu_xray_images/"),
    ),
    "peir_gross": Published(
        "PEIR Gross",
        "https://github.com/nlpaueb/bioCaption (DownloadData().download_peir_gross(), crawls peir.path.uab.edu)",
        "train_images.tsv, test_images.tsv, peir_gross_images/",
        ("train_images.tsv", "test_images.tsv", "peir_gross_images/"),
    ),
    "synth_general": Published("synthetic zoom benchmark", "generated: dragonfly prepare", "samples.jsonl"),
    "synth_biomedical": Published("synthetic zoom benchmark", "generated: dragonfly prepare", "samples.jsonl"),
}

# Table 7 prints IU X-Ray 6,698/745 and PEIR Gross 5,172/1,289. bioCaption keeps 90 % of
# PEIR's 7,443 images for training (6,698 / 745), so the two rows look swapped; kept as printed.
_TABLE7 = {"vqa_rad": 1_790, "slake": 4_919, "pathvqa": 19_654, "iu_xray": 6_698, "peir_gross": 5_172}
PAPER_COUNTS: dict[str, int] = {
    "llava_pretrain.llava_pretrain": 558_128,  # "558K" (§4.1): the whole file
    **{f"med_sft.{k}": v for k, v in _TABLE7.items()},
    "med_sft.openhermes": 70_000,  # "70K general domain text-only" (§4.3)
    **{f"med_benchmarks.{k}": v for k, v in _TABLE7.items()},
    "med_benchmarks.mimic_cxr": 25_000,
    "med_benchmarks.roco": 25_000,
}

_SWAPPED = "Table 7 as printed; its IU X-Ray and PEIR Gross rows look swapped (docs/paper-data.md)"
PAPER_NOTES: dict[str, str] = {"iu_xray": _SWAPPED, "peir_gross": _SWAPPED}

PAPER_TOTALS: dict[str, str] = {
    "llava_pretrain": "558K image-text pairs (§4.1)",
    "general_sft": "5,580,560 image-instruction pairs after de-duplication and the SVIT cap, plus text-only (appendix A)",
    "med_captions": "~1.16M image-text pairs, about half general and half biomedical (§4.3)",
    "med_sft": "723K image-text pairs, ~15 % general, plus 70K text-only (§4.3)",
    "med_benchmarks": "the benchmarks' training sets, MIMIC-CXR and ROCO 25,000 each (§4.3, Table 7)",
}

_OPENPATH = NoConverter(
    "openpath",
    "OpenPath (PLIP)",
    "https://github.com/PathologyFoundation/plip (tweet ids and PathLAION links, to fetch)",
    "a converter for the fetched image+text pairs",
    "208,414 pairs in the release (appendix C.4); share not given",
)
NO_CONVERTER: dict[str, tuple[NoConverter, ...]] = {
    "general_sft": (
        NoConverter(
            "cauldron",
            "the Cauldron, less 5 math/code subsets the paper does not name",
            "HF dataset HuggingFaceM4/the_cauldron",
            "a cauldron converter (parquet: images list + texts [{user, assistant}])",
            "not given",
        ),
        NoConverter(
            "mathinstruct",
            "MathInstruct (text only)",
            "HF dataset TIGER-Lab/MathInstruct",
            "an instruction/output text-only converter",
            "not given",
        ),
    ),
    "med_captions": (
        _OPENPATH,
        NoConverter(
            "medicat",
            "MedICaT",
            "https://github.com/allenai/medicat (on request)",
            "a medicat converter (figure/caption JSONL + figures)",
            "217,000 images in the release (appendix C.2); share not given",
        ),
    ),
    "med_sft": (
        _OPENPATH,
        NoConverter(
            "kaggle_dr",
            "Kaggle Diabetic Retinopathy",
            "https://www.kaggle.com/c/diabetic-retinopathy-detection",
            "a fundus grading converter (image + DR grade 0-4 -> question/answer)",
            "35,126 training images in the release (appendix C.5); share not given",
        ),
        NoConverter(
            "ddr",
            "DDR",
            "https://github.com/nkicssl/DDR-dataset",
            "a fundus grading converter (DR_grading/{train,valid,test}.txt)",
            "13,673 images in the release (appendix C.6); share not given",
        ),
        NoConverter(
            "arxivcap",
            "ArXivCap",
            "HF dataset MMInstruction/ArxivCap",
            "an arxivcap converter (parquet of figures and captions)",
            "part of the ~15 % general share; not given",
        ),
    ),
}


@dataclass(frozen=True)
class SourceStatus:
    """One source of a mixture on disk. `absent`: what is not there (the source's path, or
    the files and folders it needs beside it)."""

    mixture: str
    name: str
    state: str
    path: str = ""
    format: str = ""
    absent: tuple[str, ...] = ()
    published: Published | None = None
    paper_count: int | None = None
    cap: int | None = None

    @property
    def key(self) -> str:
        return f"{self.mixture}.{self.name}"


@dataclass(frozen=True)
class MixturePlan:
    name: str
    stages: tuple[str, ...]
    sources: tuple[SourceStatus, ...]
    no_converter: tuple[NoConverter, ...] = ()
    paper_total: str = ""
    dropped: tuple[str, ...] = ()

    @property
    def missing(self) -> list[SourceStatus]:
        return [s for s in self.sources if s.state == MISSING]


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def _absent(spec: SourceSpec, root: Path) -> tuple[str, ...]:
    """What of `spec` is not on disk, as paths relative to the data root where they can be."""
    path = Path(spec.path) if Path(spec.path).is_absolute() else root / spec.path
    if not path.exists():
        return (spec.path,)
    published = PUBLISHED.get(spec.name)
    folder = _folder(path)
    out = []
    for pattern in published.needs if published else ():
        found = (folder / pattern).is_dir() if pattern.endswith("/") else any(folder.glob(pattern))
        if not found:  # the pattern as written: a folder keeps its "/"
            out.append(f"{_shown(folder, root)}/{pattern}")
    return tuple(out)


def _shown(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def source_status(mixture: str, spec: SourceSpec, root: Path) -> SourceStatus:
    absent = _absent(spec, root)
    return SourceStatus(
        mixture,
        spec.name,
        MISSING if absent else PRESENT,
        spec.path,
        spec.format,
        absent,
        PUBLISHED.get(spec.name),
        PAPER_COUNTS.get(f"{mixture}.{spec.name}"),
        spec.cap,
    )


def plan_mixture(
    mix: MixtureConfig, root: Path, stages: tuple[str, ...] = (), dropped: tuple[str, ...] = ()
) -> MixturePlan:
    """The plan of one mixture; `dropped`: the `MIXTURE.SOURCE` drops of the data config."""
    mine = tuple(d.partition(".")[2] for d in dropped if d.partition(".")[0] == mix.name)
    statuses = [source_status(mix.name, spec, root) for spec in mix.sources]
    statuses += [
        SourceStatus(
            mix.name, name, DROPPED, published=PUBLISHED.get(name), paper_count=PAPER_COUNTS.get(f"{mix.name}.{name}")
        )
        for name in mine
    ]
    return MixturePlan(
        mix.name, stages, tuple(statuses), NO_CONVERTER.get(mix.name, ()), PAPER_TOTALS.get(mix.name, ""), mine
    )


def plan(stage_mixtures: dict[str, str], cfg: DataConfig, root: Path) -> list[MixturePlan]:
    """One plan per mixture the stages use (stage name -> mixture name), in stage order."""
    by_mixture: dict[str, list[str]] = {}
    for stage, mixture in stage_mixtures.items():
        by_mixture.setdefault(mixture, []).append(stage)
    return [plan_mixture(cfg.mixture(m), root, tuple(stages), cfg.dropped) for m, stages in by_mixture.items()]


def nothing_present(mix: MixtureConfig, root: Path) -> bool:
    """Whether none of `mix`'s source paths exists under `root` (a dataset never fetched)."""
    return all(not (root / s.path).exists() for s in mix.sources)


def build_command(name: str, root: str, drops: list[str] | tuple[str, ...] = ()) -> str:
    flags = "".join(f" --drop {d}" for d in drops)
    return f"dragonfly data build --mixture {name} --root {root}{flags}"


def _count(n: int | None) -> str:
    return f"{n:,}" if n is not None else "not given"


def render(plans: list[MixturePlan], root: str, cli_drops: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The plan as text lines; `cli_drops` go into the build commands (`--drop`)."""
    lines = [f"data root: {root}"]
    for p in plans:
        lines += ["", f"{p.name} (stage {', '.join(p.stages)}): {p.paper_total or 'not in the paper'}"]
        for s in p.sources:
            lines += _source_lines(s)
        for n in p.no_converter:
            lines.append(f"  no converter yet  {n.name}: {n.dataset} ({n.where}); needs {n.needs}; paper: {n.paper}")
        mine = [d for d in cli_drops if d.partition(".")[0] == p.name]
        lines.append(f"  build: {build_command(p.name, root, mine)}")
    return lines


def errors(plans: list[MixturePlan], root: str) -> list[str]:
    """One line per missing source, naming it, what is absent and where to get it."""
    out = []
    for s in (s for p in plans for s in p.missing):
        where = s.published.where if s.published else "nowhere known (not in dragonfly/data/plan.py)"
        out.append(f"missing source {s.key}: {', '.join(s.absent)} not under {root}; get it from {where}")
    return out


def _source_lines(s: SourceStatus) -> list[str]:
    paper = f"paper: {_count(s.paper_count)}"
    if s.paper_count is not None and s.name in PAPER_NOTES:
        paper += f", {PAPER_NOTES[s.name]}"
    if s.cap is not None:
        paper += f"; cap {s.cap:,}"
    if s.state == DROPPED:
        return [f"  dropped  {s.name} ({paper})"]
    head = f"  {s.state:<8} {s.name} [{s.format}] {s.path} ({paper})"
    if s.state == PRESENT:
        return [head]
    pub = s.published
    lines = [head, f"           not found: {', '.join(s.absent)}"]
    if pub:
        lines += [f"           expects: {pub.expects}", f"           from: {pub.dataset}: {pub.where}"]
    return lines
