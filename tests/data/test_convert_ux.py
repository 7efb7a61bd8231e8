"""`dragonfly data convert` as a user with a LLaVA JSON meets it (issue #12): converters
describe their options (`dragonfly data formats`), a wrong key is a one-line error, most
images missing is a failure that writes nothing, and a file never silently becomes
training data because nobody said its split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dragonfly.cli import main
from dragonfly.data.quarantine import ConverterError
from dragonfly.data.sources import FORMATS, _module, convert, converter_options, describe, split_rule, summary


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRAGONFLY_DEBUG", raising=False)  # errors print as users see them


def dragonfly(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `dragonfly data ARGS` through the console entry point: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(["data", *args])
    captured = capsys.readouterr()
    return info.value.code or 0, captured.out, captured.err


def llava_json(path: Path, images: list[str]) -> Path:
    rows = [
        {"id": f"r{i}", "image": img, "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}]}
        for i, img in enumerate(images)
    ]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) if path.suffix == ".jsonl" else json.dumps(rows)
    path.write_text(text, encoding="utf-8")
    return path


# --- converters describe themselves -----------------------------------------------------


def test_every_option_of_every_format_has_help() -> None:
    for fmt in FORMATS:
        options = describe(fmt)
        assert [o.name for o in options] == converter_options(fmt)
        assert [o.name for o in options if not o.help.strip()] == [], f"{fmt}: options without help in OPTIONS"
        stale = set(_module(fmt).OPTIONS) - set(converter_options(fmt)) - {"benchmark"}
        assert not stale, f"{fmt}: OPTIONS describes options it does not take: {stale}"
        assert summary(fmt) and split_rule(fmt), fmt
    # Defaults come from the signatures.
    llava = {o.name: o.default for o in describe("llava")}
    assert llava == {"source": "llava", "split": None, "task": None, "image_folder": None}
    assert {o.name: o.default for o in describe("mimic_cxr")}["max_images"] == 1


def test_formats_command_lists_formats_and_one_formats_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = dragonfly(capsys, "formats")
    assert code == 0
    assert all(fmt in out for fmt in FORMATS)
    assert "LLaVA conversation JSON" in out and "dragonfly data formats FORMAT" in out

    code, out, _ = dragonfly(capsys, "formats", "llava")
    assert code == 0
    for name in ("source", "split", "task", "image_folder"):
        assert f"│ {name} " in out
    assert "'llava'" in out and "LLaVA-Pretrain" in out  # a default and a meaning
    split_line = next(line for line in out.splitlines() if line.startswith("split:"))
    assert "test_questions.json" in split_line and "--option split=train|validation|test" in split_line

    code, out, err = dragonfly(capsys, "formats", "lava")
    assert code == 1 and err.startswith("error: unknown data format 'lava' (did you mean 'llava'?)")
    assert len(err.splitlines()) == 1

    code, out, _ = dragonfly(capsys, "convert", "--help")
    assert code == 0 and "dragonfly data formats" in out and "--missing-threshold" in out


def test_wrong_option_key_is_one_line_listing_valid_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    llava_json(Path("train.json"), [])
    code, out, err = dragonfly(capsys, "convert", "llava", "train.json", "--out", "out.jsonl", "--root", ".",
                               "--option", "image_dir=imgs")  # fmt: skip
    assert code == 1 and "Traceback" not in err + out
    assert err.splitlines() == [
        "error: format 'llava' has no option 'image_dir' (did you mean 'image_folder'?); "
        "it takes: source, split, task, image_folder",
        "hint: what each option means: dragonfly data formats llava",
    ]
    assert not Path("out.jsonl").exists()
    code, _, err = dragonfly(capsys, "convert", "llava", "train.json", "--out", "out.jsonl", "--root", ".",
                             "--option", "split=train", "--option", "split=test")  # fmt: skip
    assert code == 2 and "'split' given twice" in err


# --- missing images -----------------------------------------------------------------------


def test_missing_images_over_threshold_fail_and_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], files
) -> None:
    monkeypatch.chdir(tmp_path)
    llava_json(Path("data/mine/train.json"), [f"img{i}.png" for i in range(10)])
    for i in range(7):
        files.image(Path(f"data/mine/img{i}.png"))
    Path("out.jsonl").write_text("an earlier run's samples\n")
    args = ("convert", "llava", "data/mine/train.json", "--out", "out.jsonl", "--root", "data")

    code, out, _ = dragonfly(capsys, *args)
    assert code == 1
    assert "error: 3 of 10 images not found under data (30.0%); e.g. data/mine/img7.png, data/mine/img8.png" in out
    assert "nothing written to out.jsonl; removed the earlier out.jsonl" in out
    assert "samples ->" not in out and not Path("out.jsonl").exists()

    # Allowed by a higher threshold: a warning with the same count, and the samples.
    code, out, _ = dragonfly(capsys, *args, "--missing-threshold", "0.5")
    assert code == 0 and "warning: 3 of 10 images not found" in out and "10 samples -> out.jsonl" in out

    for i in range(7, 10):
        files.image(Path(f"data/mine/img{i}.png"))
    code, out, _ = dragonfly(capsys, *args)
    assert code == 0 and "not found" not in out and len(Path("out.jsonl").read_text().splitlines()) == 10


# --- explicit splits ----------------------------------------------------------------------


def test_llava_split_from_file_name(tmp_path: Path) -> None:
    names = {
        "train.json": "train",
        "test.json": "test",
        "val.json": "validation",
        "test_questions.jsonl": "test",
        "val2017.json": "validation",
        "dev-set.json": "validation",
        "Training_data.json": "train",
    }
    for name, split in names.items():
        got = convert("llava", llava_json(tmp_path / name, ["a.png", "b.png"]), tmp_path).samples
        assert [s.split for s in got] == [split, split], name
    # The option wins over the name.
    assert {s.split for s in convert("llava", tmp_path / "test.json", tmp_path, split="train").samples} == {"train"}


def test_llava_split_not_in_name_needs_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], files
) -> None:
    monkeypatch.chdir(tmp_path)
    files.image(Path("data/llava/a.png"))
    llava_json(Path("data/llava/blip_laion_cc_sbu_558k.json"), ["a.png"])
    # A folder called test does not count: only the file's own name says its split.
    llava_json(Path("data/test/questions.json"), [])
    for path in ("data/llava/blip_laion_cc_sbu_558k.json", "data/test/questions.json"):
        with pytest.raises(ConverterError, match=r"--option split=train\|validation\|test$"):
            convert("llava", Path(path), Path("data"))
    told = convert("llava", Path("data/llava/blip_laion_cc_sbu_558k.json"), Path("data"), split="test")
    assert [s.split for s in told.samples] == ["test"]

    args = ("convert", "llava", "data/llava/blip_laion_cc_sbu_558k.json", "--out", "out.jsonl", "--root", "data")
    code, out, err = dragonfly(capsys, *args)
    assert code == 1 and not Path("out.jsonl").exists() and "Traceback" not in err
    assert err.splitlines()[0] == (
        "error: data/llava/blip_laion_cc_sbu_558k.json: expected a file name that says the split "
        "(train*, val*/dev*, test*), or --option split=train|validation|test"
    )
    code, out, _ = dragonfly(capsys, *args, "--option", "split=test")
    assert code == 0 and json.loads(Path("out.jsonl").read_text())["split"] == "test"
