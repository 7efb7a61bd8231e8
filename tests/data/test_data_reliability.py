"""The data layer fails loudly and usefully: relative LLaVA layouts, per-source thresholds,
failed builds that no trainer can take, decompression bombs, non-UTF-8 files, one
quarantine per command, and config typos."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from dragonfly.cli.data import app
from dragonfly.config import ConfigError
from dragonfly.data.manifest import StaleDatasetError, verify_dataset
from dragonfly.data.mixture import MixtureConfig, SourceSpec, build_mixture
from dragonfly.data.quarantine import (
    ConverterError,
    RejectedFractionError,
    Rejection,
    read_quarantine,
)
from dragonfly.data.sources import UnknownFormatError, convert
from dragonfly.errors import DragonflyError

runner = CliRunner()


def conv(question: str = "<image>\nWhat colour?", answer: str = "blue") -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def llava_rows(images: list[str], prefix: str = "r") -> list[dict]:
    return [
        {"id": f"{prefix}{i}", "image": img, "conversations": conv(f"<image>\nQuestion {i}?")}
        for i, img in enumerate(images)
    ]


def png_header_only(path: Path, width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> Path:
    """A PNG whose header says width x height but whose pixel data is garbage: it opens
    (the header is valid) and can never be decoded, so only a header check names it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"junk") + chunk(b"IEND", b""))
    return path


# --- 1. LLaVA JSON with relative image paths ---------------------------------------------


