"""A chat-completions body to one question and one image, and the answer back in the
chat-completion shape (MLflow's ``mlflow.types.llm`` classes, OpenAI's layout).

The model answers one user message holding text parts (the question) and exactly one
``image_url`` part (a base64 data URL: ``images.from_data_url``), greedily unless the body
asks for a ``temperature`` above 0. Everything else a client could send is refused with one
line naming the field, rather than ignored: a silently dropped system prompt or second
image would be an answer to a question nobody asked.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from dragonfly.serve.errors import RequestError
from dragonfly.serve.images import ImageRules, from_data_url

DEFAULT_MAX_TOKENS = 32  # as `dragonfly predict` and `inference.answer`
DEFAULT_MAX_TOKENS_LIMIT = 512
MAX_TEMPERATURE = 2.0
# Options of the chat-completions format this model cannot honour, and the value that
# means "not asked for"; any other value is refused.
UNSUPPORTED = {"stream": False, "n": 1, "tools": None, "tool_choice": None, "stop": None}
PART_TYPES = ("text", "image_url")


@dataclass(frozen=True)
class ChatRequest:
    """What the model is asked: one question about one image, and how to generate."""

    question: str
    image: Image.Image
    max_tokens: int
    temperature: float


def parse_chat(body: Mapping, rules: ImageRules, max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT) -> ChatRequest:
    """The request in ``body`` (a parsed chat-completions JSON object), or RequestError.
    The cheap checks run first; the image is decoded last."""
    _check_unsupported(body)
    content = _user_content(body.get("messages"))
    question, (where, url) = _question_and_image(content)
    max_tokens = _max_tokens(body.get("max_tokens"), max_tokens_limit)
    temperature = _temperature(body.get("temperature"))
    image = from_data_url(url, where, rules)
    return ChatRequest(question, image, max_tokens, temperature)


def _check_unsupported(body: Mapping) -> None:
    for key, neutral in UNSUPPORTED.items():
        if key in body and body[key] is not None and body[key] != neutral:
            raise RequestError(f"{key}={body[key]!r} is not supported by this model: leave {key} out")


def _user_content(messages: object) -> object:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a list holding one user message: send the question and its image in it")
    if len(messages) > 1:
        raise RequestError(
            f"messages holds {len(messages)} messages; the model answers one: send one user message with the "
            "question and its image"
        )
    message = messages[0]
    if not isinstance(message, Mapping):
        raise RequestError("messages[0] is not an object: send {'role': 'user', 'content': [...]}")
    if message.get("role") != "user":
        raise RequestError(f"messages[0] has role {message.get('role')!r}: send it with role 'user'")
    return message.get("content")


def _question_and_image(content: object) -> tuple[str, tuple[str, str]]:
    """The text parts joined, and where the one image part's URL is and the URL."""
    if isinstance(content, str) or not isinstance(content, list):
        raise RequestError(
            "messages[0].content holds no image: send a list of parts, a 'text' part with the question and "
            "an 'image_url' part with the image"
        )
    texts, urls = [], []
    for i, part in enumerate(content):
        where = f"messages[0].content[{i}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in PART_TYPES:
            raise RequestError(f"{where} has type {kind!r}: send only 'text' and 'image_url' parts")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{where}.text is not a string: put the question's text in it")
            texts.append(part["text"])
        else:
            urls.append((f"{where}.image_url.url", _url(part.get("image_url"), where)))
    if len(urls) != 1:
        raise RequestError(
            f"messages[0] holds {len(urls)} images but the prompt has a place for exactly one: "
            "send one image_url part per request"
        )
    question = "\n".join(t.strip() for t in texts if t.strip())
    if not question:
        raise RequestError("messages[0] has no question: add a 'text' part with it")
    return question, urls[0]


def _url(image_url: object, where: str) -> str:
    # OpenAI's layout is {"url": ..., "detail": ...}; "detail" has no meaning here (the
    # zoom picks the detail), so it is accepted and ignored.
    url = image_url.get("url") if isinstance(image_url, Mapping) else None
    if not isinstance(url, str):
        raise RequestError(f"{where}.image_url must be {{'url': 'data:image/png;base64,...'}}: put the data URL in url")
    return url


def _max_tokens(value: object, limit: int) -> int:
    if value is None:
        return min(DEFAULT_MAX_TOKENS, limit)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise RequestError(f"max_tokens must be a whole number from 1 to {limit}, got {value!r}: send one in range")
    return value


def _temperature(value: object) -> float:
    """0 (greedy, what `dragonfly predict` does) when left out: the same image and question
    get the same answer unless the client asks for sampling."""
    if value is None:
        return 0.0
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 <= value <= MAX_TEMPERATURE:
        raise RequestError(
            f"temperature must be a number from 0 to {MAX_TEMPERATURE}, got {value!r}: send one in range"
        )
    return float(value)


def chat_response(
    text: str, kept: list[int] | None, medium: tuple[int, int], high: tuple[int, int], model: str
) -> dict:
    """The chat-completion response: the answer as the assistant's message; the zoom
    selection (kept high tiles, row-major in the high grid; grids as (columns, rows)) in
    ``custom_outputs``, the format's place for extras."""
    from mlflow.types.llm import ChatChoice, ChatCompletionResponse, ChatMessage

    response = ChatCompletionResponse(
        choices=[ChatChoice(index=0, message=ChatMessage(role="assistant", content=text), finish_reason="stop")],
        id=f"chatcmpl-{uuid.uuid4().hex}",
        model=model,
        custom_outputs={"selected_tiles": kept, "medium_grid": list(medium), "high_grid": list(high)},
    )
    return response.to_dict()
