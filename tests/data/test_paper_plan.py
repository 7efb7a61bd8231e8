"""The paper's mixtures of params.yaml, for real: every source in its release's on-disk
layout under one data root (a few rows each), every mixture built with its per-source
counts in stats.json, and `dragonfly data plan` on that root (present, missing, dropped)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dragonfly.cli import main
from dragonfly.config import load_profile
from dragonfly.data.config import load_data_config
from dragonfly.data.manifest import StaleDatasetError, verify_dataset
from dragonfly.data.mixture import build_mixture
from dragonfly.data.plan import NO_CONVERTER, PAPER_COUNTS, PUBLISHED
from dragonfly.data.sources import FORMATS, converter_options
from dragonfly.pipeline import prepare_data
from dragonfly.train.config import load_stage, stage_names

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"
BIN = Path(sys.executable).parent / "dragonfly"
MIXTURES = ("llava_pretrain", "general_sft", "med_captions", "med_sft", "med_benchmarks")
# Caps that are not a count the paper prints: the even split of med_sft's general share.
OUR_CAPS = {"med_sft.sharegpt4v_cap100k", "med_sft.svit"}

# The fixtures below, per source and split, as each mixture must count them.
BENCH = {
    "vqa_rad": {"train": 3, "test": 1},
    "slake": {"train": 3, "validation": 1, "test": 1},  # + one Chinese row, filtered
    "pathvqa": {"train": 3, "validation": 1, "test": 1},
    "mimic_cxr": {"train": 2, "test": 1},
    "roco": {"train": 2, "validation": 1, "test": 1},
    "iu_xray": {"train": 2, "test": 1},
    "peir_gross": {"train": 2, "test": 1},
}
EXPECTED = {
    "llava_pretrain": {"llava_pretrain": {"train": 3}},
    "general_sft": {
        "sharegpt4v_cap100k": {"train": 2},
        "sharegpt4v_pt": {"train": 2},
        **{f"allava_{k}": {"train": 2} for k in ("caption_laion", "instruct_laion", "caption_vflan", "instruct_vflan")},
        "openhermes": {"train": 3},
        # sharegpt4v_sft (4 rows) and svit (11 rows) share one image over the SVIT cap: below.
    },
    "med_captions": {"llava_pretrain": {"train": 3}, "llava_med_alignment": {"train": 2}},
    "med_sft": {
        "llava_med_instruct": {"train": 2},
        **BENCH,
        "sharegpt4v_cap100k": {"train": 2},
        "svit": {"train": 11},  # no per-image cap here
        "openhermes": {"train": 3},
    },
    "med_benchmarks": BENCH,
}


def _human(text: str, image: bool = True) -> dict:
    return {"from": "human", "value": f"<image>\n{text}" if image else text}


def _gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def _llava(rid: str, image: str | None, question: str, answer: str) -> dict:
    rec = {"id": rid, "conversations": [_human(question, image is not None), _gpt(answer)]}
    return rec if image is None else {**rec, "image": image}


def write_paper_layout(root: Path, files) -> Path:
    """Every source of the paper's mixtures where params.yaml looks for it, as published."""
    # LLaVA-Pretrain: the JSON beside images/ (images.zip unzipped).
    for i in range(3):
        files.image(root / f"LLaVA-Pretrain/images/00000/00000000{i}.jpg", color=(i, 9, 9))
    files.json(root / "LLaVA-Pretrain/blip_laion_cc_sbu_558k.json", [
        _llava(f"00000000{i}", f"00000/00000000{i}.jpg", "Render a clear and concise summary of the photo.", f"a photo {i}")
        for i in range(3)
    ])  # fmt: skip

    # ShareGPT4V's data folder: its JSONs beside the image folders they name; SVIT uses the same.
    s4v = root / "sharegpt4v"
    for rel in ("coco/train2017/000000000009.jpg", "sam/images/sa_1.jpg", "vg/VG_100K/1.jpg", "vg/VG_100K/2.jpg"):
        files.image(s4v / rel, color=(len(rel), 1, 2))
    files.json(s4v / "sharegpt4v_instruct_gpt4-vision_cap100k.json", [
        _llava("000000000009", "coco/train2017/000000000009.jpg", "What is in the photo?", "A bowl of fruit."),
        _llava("sa_1", "sam/images/sa_1.jpg", "Describe the image in detail.", "A street at night."),
    ])  # fmt: skip
    files.json(s4v / "share-captioner_coco_lcs_sam_1246k_1107.json", [
        _llava("000000000009", "coco/train2017/000000000009.jpg", "Analyze the image in a comprehensive way.", "Fruit."),
        _llava("sa_1", "sam/images/sa_1.jpg", "Analyze the image in a comprehensive way.", "Lamps."),
    ])  # fmt: skip
    files.json(s4v / "sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json", [
        {"id": "9", "image": "coco/train2017/000000000009.jpg", "conversations": [
            _human("How many apples?"), _gpt("Two."), _human("Any pears?", image=False), _gpt("No.")]},
        _llava("vg-1", "vg/VG_100K/1.jpg", "What colour is the bus?", "Red."),
        _llava("vg-2", "vg/VG_100K/2.jpg", "Where is the dog?", "On the sofa."),
        _llava("sharegpt-1", None, "Write a haiku about rain.", "Soft rain on the roof."),
    ])  # fmt: skip
    # SVIT asks many questions about one image: 10 on vg/1 (plus ShareGPT4V's one: 11 > 8).
    files.json(root / "SVIT/svit.json", [
        *(_llava(f"1-{k}", "vg/VG_100K/1.jpg", f"Question {k} about the bus?", f"Answer {k}.") for k in range(10)),
        _llava("2-0", "vg/VG_100K/2.jpg", "Is the dog asleep?", "Yes."),
    ])  # fmt: skip

    # ALLaVA-4V: image paths from the repository's root.
    allava = root / "ALLaVA-4V"
    files.image(allava / "allava_laion/images/100277305.jpeg")
    files.image(allava / "allava_vflan/images/images_191task_1k/task1/1.jpg")
    for part, image in (("laion", "allava_laion/images/100277305.jpeg"),
                        ("vflan", "allava_vflan/images/images_191task_1k/task1/1.jpg")):  # fmt: skip
        for kind in ("Caption", "Instruct"):
            files.json(allava / f"allava_{part}/ALLaVA-{kind}-{part.upper()}-4V.json", [
                _llava(f"allava_{part}_{kind}_{k}", image, f"{kind} question {k}?", f"{kind} answer {k}.") for k in range(2)
            ])  # fmt: skip

    # OpenHermes-2.5: text only, some records with a system turn, no id.
    files.json(root / "OpenHermes-2.5/openhermes2_5.json", [
        {"conversations": [{"from": "system", "value": "You are a helpful assistant.", "weight": None},
                           {"from": "human", "value": f"What is {k} + {k}?", "weight": None},
                           {"from": "gpt", "value": str(2 * k), "weight": None}], "source": "metamath"}
        for k in range(3)
    ])  # fmt: skip

    # LLaVA-Med: both JSONs beside the images its download script writes.
    for k in range(2):
        files.image(root / f"llava_med/images/PMC100{k}_F1.jpg", color=(k, 50, 50))
    files.json(root / "llava_med/llava_med_alignment_500k.json", [
        _llava(f"PMC100{k}_F1", f"PMC100{k}_F1.jpg", "Provide a brief description of the image.", f"CT scan {k}.")
        for k in range(2)
    ])  # fmt: skip
    files.json(root / "llava_med/llava_med_instruct_60k_inline_mention.json", [
        {"id": f"PMC100{k}", "image": f"PMC100{k}_F1.jpg", "conversations": [
            _human("What modality is this?"), _gpt("CT."), _human("Any lesion?", image=False), _gpt(f"Lesion {k}.")]}
        for k in range(2)
    ])  # fmt: skip

    _write_mimic(root / "mimic-cxr-jpg", files)
    _write_roco(root / "roco/all_data", files)
    _write_hub_parquet(root / "vqa-rad/data", files, {"train": 3, "test": 1})
    _write_hub_parquet(root / "path-vqa/data", files, {"train": 3, "validation": 1, "test": 1})
    _write_slake(root / "Slake1.0", files)
    for name, exts in (("iu_xray", ".png"), ("peir_gross", ".jpg")):
        _write_biocaption(root / name, files, exts)
    return root