@pytest.fixture
def user_layout(tmp_path: Path, files, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data/mine/llava.json with its images beside it, in images/ beside it, under the data
    root (data/shared/), and in an absolute folder; the working directory is the project."""
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        files.image(Path(f"data/mine/img{i}.png"))
        files.image(Path(f"data/mine/images/img{i}.png"))
        files.image(Path(f"data/shared/pics/img{i}.png"))
        files.image(tmp_path / f"elsewhere/img{i}.png")
    files.json(Path("data/mine/llava.json"), llava_rows([f"img{i}.png" for i in range(3)]))
    return tmp_path


LAYOUTS = [
    ({"split": "train"}, "mine/img"),
    ({"image_folder": "images", "split": "train"}, "mine/images/img"),
    ({"image_folder": "shared/pics", "split": "train"}, "shared/pics/img"),
]


@pytest.mark.parametrize(("options", "stored"), LAYOUTS)
def test_llava_relative_layouts_convert(user_layout: Path, options: dict, stored: str) -> None:
    result = convert("llava", Path("data/mine/llava.json"), Path("data"), **options)
    assert [s.images for s in result.samples] == [(f"{stored}{i}.png",) for i in range(3)]
    assert all((Path("data") / s.images[0]).is_file() for s in result.samples)


def test_llava_absolute_and_missing_image_folder(user_layout: Path) -> None:
    absolute = convert(
        "llava", Path("data/mine/llava.json"), Path("data"), split="train", image_folder=user_layout / "elsewhere"
    )
    assert (Path("data") / absolute.samples[0].images[0]).resolve() == (user_layout / "elsewhere/img0.png")
    with pytest.raises(ConverterError, match=r"data/mine/nowhere.*data/nowhere") as info:
        convert("llava", Path("data/mine/llava.json"), Path("data"), image_folder="nowhere")
    assert isinstance(info.value, DragonflyError)


@pytest.mark.parametrize(("options", "stored"), [*LAYOUTS, ({"image_folder": "ABS"}, "")])
def test_llava_relative_layouts_build(user_layout: Path, options: dict, stored: str) -> None:
    if options.get("image_folder") == "ABS":
        options = {"image_folder": str(user_layout / "elsewhere"), "split": "train"}
    mix = MixtureConfig(
        "mine",
        (SourceSpec("mine", "llava", "mine/llava.json", options=options),),
        max_per_image=None,
    )
    result = build_mixture(mix, Path("data"), Path("data/mixtures/mine"))
    assert result.stats["rejected"] == 0 and result.stats["samples"] == 3
    assert not read_quarantine(result.quarantine_path)


def test_convert_cli_warns_about_missing_images(user_layout: Path) -> None:
    Path("data/mine/img1.png").unlink()
    some = runner.invoke(
        app,
        ["convert", "llava", "data/mine/llava.json", "--out", "out.jsonl", "--root", "data",
         "--option", "split=train", "--missing-threshold", "0.5"],
    )  # fmt: skip
    assert some.exit_code == 0, some.output
    assert "1 of 3 images not found" in some.output and "mine/img1.png" in some.output
    none = runner.invoke(
        app,
        ["convert", "llava", "data/mine/llava.json", "--out", "out.jsonl", "--root", "data",
         "--option", "image_folder=shared", "--option", "split=train"],
    )  # fmt: skip
    assert none.exit_code == 1 and "3 of 3 images not found" in none.output


# --- 2. per-source reject threshold --------------------------------------------------------


@pytest.fixture
def small_broken_source(tmp_path: Path, files) -> Path:
    """40 good rows in one source, 2 rows with missing images in another (4.8 % overall)."""
    for i in range(40):
        files.image(tmp_path / f"big/img{i}.png", color=(i * 5, 0, 0))
    files.json(tmp_path / "big/llava.json", llava_rows([f"img{i}.png" for i in range(40)]))
    files.json(tmp_path / "small/llava.json", llava_rows(["gone0.png", "gone1.png"], "s"))
    return tmp_path


def two_sources(small_threshold: float | None = None) -> MixtureConfig:
    return MixtureConfig(
        "two",
        (
            SourceSpec("big", "llava", "big/llava.json", options={"split": "train"}),
            SourceSpec(
                "small", "llava", "small/llava.json", reject_threshold=small_threshold, options={"split": "train"}
            ),
        ),
    )


def test_source_over_its_own_threshold_fails_the_build(small_broken_source: Path) -> None:
    root = small_broken_source
    with pytest.raises(RejectedFractionError) as info:
        build_mixture(two_sources(), root, root / "out")
    message = str(info.value)
    assert "source 'small'" in message and "2 of 2 rows rejected (100.0%)" in message
    assert "missing_image 2" in message and str(root / "out/quarantine.jsonl") in message
    stats = json.loads((root / "out/stats.json").read_text())
    assert stats["per_source"]["small"]["rejected_fraction"] == 1.0
    assert stats["per_source"]["big"]["rejected_fraction"] == 0.0

    allowed = build_mixture(two_sources(small_threshold=1.0), root, root / "out")
    assert allowed.stats["samples"] == 40 and allowed.stats["rejected"] == 2


# --- 3. a failed build leaves nothing a trainer can take ----------------------------------


def test_failed_build_removes_dataset_and_keeps_its_report(small_broken_source: Path) -> None:
    from dragonfly.train.data import ConversationDataset

    root, out = small_broken_source, small_broken_source / "out"
    ok_cfg = two_sources(small_threshold=1.0)
    good = build_mixture(ok_cfg, root, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok" and len(manifest["fingerprint"]) == 64
    assert manifest["mixture"]["sources"][1]["reject_threshold"] == 1.0
    assert verify_dataset(out, ok_cfg) == good.dataset_dir
    assert len(ConversationDataset.from_mixture(good.dataset_dir, "train", root, None, 64, ok_cfg)) == 40

    # The config changed since the build: the dataset is stale, and the message says how.
    stricter = two_sources(small_threshold=0.5)
    with pytest.raises(StaleDatasetError, match=r"sources\[1\]\.reject_threshold 1\.0 → 0\.5") as info:
        verify_dataset(out, stricter)
    assert info.value.hint == "dragonfly data build --mixture two"

    with pytest.raises(RejectedFractionError):
        build_mixture(stricter, root, out)
    assert not (out / "dataset").exists()
    assert json.loads((out / "stats.json").read_text())["status"] == "failed"
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert {r.id for r in read_quarantine(out / "quarantine.jsonl")} == {"small:s0", "small:s1"}
    assert [p.name for p in root.iterdir() if p.name.startswith("out")] == ["out"]
    for cfg in (stricter, ok_cfg):
        with pytest.raises(StaleDatasetError, match="failed: source 'small'"):
            ConversationDataset.from_mixture(out / "dataset", "train", root, None, 64, cfg)


def test_from_mixture_errors_are_one_line(tmp_path: Path) -> None:
    from dragonfly.train.data import ConversationDataset

    with pytest.raises(DragonflyError, match="not found") as info:
        ConversationDataset.from_mixture(tmp_path / "nothing/dataset", "train", tmp_path, None, 64)
    assert isinstance(info.value, FileNotFoundError) and "\n" not in str(info.value)
    with pytest.raises(StaleDatasetError, match="no manifest.json"):
        verify_dataset(tmp_path, MixtureConfig("x", ()))


# --- 4. one bad file never stops a build -----------------------------------------------


def test_decompression_bomb_is_quarantined_not_raised(tmp_path: Path, files) -> None:
    for i in range(4):
        files.image(tmp_path / f"src/img{i}.png", color=(0, i * 40, 0))
    png_header_only(tmp_path / "src/bomb.png", 20000, 20000)  # 400 M pixels > Pillow's limit
    png_header_only(tmp_path / "src/big.png", 100, 100)  # 10 000 pixels: over a low limit
    files.json(
        tmp_path / "src/llava.json",
        llava_rows([*(f"img{i}.png" for i in range(4)), "bomb.png", "big.png"]),
    )
    limit_before = Image.MAX_IMAGE_PIXELS
    mix = MixtureConfig(
        "bombs", (SourceSpec("s", "llava", "src/llava.json", options={"split": "train"}),), reject_threshold=0.5,
        max_image_pixels=5000,
    )  # fmt: skip
    result = build_mixture(mix, tmp_path, tmp_path / "out")
    rows = {r.id: r for r in read_quarantine(result.quarantine_path)}
    assert rows["s:r4"].reason == "image_too_large" and rows["s:r5"].reason == "image_too_large"
    assert "400000000 pixels" in rows["s:r4"].detail and "5000" in rows["s:r4"].detail
    assert "10000 pixels" in rows["s:r5"].detail
    assert result.stats["samples"] == 4 and limit_before == Image.MAX_IMAGE_PIXELS

    # With the default limit (Pillow's bomb threshold) the bomb is still refused by name.
    default = build_mixture(MixtureConfig("d", mix.sources, reject_threshold=0.5), tmp_path, tmp_path / "d")
    assert default.stats["rejected_by_reason"] == {"image_too_large": 1, "unreadable_image": 1}


def test_pixel_limit_above_pillows_is_scoped(tmp_path: Path) -> None:
    from dragonfly.data.schema import ImageCheck, image_problem

    # Just over Pillow's limit; 1-bit pixels so the attempted decode allocates little.
    over = png_header_only(tmp_path / "over.png", 13400, 13400, bit_depth=1, color_type=0)
    before = Image.MAX_IMAGE_PIXELS
    assert image_problem(over, ImageCheck())[0] == "image_too_large"
    # A higher limit lets it through to decoding (where its junk data fails), and
    # Pillow's global limit is back as it was afterwards.
    assert image_problem(over, ImageCheck(max_pixels=2 * 10**8))[0] == "unreadable_image"
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    ("fmt", "name", "text"),
    [
        ("llava", "llava.json", b'[{"id": "caf\xe9"}]'),
        ("llava", "llava.jsonl", b'{"id": 1}\n{"id": "\xff"}\n'),
        ("dragonfly_jsonl", "samples.jsonl", b'{"id": "\xc3"}\n'),
        ("coco_captions", "captions_val2017.json", b'{"images": "\xfe"}'),
        ("slake", "train.json", b'[{"question": "\x80"}]'),
        ("roco", "radiologytraindata.csv", b"id,name,caption\nr1,a.jpg,\xff\n"),
    ],
)
def test_non_utf8_text_names_file_and_offset(tmp_path: Path, fmt: str, name: str, text: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(text)
    offset = next(i for i, b in enumerate(text) if b >= 0x80)
    with pytest.raises(ConverterError, match=rf"{name}: expected UTF-8 text; .* byte offset {offset}$"):
        convert(fmt, path, tmp_path)


# --- 5. each command keeps its own quarantine --------------------------------------------


def test_convert_then_validate_keeps_both_quarantines(tmp_path: Path, files, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    files.image(Path("data/src/good.png"))
    files.image(Path("data/src/tiny.png"), size=(2, 2))
    rows = llava_rows(["good.png", "tiny.png"]) + [{"id": "broken", "conversations": "nope"}]
    files.json(Path("data/src/llava.json"), rows)
    args = ["convert", "llava", "data/src/llava.json", "--out", "data/out.jsonl", "--root", "data"]
    args += ["--option", "split=train"]
    assert runner.invoke(app, args).exit_code == 0
    checked = runner.invoke(app, ["validate", "data/out.jsonl", "--root", "data"])
    assert checked.exit_code == 0, checked.output
    converted = read_quarantine(Path("data/out.convert-quarantine.jsonl"))
    validated = read_quarantine(Path("data/out.validate-quarantine.jsonl"))
    assert [(r.id, r.reason, r.stage) for r in converted] == [("llava:broken", "malformed_row", "convert")]
    assert [(r.id, r.reason, r.stage) for r in validated] == [("llava:r1", "image_too_small", "validate")]


def test_old_quarantine_records_without_stage_still_read(tmp_path: Path) -> None:
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"source": "s", "id": "s:1", "reason": "missing_image", "detail": "",
                               "file": "f", "row": 3, "kind": "error"}) + "\n")  # fmt: skip
    assert read_quarantine(old) == [Rejection("s", "s:1", "missing_image", "", "f", 3)]


# --- config typos and the data layer's own errors ----------------------------------------


def test_unknown_and_mistyped_mixture_keys_are_config_errors() -> None:
    source = {"name": "a", "format": "llava", "path": "a.json"}
    with pytest.raises(
        ConfigError,
        match=r"data\.mixtures\.m\.reject_treshold \(did you mean 'reject_threshold'\?\)",
    ):
        MixtureConfig.from_dict("m", {"reject_treshold": 0.1, "sources": [source]})
    with pytest.raises(
        ConfigError,
        match=r"data\.mixtures\.m\.sources\[1\]\.pth \(did you mean 'path'\?\).*valid keys",
    ):
        MixtureConfig.from_dict("m", {"sources": [source, {**source, "name": "b", "pth": "x"}]})
    with pytest.raises(ConfigError, match=r"data\.mixtures\.m\.reject_threshold must be a number, got 'high'"):
        MixtureConfig.from_dict("m", {"reject_threshold": "high", "sources": [source]})
    with pytest.raises(ConfigError, match=r"sources\[0\]: missing key\(s\) format"):
        MixtureConfig.from_dict("m", {"sources": [{"name": "a", "path": "a.json"}]})
    # YAML reads 5e-2 as a string; it is still a number.
    assert MixtureConfig.from_dict("m", {"reject_threshold": "5e-2", "sources": [source]}).reject_threshold == 0.05


def test_converter_options_and_formats_are_checked(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"format 'llava' has no option 'image_dir' \(did you mean 'image_folder'\?\); it takes: source, split, task, image_folder",
    ):
        convert("llava", tmp_path / "x.json", tmp_path, image_dir="imgs")
    with pytest.raises(UnknownFormatError, match=r"^unknown data format 'lava' \(did you mean 'llava'\?\)") as info:
        convert("lava", tmp_path / "x.json", tmp_path)
    assert isinstance(info.value, KeyError) and isinstance(info.value, DragonflyError)


def test_cli_build_reports_failed_source(small_broken_source: Path) -> None:
    root = small_broken_source
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"root": str(root), "out_dir": str(root / "mixtures"), "mixtures": {
        "two": {"sources": [{"name": "big", "format": "llava", "path": "big/llava.json", "options": {"split": "train"}},
                            {"name": "small", "format": "llava", "path": "small/llava.json",
                             "options": {"split": "train"}}]}}}}))  # fmt: skip
    result = runner.invoke(app, ["build", "--params", str(params), "--mixture", "two"])
    assert result.exit_code == 1 and "source 'small'" in result.output
    assert json.loads((root / "mixtures/two/manifest.json").read_text())["status"] == "failed"


# --- image paths no file can have ----------------------------------------------------------


def test_image_paths_no_file_can_have_are_quarantined_and_a_link_keeps_its_own_path(tmp_path, files):
    """A symlink loop, a NUL byte and a 5,000-character path each quarantine their row
    (`bad_image_path`) instead of stopping the conversion; a linked image is stored under
    the link's path inside the data root, not its target's outside it."""
    root = tmp_path / "data"
    files.image(root / "mine" / "ok.png")
    files.image(tmp_path / "outside" / "real.png")
    (root / "mine" / "linked.png").symlink_to(tmp_path / "outside" / "real.png")
    (root / "mine" / "loop.png").symlink_to(root / "mine" / "loop.png")
    images = ["ok.png", "linked.png", "loop.png", "bad\x00name.png", "x" * 5000 + ".png"]
    files.json(root / "mine" / "llava.json", llava_rows(images))
    result = convert("llava", root / "mine" / "llava.json", root, split="train")
    assert [s.images for s in result.samples] == [("mine/ok.png",), ("mine/linked.png",)]
    details = {r.id: r.detail for r in result.rejections if r.reason == "bad_image_path"}
    assert len(details) == len(result.rejections) == 3
    assert "loops or leads nowhere" in details["llava:r2"] and "NUL byte" in details["llava:r3"]
    assert "bytes long" in details["llava:r4"]
    # The command: one quarantine file naming them, the good rows written.
    out = tmp_path / "mine.jsonl"
    done = runner.invoke(
        app, ["convert", "llava", str(root / "mine" / "llava.json"), "--out", str(out), "--root", str(root),
              "--option", "split=train", "--missing-threshold", "0.9"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    quarantined = read_quarantine(out.with_name("mine.convert-quarantine.jsonl"))
    assert sorted(r.reason for r in quarantined) == ["bad_image_path"] * 3
    assert len(out.read_text().splitlines()) == 2
