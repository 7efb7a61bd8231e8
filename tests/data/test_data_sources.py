"""Each converter on a small fixture in its release's exact layout, asserting field values."""

from __future__ import annotations

from pathlib import Path

import pytest

from dragonfly.data.quarantine import FILTERED, ConverterError
from dragonfly.data.sources import convert
from dragonfly.data.sources.mimic_cxr import extract_findings
from dragonfly.data.validate import validate_samples

SHORT = "Answer the question using a single word or phrase."


def by_id(result):
    return {s.id: s for s in result.samples}


def test_llava_conversations(tmp_path: Path, files) -> None:
    root = tmp_path
    files.image(root / "llava/images/00001/000012.jpg")
    files.image(root / "llava/images/a.jpg")
    files.image(root / "llava/images/b.jpg")
    records = [
        {"id": "000012", "image": "00001/000012.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWrite a terse but informative summary."},
            {"from": "gpt", "value": "a red square "}]},
        {"id": "med-7", "image": ["a.jpg", "b.jpg"], "conversations": [
            {"from": "human", "value": "<image>\n<image>\nCompare the two scans."},
            {"from": "gpt", "value": "Left is larger."},
            {"from": "human", "value": "Any effusion?"},
            {"from": "gpt", "value": "No."}]},
        {"id": "txt-1", "conversations": [
            {"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]},
        {"id": "bad", "image": "a.jpg", "conversations": [{"from": "robot", "value": "x"}]},
        ["not", "a", "record"],
    ]  # fmt: skip
    path = files.json(root / "llava/blip_laion_cc_sbu_558k.json", records)
    out = convert(
        "llava", path, root, source="llava_pretrain", split="train", task="caption", image_folder="llava/images"
    )
    s = by_id(out)
    a = s["llava_pretrain:000012"]
    assert (a.task, a.split, a.images) == ("caption", "train", ("llava/images/00001/000012.jpg",))
    assert a.messages() == [
        {"role": "user", "content": "<image>\nWrite a terse but informative summary."},
        {"role": "assistant", "content": "a red square"},
    ]
    b = s["llava_pretrain:med-7"]
    assert b.images == ("llava/images/a.jpg", "llava/images/b.jpg")
    assert [t.role for t in b.turns] == ["user", "assistant", "user", "assistant"]
    assert b.answers == ("No.",)
    c = s["llava_pretrain:txt-1"]
    assert (c.task, c.images, c.answers) == ("text_only", (), ("4",))
    assert sorted(r.reason for r in out.rejections) == ["malformed_row", "malformed_row"]
    bad = next(r for r in out.rejections if r.id == "llava_pretrain:bad")
    assert bad.row == 3 and bad.file == str(path) and '"from"' in bad.detail
    assert not validate_samples(out.samples, root).rejections


@pytest.mark.parametrize("fmt", ["vqa_rad", "pathvqa"])
def test_medical_vqa_parquet(tmp_path: Path, files, fmt: str) -> None:
    x = files.image_bytes((50, 50), (1, 2, 3))
    y = files.image_bytes((60, 40), (9, 9, 9), "PNG")
    data = tmp_path / "hub" / fmt / "data"
    files.parquet(data / "train-00000-of-00001-e7b3a1.parquet", [
        {"image": files.hf_image(x), "question": "is there evidence of an aortic aneurysm?", "answer": "Yes"},
        {"image": files.hf_image(x), "question": "where is the lesion?", "answer": "left temporal lobe"},
        {"image": files.hf_image(y, "y.png"), "question": "how many kidneys?", "answer": "2"},
    ])  # fmt: skip
    files.parquet(data / "test-00000-of-00001-0f6c1d.parquet", [
        {"image": files.hf_image(y, "y.png"), "question": "is this an mri?", "answer": " NO"},
        {"image": None, "question": "is it normal?", "answer": "yes"},
        {"image": files.hf_image(x), "question": "what organ?", "answer": ""},
    ])  # fmt: skip
    out = convert(fmt, tmp_path / "hub" / fmt, tmp_path)
    s = by_id(out)
    first = s[f"{fmt}:train:0"]
    assert (first.task, first.answers, first.split) == ("vqa_closed", ("yes",), "train")
    assert first.turns[0].text == f"<image>\nis there evidence of an aortic aneurysm?\n{SHORT}"
    assert s[f"{fmt}:train:1"].task == "vqa_open" and s[f"{fmt}:train:1"].answers == ("left temporal lobe",)
    # Numeric answers stay open answers, not yes/no.
    assert s[f"{fmt}:train:2"].answers == ("2",) and s[f"{fmt}:train:2"].task == "vqa_open"
    assert s[f"{fmt}:test:0"].answers == ("no",) and s[f"{fmt}:test:0"].split == "test"
    # Same picture, same stored file (content-addressed), under images/<source>/.
    assert first.images == s[f"{fmt}:train:1"].images
    assert first.images[0].startswith(f"images/{fmt}/") and first.images[0].endswith(".jpg")
    assert s[f"{fmt}:train:2"].images[0].endswith(".png")
    assert [(r.id, r.reason) for r in out.rejections] == [(f"{fmt}:test:1", "malformed_row")]
    checked = validate_samples(out.samples, tmp_path)
    assert [(r.id, r.reason) for r in checked.rejections] == [(f"{fmt}:test:2", "empty_answer")]


def test_parquet_missing_column_names_file(tmp_path: Path, files) -> None:
    path = files.parquet(tmp_path / "train-00000-of-00001.parquet", [{"question": "q", "answer": "a"}])
    with pytest.raises(ConverterError, match=r"train-00000-of-00001\.parquet.*missing \['image'\]"):
        convert("vqa_rad", path, tmp_path)


def test_slake_english_only(tmp_path: Path, files) -> None:
    slake = tmp_path / "Slake1.0"
    files.image(slake / "imgs/xmlab1/source.jpg")
    files.image(slake / "imgs/xmlab102/source.jpg")
    base = {"img_id": 1, "img_name": "xmlab1/source.jpg", "location": "Abdomen", "modality": "MRI",
            "content_type": "Modality", "base_type": "vqa", "triple": ["vhead", "_", "_"]}  # fmt: skip
    files.json(slake / "train.json", [
        base | {"qid": 0, "question": "What modality is used to take this image?", "answer": "MRI",
                "q_lang": "en", "answer_type": "OPEN"},
        base | {"qid": 1, "question": "Does the picture contain liver?", "answer": "Yes",
                "q_lang": "en", "answer_type": "CLOSED", "content_type": "Organ"},
        base | {"qid": 2, "question": "图片中包含肝脏吗?", "answer": "是", "q_lang": "zh",
                "answer_type": "CLOSED"},
        base | {"qid": 3, "question": "Which is bigger, spleen or liver?", "answer": "Liver",
                "q_lang": "en", "answer_type": "CLOSED"},
        {"qid": 4, "question": "no image name", "answer": "x", "q_lang": "en", "answer_type": "OPEN"},
    ])  # fmt: skip
    files.json(slake / "validate.json", [
        base | {"img_id": 102, "img_name": "xmlab102/source.jpg", "qid": 10, "question": "How many lungs?",
                "answer": 2, "q_lang": "en", "answer_type": "OPEN"},
    ])  # fmt: skip
    files.json(slake / "test.json", [])
    out = convert("slake", slake, tmp_path)
    s = by_id(out)
    assert set(s) == {"slake:train:0", "slake:train:1", "slake:train:3", "slake:validation:10"}
    a = s["slake:train:0"]
    assert (a.task, a.answers, a.images) == (
        "vqa_open",
        ("MRI",),
        ("Slake1.0/imgs/xmlab1/source.jpg",),
    )
    assert a.meta["modality"] == "MRI" and a.meta["answer_type"] == "OPEN"
    assert s["slake:train:1"].task == "vqa_closed" and s["slake:train:1"].answers == ("yes",)
    assert s["slake:train:3"].task == "vqa_closed" and s["slake:train:3"].answers == ("Liver",)
    assert s["slake:validation:10"].split == "validation" and s["slake:validation:10"].answers == ("2",)
    zh = next(r for r in out.rejections if r.reason == "non_english")
    assert (zh.id, zh.kind, zh.row, zh.detail) == ("slake:train:2", FILTERED, 2, "q_lang=zh")
    bad = next(r for r in out.rejections if r.reason == "malformed_row")
    assert bad.id == "slake:train:4" and "img_name" in bad.detail


def test_biocaption_tsv_peir_gross(tmp_path: Path, files) -> None:
    folder = tmp_path / "peir_gross"
    files.image(folder / "peir_gross_images/PEIR-1.jpg")
    files.image(folder / "peir_gross_images/PEIR-2.jpg")
    (folder / "train_images.tsv").write_text(
        "PEIR-1.jpg\tAortic dissection: Gross natural color excellent example\nPEIR-2.jpg\tSpleen: Infarct, gross\n"
    )
    (folder / "test_images.tsv").write_text("PEIR-3.jpg\tLiver: Cirrhosis\nbroken line without tab\n")
    out = convert("biocaption", folder, tmp_path, source="peir_gross")
    s = by_id(out)
    a = s["peir_gross:PEIR-1.jpg"]
    assert (a.task, a.split, a.images) == (
        "caption",
        "train",
        ("peir_gross/peir_gross_images/PEIR-1.jpg",),
    )
    assert a.answers == ("Aortic dissection: Gross natural color excellent example",)
    assert s["peir_gross:PEIR-3.jpg"].split == "test"
    assert [r.reason for r in out.rejections] == ["malformed_row"]
    checked = validate_samples(out.samples, tmp_path)
    assert [(r.id, r.reason) for r in checked.rejections] == [("peir_gross:PEIR-3.jpg", "missing_image")]


def test_biocaption_r2gen_iu_xray(tmp_path: Path, files) -> None:
    iu = tmp_path / "iu_xray"
    for p in ("CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png", "CXR1_1_IM-0001/0.png"):
        files.image(iu / "images" / p)
    files.json(iu / "annotation.json", {
        "train": [{"id": "CXR2384_IM-0942", "report": "The heart size is normal. No effusion.",
                   "image_path": ["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"], "split": "train"}],
        "val": [{"id": "CXR1_1_IM-0001", "report": "", "image_path": ["CXR1_1_IM-0001/0.png"], "split": "val"}],
        "test": [{"id": "no-images", "report": "x"}],
    })  # fmt: skip
    out = convert("biocaption", iu, tmp_path, source="iu_xray")
    s = by_id(out)
    a = s["iu_xray:CXR2384_IM-0942"]
    assert a.task == "report" and len(a.images) == 2
    assert a.images[1] == "iu_xray/images/CXR2384_IM-0942/1.png"
    assert a.turns[0].text.startswith("<image>\n<image>\n")
    assert s["iu_xray:CXR1_1_IM-0001"].split == "validation"
    assert [(r.id, r.reason) for r in out.rejections] == [("iu_xray:no-images", "malformed_row")]
    checked = validate_samples(out.samples, tmp_path)
    assert [(r.id, r.reason) for r in checked.rejections] == [("iu_xray:CXR1_1_IM-0001", "empty_answer")]


def test_roco_csv(tmp_path: Path, files) -> None:
    train = tmp_path / "roco/all_data/train"
    files.image(train / "radiology/images/PMC4083729_AMHSR-4-14-g002.jpg")
    (train / "radiologytraindata.csv").write_text(
        "id,name,caption\n"
        'ROCO_00002,PMC4083729_AMHSR-4-14-g002.jpg," Computed tomography scan in axial view showing obliteration, of the left maxillary sinus"\n'
        "ROCO_00003,,missing name\n"
    )
    out = convert("roco", tmp_path / "roco", tmp_path)
    [a] = out.samples
    assert a.id == "roco:ROCO_00002" and a.split == "train" and a.task == "caption"
    assert a.images == ("roco/all_data/train/radiology/images/PMC4083729_AMHSR-4-14-g002.jpg",)
    assert a.answers == ("Computed tomography scan in axial view showing obliteration, of the left maxillary sinus",)
    assert [(r.id, r.reason) for r in out.rejections] == [("roco:ROCO_00003", "malformed_row")]


# Real reports have blank lines holding a single space, kept here on purpose.
REPORT_COLON = (
    "                                 FINAL REPORT\n"
    " EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  History: F with shortness of breath\n \n"
    " FINDINGS:\n \n The cardiac, mediastinal and hilar contours are normal.  No pleural effusion\n"
    " or pneumothorax is seen.\n \n IMPRESSION:\n \n No acute cardiopulmonary abnormality.\n"
)
REPORT_VARIANT = """FINAL REPORT
FINDINGS AND IMPRESSION:  Lungs are clear. Heart size normal.
RECOMMENDATION(S): None.
"""
REPORT_NONE = """FINAL REPORT
IMPRESSION:  No acute process.
"""


def test_findings_extraction_variants() -> None:
    assert extract_findings(REPORT_COLON) == (
        "The cardiac, mediastinal and hilar contours are normal. No pleural effusion or pneumothorax is seen."
    )
    assert extract_findings(REPORT_VARIANT) == "Lungs are clear. Heart size normal."
    assert extract_findings("Findings: Small left effusion.\nImpression: effusion") == "Small left effusion."
    assert extract_findings("FINDINGS\nNo change.\n") == "No change."
    assert extract_findings(REPORT_NONE) == ""


def test_mimic_cxr(tmp_path: Path, files) -> None:
    mimic = tmp_path / "mimic-cxr-jpg"
    (mimic).mkdir()
    (mimic / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\n"
        "lat1,50414267,10000032,train\nfront1,50414267,10000032,train\n"
        "d3,53189527,10000032,validate\nd4,59999999,10000099,test\n"
    )
    (mimic / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,study_id,subject_id,ViewPosition\nlat1,50414267,10000032,LATERAL\n"
        "front1,50414267,10000032,PA\nd3,53189527,10000032,AP\nd4,59999999,10000099,AP\n"
    )
    study = mimic / "files/p10/p10000032"
    for d in ("lat1", "front1"):
        files.image(study / "s50414267" / f"{d}.jpg")
    files.image(study / "s53189527/d3.jpg")
    (study / "s50414267.txt").write_text(REPORT_COLON)
    (study / "s53189527.txt").write_text(REPORT_NONE)
    out = convert("mimic_cxr", mimic, tmp_path)
    [a] = out.samples
    assert a.id == "mimic_cxr:s50414267" and a.task == "report" and a.split == "train"
    assert a.images == ("mimic-cxr-jpg/files/p10/p10000032/s50414267/front1.jpg",)  # frontal first
    assert a.answers[0].startswith("The cardiac, mediastinal")
    assert sorted((r.id, r.reason, r.kind) for r in out.rejections) == [
        ("mimic_cxr:s53189527", "no_findings", "filtered"),  # the paper's selection, not an error
        ("mimic_cxr:s59999999", "missing_report", "error"),
    ]


def test_coco_captions(tmp_path: Path, files) -> None:
    coco = tmp_path / "coco"
    files.image(coco / "val2017/000000397133.jpg")
    files.image(coco / "val2017/000000037777.jpg")
    files.json(coco / "annotations/captions_val2017.json", {
        "info": {}, "licenses": [],
        "images": [{"id": 397133, "file_name": "000000397133.jpg", "width": 40, "height": 30},
                   {"id": 37777, "file_name": "000000037777.jpg", "width": 40, "height": 30},
                   {"id": 1, "file_name": "000000000001.jpg", "width": 40, "height": 30}],
        "annotations": [{"image_id": 397133, "id": 370, "caption": "A man is in a kitchen making pizzas."},
                        {"image_id": 397133, "id": 3, "caption": "Man in apron standing on front of oven."},
                        {"image_id": 37777, "id": 9, "caption": "The dining table near the kitchen."}],
    })  # fmt: skip
    out = convert("coco_captions", coco / "annotations/captions_val2017.json", tmp_path)
    s = by_id(out)
    a = s["coco:397133"]
    assert a.split == "validation" and a.images == ("coco/val2017/000000397133.jpg",)
    assert a.answers == (
        "Man in apron standing on front of oven.",
        "A man is in a kitchen making pizzas.",
    )
    assert [(r.id, r.reason) for r in out.rejections] == [("coco:1", "empty_answer")]


def test_general_benchmarks(tmp_path: Path, files) -> None:
    img = files.hf_image(files.image_bytes((64, 48)))
    img2 = files.hf_image(files.image_bytes((48, 64), (0, 0, 255)))
    hub = tmp_path / "hub"
    files.parquet(hub / "ai2d/data/test-00000-of-00001.parquet", [
        {"question": "Which stage follows the egg?", "options": ["larva", "adult", "pupa", "egg"],
         "answer": "0", "image": img},
        {"question": "Bad index?", "options": ["a", "b"], "answer": "5", "image": img},
    ])  # fmt: skip
    files.parquet(hub / "sqa/data/test-00000-of-00001.parquet", [
        {"image": img, "question": "Which of these states is farthest north?", "choices": ["West Virginia", "Louisiana"],
         "answer": 0, "hint": "", "task": "closed choice", "subject": "social science", "topic": "geography", "grade": "grade2"},
        {"image": img, "question": "Which animal's feet are adapted for grabbing prey?", "choices": ["eagle", "duck", "dog"],
         "answer": 2, "hint": "Eagles eat fish.", "task": "closed choice", "subject": "natural science", "topic": "biology", "grade": "grade3"},
    ])  # fmt: skip
    files.parquet(hub / "chartqa/data/test-00000-of-00001.parquet", [
        {"type": "human_test", "question": "What is the value of the highest bar?", "answer": "47.6", "image": img},
        {"type": "augmented_test", "question": "Is the median greater than 30?", "answer": "Yes", "image": img},
        {"type": "human_test", "question": "How many bars?", "answer": "12", "image": img},
    ])  # fmt: skip
    files.parquet(hub / "mmmu/data/validation-00000-of-00001.parquet", [
        {"id": "validation_Art_1", "question": "Compare <image 1> and <image 2>: which is older?",
         "options": "['<image 1>', 'The second one', 'Same age']", "explanation": "", "image_1": img,
         "image_2": img2, "image_3": None, "img_type": "['Paintings']", "answer": "B",
         "topic_difficulty": "Easy", "question_type": "multiple-choice", "subfield": "Art History"},
        {"id": "validation_Math_3", "question": "<image 1> What is x?", "options": "[]", "explanation": "",
         "image_1": img, "image_2": None, "image_3": None, "img_type": "[]", "answer": "4",
         "topic_difficulty": "Hard", "question_type": "open", "subfield": "Algebra"},
    ])  # fmt: skip
    files.parquet(hub / "mmvet/data/test-00000-of-00001.parquet", [
        {"question_id": "v1_0", "image": img, "question": "What is x in the equation?",
         "answer": "-1 <AND> -5", "image_source": "https://x", "capability": "ocr,math"},
    ])  # fmt: skip
    files.parquet(hub / "pope/data/test-00000-of-00003.parquet", [
        {"id": "0", "question_id": "1", "question": "Is there a snowboard in the image?", "answer": "Yes",
         "image_source": "COCO_val2014_000000310196", "image": img, "category": "adversarial"},
        {"id": "1", "question_id": "2", "question": "Is there a dog?", "answer": "maybe",
         "image_source": "COCO_val2014_000000310196", "image": img, "category": "random"},
    ])  # fmt: skip
    files.parquet(hub / "hb/data/image-00000-of-00001.parquet", [
        {"category": "VS", "subcategory": "chart", "visual_input": "1", "set_id": "0", "figure_id": "1",
         "sample_note": "", "question_id": "0", "question": "Is China the largest?", "gt_answer_details": "",
         "gt_answer": "0", "filename": "x.png", "image": img},
        {"category": "VS", "subcategory": "chart", "visual_input": "0", "set_id": "0", "figure_id": "0",
         "sample_note": "", "question_id": "0", "question": "Is China the largest?", "gt_answer_details": "",
         "gt_answer": "1", "filename": "", "image": None},
    ])  # fmt: skip
    # HallusionBench's split is called "image"; the file name cannot tell the split here.
    with pytest.raises(ConverterError, match="split name"):
        convert("hallusion_bench", hub / "hb", tmp_path)
    (hub / "hb/data/image-00000-of-00001.parquet").rename(hub / "hb/data/test-00000-of-00001.parquet")

    ai2d = convert("ai2d", hub / "ai2d", tmp_path)
    a = ai2d.samples[0]
    assert (a.id, a.task, a.answers, a.choices) == (
        "ai2d:test:0",
        "mcq",
        ("A",),
        ("larva", "adult", "pupa", "egg"),
    )
    assert a.turns[0].text == (
        "<image>\nWhich stage follows the egg?\nA. larva\nB. adult\nC. pupa\nD. egg\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert [(r.id, r.reason) for r in ai2d.rejections] == [("ai2d:test:1", "malformed_row")]

    sqa = by_id(convert("scienceqa", hub / "sqa", tmp_path))
    assert sqa["scienceqa:test:1"].answers == ("C",)
    assert sqa["scienceqa:test:1"].turns[0].text.startswith("<image>\nContext: Eagles eat fish.\nWhich animal")
    assert "Context" not in sqa["scienceqa:test:0"].turns[0].text
    assert sqa["scienceqa:test:0"].meta["subject"] == "social science"

    chart = by_id(convert("chartqa", hub / "chartqa", tmp_path))
    assert chart["chartqa:test:0"].answers == ("47.6",) and chart["chartqa:test:2"].answers == ("12",)
    # ChartQA is scored by relaxed match: its answers are not yes/no-normalised.
    assert chart["chartqa:test:1"].answers == ("Yes",) and chart["chartqa:test:1"].meta["type"] == "augmented_test"

    mmmu = by_id(convert("mmmu", hub / "mmmu", tmp_path))
    art = mmmu["mmmu:validation_Art_1"]
    assert art.task == "mcq" and art.answers == ("B",) and len(art.images) == 2
    assert art.choices == ("[image 1]", "The second one", "Same age")
    assert art.turns[0].text.startswith("<image>\n<image>\nCompare [image 1] and [image 2]")
    assert mmmu["mmmu:validation_Math_3"].task == "vqa_open" and mmmu["mmmu:validation_Math_3"].answers == ("4",)

    vet = convert("mmvet", hub / "mmvet", tmp_path).samples[0]
    assert (vet.id, vet.answers, vet.meta["capability"]) == (
        "mmvet:v1_0",
        ("-1 <AND> -5",),
        "ocr,math",
    )

    pope = convert("pope", hub / "pope", tmp_path)
    assert [(s.id, s.answers) for s in pope.samples] == [("pope:1", ("yes",))]
    assert pope.rejections[0].reason == "malformed_row" and "yes/no" in pope.rejections[0].detail

    hb = by_id(convert("hallusion_bench", hub / "hb", tmp_path, split="test"))
    assert hb["hallusion_bench:VS_chart_0_1_0"].answers == ("no",)
    assert hb["hallusion_bench:VS_chart_0_1_0"].split == "test"
    assert hb["hallusion_bench:VS_chart_0_0_0"].task == "text_only"
    assert hb["hallusion_bench:VS_chart_0_0_0"].answers == ("yes",)

    everything = [s for r in (ai2d,) for s in r.samples] + list(sqa.values()) + list(chart.values())
    everything += list(mmmu.values()) + [vet] + pope.samples + list(hb.values())
    assert not validate_samples(everything, tmp_path).rejections
