"""The demo page (``dragonfly demo``): upload an image, ask a question, see the answer and
what the zoom kept, under the model's own selection rule or another one.

A Streamlit script: ``dragonfly demo`` runs it as ``streamlit run demo.py -- --model-dir DIR``
once the model is resolved to a local folder. The answer is ``inference.answer``'s (what
``dragonfly predict`` prints); the picture is ``viz.draw_zoom``'s. Uploads are decoded from
memory by the serving rules (PNG or JPEG, the byte and pixel limits), so nothing a visitor
sends names a file, and a bad upload is one error line.
"""

from __future__ import annotations

import argparse
import threading

import streamlit as st

from dragonfly.errors import DragonflyError
from dragonfly.inference import answer, load
from dragonfly.serve.errors import RequestError
from dragonfly.serve.images import DEFAULT_MAX_IMAGE_BYTES, ImageRules, decode
from dragonfly.viz import RULES, draw_zoom, to_png, views_by_rule

UPLOAD = ImageRules()  # no image_root: an upload is bytes, never a path


@st.cache_resource
def _model(model_dir: str):
    """Loaded once for every visitor. The lock: ``views_by_rule`` switches the shared config's
    rule while it draws, and a concurrent answer must not see the switched rule."""
    model, processor = load(model_dir)
    return model, processor, threading.Lock()


@st.cache_data(max_entries=16)
def _answer(model_dir: str, data: bytes, question: str) -> str:
    model, processor, lock = _model(model_dir)
    with lock:
        return answer(model, processor, [decode(data, "the upload", UPLOAD)], [question])[0].text


@st.cache_data(max_entries=64)
def _picture(model_dir: str, data: bytes, rule: tuple[str, str]) -> bytes:
    model, processor, lock = _model(model_dir)
    with lock:
        [view] = views_by_rule(model, processor, {"upload": decode(data, "the upload", UPLOAD)}, [rule]).values()
    return to_png(draw_zoom(view))


def _rules(model_dir: str) -> list[tuple[str, str]]:
    """The model's own rule first (the one it answers with), then the others of ``viz.RULES``."""
    cfg = _model(model_dir)[0].config
    own = (cfg.strategy, cfg.select_order)
    return [own, *(r for r in RULES if r != own)]


def _label(rule: tuple[str, str]) -> str:
    return f"{rule[0]} / {rule[1].replace('_', ' ')}"


def page(model_dir: str) -> None:
    st.set_page_config(page_title="Dragonfly demo", layout="wide")
    st.title("Dragonfly: ask about an image")
    # A form: the image and the question reach the model together, on the button only.
    with st.form("ask"):
        upload = st.file_uploader(
            "Image (PNG or JPEG)", type=["png", "jpg", "jpeg"], max_upload_size=DEFAULT_MAX_IMAGE_BYTES // 2**20
        )
        question = st.text_input("Question", "What is in the image?")
        if st.form_submit_button("Answer", type="primary"):
            st.session_state.asked = True
    if not st.session_state.get("asked"):
        return
    if upload is None:  # also when Answer is pressed while the file is still uploading
        st.warning("No image yet: choose a PNG or JPEG, let its upload finish, then press Answer.")
        return
    data = upload.getvalue()
    try:
        text = _answer(model_dir, data, question)
    except (RequestError, DragonflyError) as err:
        st.error(str(err))  # one line: the problem and the fix
        return
    rules = _rules(model_dir)
    st.caption(f"Answer (under the model's own selection rule, {_label(rules[0])})")
    with st.container(key="answer"):
        st.text(text)
    rule = st.radio("Selection rule of the picture", rules, format_func=_label, horizontal=True)
    st.image(_picture(model_dir, data, rule), caption=f"the high tiles the zoom keeps under {_label(rule)}")


if __name__ == "__main__":  # how `streamlit run` executes the script, on every interaction
    parser = argparse.ArgumentParser(prog="dragonfly demo page")
    parser.add_argument("--model-dir", required=True)
    page(parser.parse_args().model_dir)
