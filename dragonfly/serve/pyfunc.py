"""The MLflow model every registered version is: a chat-completions body (served by
``mlflow models serve``) or a DataFrame batch (``mlflow.pyfunc.load_model(...).predict``).

Why a plain ``PythonModel`` and not one of MLflow's chat interfaces (mlflow 3.17.2):

- ``ChatModel`` is served on ``/invocations`` with a chat body, and its ``ChatMessage``
  accepts content parts, but the signature it logs (``CHAT_MODEL_INPUT_SCHEMA``, which
  ``save_model`` will not let one replace) declares ``content`` a string, so the server
  refuses every image part before ``predict`` runs. Its loader also reads only the first
  row of a DataFrame, so it could not be the batch model too.
- ``ChatAgent``'s messages are text only; ``ResponsesAgent`` takes an ``input`` list (the
  Responses API), not ``messages``.

The scoring server passes a JSON body holding ``messages`` to ``predict`` as the parsed
dict, untouched when the model logs no input schema; other bodies (``dataframe_split``...)
arrive as a DataFrame. So one model answers both, parses the chat body itself with one-line
errors (``serve.chat``), and builds the answer with MLflow's own chat-completion classes.

The operator's settings are MLflow's model config (``model_config=`` of ``load_model``;
``SERVING_MODEL_CONFIG``, a JSON object, for ``mlflow models serve``): see ``CONFIG``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from dragonfly.errors import DragonflyError, close_match
from dragonfly.model.images import DEFAULT_MAX_IMAGE_PIXELS
from dragonfly.serve.chat import DEFAULT_MAX_TOKENS_LIMIT, chat_response, parse_chat
from dragonfly.serve.errors import RequestError
from dragonfly.serve.images import DEFAULT_MAX_IMAGE_BYTES, ImageRules, from_cell

ARTIFACT = "model_dir"  # the save_pretrained directory inside the logged pyfunc
PREDICT_BATCH = 8
MODEL_NAME = "dragonfly"
# The model config keys and their defaults, logged with every version so the MLmodel file
# shows them. image_root None: a batch cell may not name a file at all.
CONFIG = {
    "image_root": None,
    "max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS,
    "max_image_bytes": DEFAULT_MAX_IMAGE_BYTES,
    "max_tokens_limit": DEFAULT_MAX_TOKENS_LIMIT,
    "max_concurrent": 1,
}


def settings(config: Mapping | None) -> tuple[ImageRules, int, int]:
    """The image rules, the max_tokens limit and how many generations may run at once, from
    a model config; an unknown key is an error (mlflow's loader already drops keys the model
    was not logged with, with a warning; this catches a config passed any other way)."""
    config = {**CONFIG, **(config or {})}
    unknown = sorted(set(config) - set(CONFIG))
    if unknown:
        raise DragonflyError(
            f"unknown model config key {unknown[0]!r}{close_match(unknown[0], CONFIG)}; known: {', '.join(CONFIG)}"
        )
    root = Path(config["image_root"]) if config["image_root"] else None
    rules = ImageRules(root, int(config["max_image_pixels"]), int(config["max_image_bytes"]))
    concurrent = int(config["max_concurrent"])
    if concurrent < 1:
        raise DragonflyError(f"max_concurrent must be at least 1, got {concurrent}: set it to 1 or more")
    return rules, int(config["max_tokens_limit"]), concurrent


class DragonflyModel(mlflow.pyfunc.PythonModel):
    """A saved Dragonfly as an MLflow pyfunc. Input: a chat-completions body (a dict with
    ``messages``; output: the chat-completion dict), or a DataFrame with columns ``image``
    (bytes, a ``data:`` URL, or a path under ``image_root``) and ``question`` (output: one
    answer string per row)."""

    def load_context(self, context) -> None:
        from dragonfly.inference import load

        self.rules, self.max_tokens_limit, concurrent = settings(context.model_config)
        self.model, self.processor = load(context.artifacts[ARTIFACT])
        # The server runs each request in a thread of its pool, and each generation in
        # flight holds its own activations, so their number is bounded. One at a time by
        # default: torch's threads already fill the cores, and on the 2-core benchmark
        # machine 2 or 8 at once served fewer requests per second (benchmarks/README.md).
        self.slots = threading.BoundedSemaphore(concurrent)

    # The DataFrame hint keeps mlflow 3 from deriving a schema from hints (it warns on a
    # missing hint); a chat body still arrives as the dict the server parsed.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[str] | dict:
        if isinstance(model_input, Mapping):
            return self._chat(model_input)
        return self._batch(model_input)

    def _chat(self, body: Mapping) -> dict:
        request = parse_chat(body, self.rules, self.max_tokens_limit)
        [done] = self._answer([request.image], [request.question], request.max_tokens, request.temperature)
        return chat_response(done.text, done.selected_tiles, done.medium_grid, done.high_grid, MODEL_NAME)

    def _batch(self, frame: pd.DataFrame) -> list[str]:
        missing = [c for c in ("image", "question") if c not in getattr(frame, "columns", ())]
        if missing:
            raise RequestError(
                f"the input has no {' or '.join(map(repr, missing))} column: send columns 'image' (bytes, a data URL, "
                "or a path under image_root) and 'question', or a chat body with 'messages'"
            )
        out: list[str] = []
        for start in range(0, len(frame), PREDICT_BATCH):  # bounded memory on long inputs
            rows = frame.iloc[start : start + PREDICT_BATCH]
            images = [from_cell(v, f"row {start + i} image", self.rules) for i, v in enumerate(rows["image"])]
            questions = [_question(q, start + i) for i, q in enumerate(rows["question"])]
            out += [a.text for a in self._answer(images, questions)]
        return out

    def _answer(self, images: list, questions: list[str], max_new_tokens: int = 32, temperature: float = 0.0):
        from dragonfly.inference import QuestionError, answer

        try:
            with self.slots:
                return answer(self.model, self.processor, images, questions, max_new_tokens, temperature)
        except QuestionError as err:  # its message names the problem and the fix already
            raise RequestError(str(err)) from None


def _question(value: object, row: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"row {row} question is {value!r}: put the question's text in the cell")
    return value
