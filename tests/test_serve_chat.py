"""The chat body and the batch cells, in process: what is read from a request, what is
refused with one line, and that no path a request names is ever opened. The real server
runs the same bodies in test_serve.py."""

from __future__ import annotations

import builtins
import io
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from serve_bodies import PATHS, bad_bodies, chat, data_url, encoded, image, text

from dragonfly.errors import DragonflyError
from dragonfly.inference import answer
from dragonfly.serve.chat import chat_response, parse_chat
from dragonfly.serve.errors import RequestError
from dragonfly.serve.images import ImageRules, from_cell, from_data_url
from dragonfly.serve.pyfunc import ARTIFACT, DragonflyModel, settings

RULES = ImageRules()


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def served(saved_tiny) -> DragonflyModel:
    """The pyfunc as mlflow loads it: load_context with the artifact and a model config."""
    model = DragonflyModel()
    model.load_context(SimpleNamespace(artifacts={ARTIFACT: str(saved_tiny)}, model_config={}))
    return model


def refusal(call) -> str:
    with pytest.raises(RequestError) as err:
        call()
    line = err.value.message
    assert "\n" not in line and line == str(err.value), line
    assert err.value.get_http_status_code() == 400
    return line


def test_png_and_jpeg_data_urls_give_the_sent_pixels(picture):
    png = from_data_url(data_url(encoded(picture)), "image", RULES)
    assert np.array_equal(np.asarray(png), np.asarray(picture))
    jpeg_bytes = encoded(picture, "JPEG")
    jpeg = from_data_url(data_url(jpeg_bytes, "image/jpeg"), "image", RULES)
    assert np.array_equal(np.asarray(jpeg), np.asarray(Image.open(io.BytesIO(jpeg_bytes)).convert("RGB")))


def test_a_chat_body_is_one_question_and_one_image(picture):
    body = chat(text("What colour"), image(data_url(encoded(picture))), text("is it?"), max_tokens=5, temperature=0.5)
    request = parse_chat(body, RULES)
    assert request.question == "What colour\nis it?"
    assert (request.max_tokens, request.temperature) == (5, 0.5)
    assert np.array_equal(np.asarray(request.image), np.asarray(picture))
    defaults = parse_chat(chat(text("Q"), image(data_url(encoded(picture)))), RULES)
    assert (defaults.max_tokens, defaults.temperature) == (32, 0.0)  # greedy unless asked


@pytest.mark.parametrize("case", range(len(bad_bodies(b""))))
def test_each_bad_body_is_one_line_naming_the_problem_and_the_fix(served, picture, case):
    name, body, words = bad_bodies(encoded(picture))[case]
    line = refusal(lambda: served.predict(None, body))
    assert all(w in line for w in words), (name, line)


def test_a_png_sent_as_jpeg_is_refused(picture):
    body = chat(text("Q"), image(data_url(encoded(picture), "image/jpeg")))
    assert "not a JPEG image" in refusal(lambda: parse_chat(body, RULES))


def test_image_bytes_over_the_limit_are_refused_before_decoding(picture):
    small = ImageRules(max_bytes=100)
    assert "over 100 bytes, the limit" in refusal(lambda: from_data_url(data_url(encoded(picture)), "image", small))
    assert "above the limit of 100" in refusal(lambda: from_cell(encoded(picture), "row 0 image", small))
    exact = encoded(picture)  # the limit itself is allowed, through either door
    assert from_data_url(data_url(exact), "image", ImageRules(max_bytes=len(exact))).size == picture.size


@pytest.mark.parametrize("path", PATHS)
def test_no_path_or_url_in_a_request_is_read(tmp_path, picture, monkeypatch, path):
    """Spies on every way to open a file: a refused request calls none of them with a path."""
    opened = []
    real_open, real_os_open, real_pil_open = builtins.open, os.open, Image.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(f) or real_open(f, *a, **k))
    monkeypatch.setattr(io, "open", lambda f, *a, **k: opened.append(f) or real_open(f, *a, **k))  # Path.open
    monkeypatch.setattr(os, "open", lambda f, *a, **k: opened.append(f) or real_os_open(f, *a, **k))
    monkeypatch.setattr(Image, "open", lambda f, *a, **k: opened.append(f) or real_pil_open(f, *a, **k))
    rooted = ImageRules(root=tmp_path)  # an image_root that does not hold these paths
    refusal(lambda: parse_chat(chat(text("Q"), image(path)), rooted))
    refusal(lambda: from_cell(path, "row 0 image", RULES))
    refusal(lambda: from_cell(path, "row 0 image", rooted))
    assert opened == []
    # The spies see what they should: bytes are opened from memory, never by name.
    from_cell(encoded(picture), "row 0 image", RULES)
    assert len(opened) == 1 and isinstance(opened[0], io.BytesIO)