REPORT = "FINAL REPORT\n FINDINGS:\n The lungs are clear {k}.\n \n IMPRESSION:\n No acute process.\n"


def _write_mimic(folder: Path, files) -> None:
    """MIMIC-CXR-JPG 2.1.0 (gzipped tables, files/ tree) with the reports unzipped into it."""
    studies = [("10000032", "50000001", "train"), ("10000032", "50000002", "train"), ("10000099", "50000003", "test")]
    split = ["dicom_id,study_id,subject_id,split"] + [f"d{st},{st},{su},{sp}" for su, st, sp in studies]
    meta = ["dicom_id,study_id,subject_id,ViewPosition"] + [f"d{st},{st},{su},PA" for su, st, _ in studies]
    folder.mkdir(parents=True)
    (folder / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(gzip.compress("\n".join(split).encode() + b"\n"))
    (folder / "mimic-cxr-2.0.0-metadata.csv.gz").write_bytes(gzip.compress("\n".join(meta).encode() + b"\n"))
    for k, (subject, study, _) in enumerate(studies):
        sdir = folder / "files" / f"p{subject[:2]}" / f"p{subject}"
        files.image(sdir / f"s{study}" / f"d{study}.jpg", color=(k, 0, 0))
        (sdir / f"s{study}.txt").write_text(REPORT.format(k=k))


def _write_roco(folder: Path, files) -> None:
    """The packaged ROCO release: one folder per split, the CSV beside radiology/images/."""
    rows = {"train": 2, "validation": 1, "test": 1}
    names = {"train": "train", "validation": "val", "test": "test"}
    for split, n in rows.items():
        lines = ["id,name,caption"]
        for k in range(n):
            image = f"PMC{split}{k}_fig.jpg"
            files.image(folder / split / "radiology/images" / image, color=(k, 1, 1))
            lines.append(f"ROCO_{split}_{k},{image},CT of the chest {split} {k}")
        (folder / split / f"radiology{names[split]}data.csv").write_text("\n".join(lines) + "\n")


def _write_hub_parquet(folder: Path, files, splits: dict[str, int]) -> None:
    """HF hub parquet shards (VQA-RAD, Path-VQA): image bytes, question, answer."""
    for s, (split, n) in enumerate(splits.items()):
        rows = [
            {
                "image": files.hf_image(files.image_bytes((32, 32), (s, k, 7))),
                "question": f"is there a lesion in {split} image {k}?",
                "answer": "yes" if k % 2 else "left lung",
            }
            for k in range(n)
        ]
        files.parquet(folder / f"{split}-00000-of-00001-a1b2c3.parquet", rows)


def _write_slake(folder: Path, files) -> None:
    for k in (1, 2, 3):
        files.image(folder / f"imgs/xmlab{k}/source.jpg", color=(k, 2, 2))

    def rec(qid: int, img: int, question: str, answer: str, lang: str = "en") -> dict:
        return {"img_id": img, "img_name": f"xmlab{img}/source.jpg", "question": question, "answer": answer,
                "q_lang": lang, "answer_type": "OPEN", "qid": qid, "location": "Lung", "modality": "CT",
                "content_type": "Organ", "base_type": "vqa"}  # fmt: skip

    files.json(folder / "train.json", [
        rec(0, 1, "What modality is used?", "CT"), rec(1, 1, "Which organ is shown?", "Lung"),
        rec(2, 1, "图片中包含肝脏吗?", "是", "zh"), rec(3, 1, "Where is the lesion?", "Left"),
    ])  # fmt: skip
    files.json(folder / "validate.json", [rec(10, 2, "What modality is used?", "MRI")])
    files.json(folder / "test.json", [rec(20, 3, "What modality is used?", "X-Ray")])


def _write_biocaption(folder: Path, files, ext: str) -> None:
    """bioCaption's download: train/test TSVs (no header) beside <name>_images/."""
    splits = {"train_images.tsv": 2, "test_images.tsv": 1}
    for t, (tsv, n) in enumerate(splits.items()):
        lines = []
        for k in range(n):
            image = f"{folder.name}-{t}-{k}{ext}"
            files.image(folder / f"{folder.name}_images" / image, color=(t, k, 3))
            lines.append(f"{image}\tCaption of {folder.name} {t} {k}.")
        (folder / tsv).write_text("\n".join(lines) + "\n")


@pytest.fixture
def paper_root(tmp_path: Path, files) -> Path:
    return write_paper_layout(tmp_path / "data", files)


def test_every_paper_mixture_builds_with_the_counts_per_source(paper_root: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = load_data_config(PARAMS)
    monkeypatch.chdir(paper_root.parent)  # a relative data root, as params.yaml's `data`
    for name in MIXTURES:
        result = build_mixture(cfg.mixture(name), Path(paper_root.name), tmp_path / "built" / name)
        per_source = json.loads(result.stats_path.read_text())["per_source"]
        assert set(per_source) == {s.name for s in cfg.mixture(name).sources}, name
        for source, splits in EXPECTED[name].items():
            assert per_source[source]["per_split"] == splits, (name, source)
            assert per_source[source]["rejected"] == 0, (name, source)
    # The SVIT rule in general_sft: the one image with 11 questions (10 SVIT, 1 ShareGPT4V) keeps 8.
    svit, sft = per_source_of(tmp_path / "built/general_sft", "svit", "sharegpt4v_sft")
    assert svit["over_image_cap"] + sft["over_image_cap"] == 3
    assert svit["samples"] + sft["samples"] == 11 + 4 - 3
    # Chinese SLAKE rows are filtered, as the paper keeps English only.
    (slake,) = per_source_of(tmp_path / "built/med_benchmarks", "slake")
    assert slake["filtered"] == 1


def per_source_of(build: Path, *names: str) -> list[dict]:
    per_source = json.loads((build / "stats.json").read_text())["per_source"]
    return [per_source[n] for n in names]


def test_the_paper_mixtures_are_consistent_with_the_profile_and_the_registry() -> None:
    cfg = load_data_config(PARAMS)
    paper = load_profile("paper", PARAMS)
    assert [load_stage(paper, s).data.mixture for s in stage_names(paper)] == list(MIXTURES)
    for name in MIXTURES:
        mix = cfg.mixture(name)
        missing_names = {n.name for n in NO_CONVERTER.get(name, ())}
        for spec in mix.sources:
            key = f"{name}.{spec.name}"
            assert spec.format in FORMATS and set(spec.options) <= set(converter_options(spec.format)), key
            assert spec.name in PUBLISHED and spec.name not in missing_names, key
            if spec.cap is not None:  # a cap is the paper's count, or one of ours named above
                assert spec.cap == PAPER_COUNTS.get(key) or key in OUR_CAPS, key
            if spec.format == "llava" and not Path(spec.path).name.startswith(("train", "val", "test")):
                assert spec.options.get("split") == "train", key  # the converter refuses to guess
    assert all(key.split(".")[1] in {s.name for s in cfg.mixture(key.split(".")[0]).sources} for key in PAPER_COUNTS)


def _project(tmp_path: Path, files) -> Path:
    """A checkout as a user has it: params.yaml in the working directory, the data root below."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PARAMS, project / "params.yaml")
    write_paper_layout(project / "data", files)
    return project


def test_plan_through_the_installed_command_with_relative_paths(tmp_path: Path, files) -> None:
    project = _project(tmp_path, files)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [str(BIN), "data", "plan", "--profile", "paper", "--root", "data"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for name in MIXTURES:
        assert f"  build: dragonfly data build --mixture {name} --root data\n" in out
    assert "  present  vqa_rad [vqa_rad] vqa-rad (paper: 1,790; cap 1,790)" in out
    assert "  present  mimic_cxr [mimic_cxr] mimic-cxr-jpg (paper: 25,000; cap 25,000)" in out
    assert "  no converter yet  cauldron" in out and "  no converter yet  kaggle_dr" in out
    assert "missing" not in out and "error" not in done.stderr


def plan_in_process(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "plan", "--profile", "paper", "--root", "data", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_plan_names_each_missing_source_and_builds_without_a_dropped_one(
    tmp_path: Path, files, capsys, monkeypatch
) -> None:
    project = _project(tmp_path, files)
    monkeypatch.chdir(project)
    shutil.rmtree("data/vqa-rad")  # in med_sft and med_benchmarks
    shutil.rmtree("data/LLaVA-Pretrain/images")  # the JSON is there, its images are not
    code, out, err = plan_in_process(capsys)
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert [e.split(":")[1].strip() for e in errors] == [
        "missing source llava_pretrain.llava_pretrain",
        "missing source med_captions.llava_pretrain",
        "missing source med_sft.vqa_rad",
        "missing source med_benchmarks.vqa_rad",
    ]
    assert "LLaVA-Pretrain/images/ not under data; get it from HF dataset liuhaotian/LLaVA-Pretrain" in errors[0]
    assert "vqa-rad not under data; get it from HF dataset flaviagiammarino/vqa-rad" in errors[2]
    assert "           expects: data/train-*.parquet, data/test-*.parquet" in out
    assert "--drop MIXTURE.SOURCE" in err

    # Dropped explicitly, a missing source is no error, and the build commands carry the drops.
    drops = ["--drop", "med_sft.vqa_rad", "--drop", "med_benchmarks.vqa_rad"]
    code, out, err = plan_in_process(capsys, *drops, "--drop", "llava_pretrain.llava_pretrain")
    assert code == 1  # llava_pretrain.llava_pretrain was its mixture's only source
    assert "would leave mixture 'llava_pretrain' with no source" in err
    code, out, err = plan_in_process(capsys, *drops, "--drop", "med_captions.llava_pretrain")
    assert code == 1 and [line.split(":")[1] for line in err.splitlines() if line.startswith("error")] == [
        " missing source llava_pretrain.llava_pretrain"
    ]
    assert "  dropped  vqa_rad (paper: 1,790)" in out
    assert "  build: dragonfly data build --mixture med_benchmarks --root data --drop med_benchmarks.vqa_rad" in out

    # An unknown drop is an error naming it and the close match.
    code, out, err = plan_in_process(capsys, "--drop", "med_sft.vqa_radd")
    assert code == 1 and "no source 'vqa_radd' (did you mean 'vqa_rad'?)" in err


def test_build_with_a_drop_is_the_mixture_the_trainer_expects(tmp_path: Path, files, capsys, monkeypatch) -> None:
    project = _project(tmp_path, files)
    monkeypatch.chdir(project)
    shutil.rmtree("data/vqa-rad")
    with pytest.raises(SystemExit) as done:
        main(["data", "build", "--mixture", "med_benchmarks", "--root", "data", "--drop", "med_benchmarks.vqa_rad"])
    assert done.value.code in (0, None), capsys.readouterr()
    out = Path("data/mixtures/med_benchmarks")
    assert "vqa_rad" not in json.loads((out / "stats.json").read_text())["per_source"]
    # `train --set 'data.drop=[...]'` loads the same mixture; without the drop the build is refused.
    verify_dataset(out, load_data_config("params.yaml", ["drop=[med_benchmarks.vqa_rad]"]).mixture("med_benchmarks"))
    with pytest.raises(StaleDatasetError, match="vqa_rad"):
        verify_dataset(out, load_data_config("params.yaml").mixture("med_benchmarks"))


def test_prepare_skips_a_mixture_none_of_whose_sources_is_there(tmp_path: Path, monkeypatch, capsys) -> None:
    import yaml

    tree = yaml.safe_load(PARAMS.read_text())
    tree["data"]["synth"] = [{"variant": "general", "n_train": 2, "n_validation": 1, "n_test": 1}]
    tree["data"]["mixtures"] = {k: tree["data"]["mixtures"][k] for k in ("tiny_general", "llava_pretrain")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    built = prepare_data("params.yaml")
    assert list(built) == ["tiny_general"]
    assert "skipped mixture llava_pretrain: none of its sources is under data" in capsys.readouterr().out