def test_paths_only_under_the_image_root(tmp_path, picture):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    picture.save(root / "sub" / "a.png")
    picture.save(tmp_path / "outside.png")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    rules = ImageRules(root=root)
    for inside in ("sub/a.png", str(root / "sub" / "a.png"), "sub/../sub/a.png"):
        assert np.array_equal(np.asarray(from_cell(inside, "row 0 image", rules)), np.asarray(picture))
    for outside in ("../outside.png", str(tmp_path / "outside.png"), "link.png"):
        assert "outside image_root" in refusal(lambda v=outside: from_cell(v, "row 0 image", rules))
    assert "no image_root is configured" in refusal(lambda: from_cell("sub/a.png", "row 0 image", RULES))
    assert "NUL byte" in refusal(lambda: from_cell("sub/a\0.png", "row 0 image", rules))


def test_the_chat_answer_is_answer_on_the_same_image(served, tiny, picture):
    body = chat(text("What is this?"), image(data_url(encoded(picture))), max_tokens=6)
    out = served.predict(None, body)
    [want] = answer(*tiny, [picture], ["What is this?"], max_new_tokens=6)
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["role"] == "assistant"
    assert out["choices"][0]["message"]["content"] == want.text
    assert out["custom_outputs"] == {
        "selected_tiles": want.selected_tiles,
        "medium_grid": list(want.medium_grid),
        "high_grid": list(want.high_grid),
    }


def test_the_batch_frame_takes_bytes_and_data_urls_not_paths(served, tiny, picture):
    frame = pd.DataFrame({"image": [encoded(picture), data_url(encoded(picture))], "question": ["Q?", "Q?"]})
    [want] = answer(*tiny, [picture], ["Q?"])
    assert served.predict(None, frame) == [want.text, want.text]
    refused = pd.DataFrame({"image": [encoded(picture), "/etc/passwd"], "question": ["Q?", "Q?"]})
    assert "row 1 image names a file" in refusal(lambda: served.predict(None, refused))
    assert "no 'question' column" in refusal(lambda: served.predict(None, frame[["image"]]))


def test_model_config_keys_are_checked():
    rules, limit, concurrent = settings({"image_root": "/data", "max_tokens_limit": 64, "max_concurrent": 3})
    assert (str(rules.root), limit, concurrent) == ("/data", 64, 3)
    assert settings(None)[0].root is None  # no image_root: no paths
    with pytest.raises(DragonflyError, match=r"'image_rot'.*did you mean 'image_root'"):
        settings({"image_rot": "/data"})
    with pytest.raises(DragonflyError, match="max_concurrent must be at least 1"):
        settings({"max_concurrent": 0})


def test_the_response_is_the_chat_completion_shape():
    out = chat_response("a cat", [1, 2], (2, 2), (6, 4), "dragonfly")
    assert out["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "a cat"}, "finish_reason": "stop"}
    ]
    assert out["custom_outputs"]["high_grid"] == [6, 4] and out["id"].startswith("chatcmpl-")


def test_temperature_above_zero_samples_and_zero_is_greedy(served, picture, monkeypatch):
    seen = []
    generate = served.model.generate
    monkeypatch.setattr(served.model, "generate", lambda **kw: seen.append(kw) or generate(**kw))
    url = data_url(encoded(picture))
    served.predict(None, chat(text("Q"), image(url), max_tokens=3, temperature=1.5))
    served.predict(None, chat(text("Q"), image(url), max_tokens=3))
    assert [(k["do_sample"], k.get("temperature"), k["max_new_tokens"]) for k in seen] == [
        (True, 1.5, 3),
        (False, None, 3),
    ]
