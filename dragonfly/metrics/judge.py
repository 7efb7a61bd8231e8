"""LLM-judged MM-Vet score through any OpenAI-compatible chat-completions endpoint.

Configuration comes from the environment (nothing is read at import time):

    DRAGONFLY_JUDGE_BASE_URL  e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1
    DRAGONFLY_JUDGE_MODEL     e.g. gpt-4-0613 (the model of the MM-Vet paper)
    DRAGONFLY_JUDGE_API_KEY   optional; sent as "Authorization: Bearer ..." when set

Without a base URL and a model, `judge_config_from_env` raises `MetricUnavailable`;
callers report MM-Vet as skipped with that message. No score is ever made up.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

from dragonfly.errors import DragonflyError
from dragonfly.metrics._common import (
    MetricUnavailable,
    Preds,
    Refs,
    check_ids,
    pred_text,
    single_ref,
)

ENV_BASE_URL = "DRAGONFLY_JUDGE_BASE_URL"
ENV_MODEL = "DRAGONFLY_JUDGE_MODEL"
ENV_API_KEY = "DRAGONFLY_JUDGE_API_KEY"


class JudgeError(DragonflyError, RuntimeError):
    """A configured judge endpoint failed (HTTP error, bad JSON) after all retries."""


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to reach the judge; `base_url` is the API root (".../v1")."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    http_retries: int = 3
    retry_wait_s: float = 2.0

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def judge_config_from_env(env: Mapping[str, str] | None = None) -> JudgeConfig:
    """Judge settings from `env` (default `os.environ`); raises `MetricUnavailable`
    naming the missing variables when the endpoint is not configured."""
    env = os.environ if env is None else env
    base_url = env.get(ENV_BASE_URL, "").strip()
    model = env.get(ENV_MODEL, "").strip()
    missing = [name for name, value in ((ENV_BASE_URL, base_url), (ENV_MODEL, model)) if not value]
    if missing:
        raise MetricUnavailable(
            "MM-Vet needs an LLM judge: set "
            + " and ".join(missing)
            + f" (and {ENV_API_KEY} if the endpoint wants a key) to an OpenAI-compatible "
            "chat-completions endpoint; the benchmark is skipped, not scored."
        )
    return JudgeConfig(base_url=base_url, model=model, api_key=env.get(ENV_API_KEY) or None)


def chat_completion(config: JudgeConfig, prompt: str, *, temperature: float, max_tokens: int) -> str:
    """One user-message chat completion; returns the reply text. Retries transport and
    5xx/429 errors `config.http_retries` times, then raises `JudgeError`."""
    body = json.dumps(
        {
            "model": config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
    ).encode()
    headers = {"Content-Type": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    last: Exception | None = None
    for attempt in range(config.http_retries + 1):
        if attempt:
            time.sleep(config.retry_wait_s)
        request = urllib.request.Request(config.chat_url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
                payload = json.loads(response.read().decode())
            return str(payload["choices"][0]["message"]["content"] or "")
        except urllib.error.HTTPError as err:
            last = err
            # Client errors (bad key, unknown model) will not heal by retrying.
            if err.code < 500 and err.code != 429:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            last = err
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise JudgeError(f"judge at {config.chat_url} returned an unexpected body: {err!r}") from err
    raise JudgeError(f"judge at {config.chat_url} failed: {last!r}") from last


# The grading prompt of the official MM-Vet evaluator (yuweihao/MM-Vet,
# mm-vet_evaluator.py); kept verbatim because the scores are only comparable with it.
MMVET_PROMPT = """Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. <AND> in the ground truth means it is totally right only when all elements in the ground truth are present in the prediction, and <OR> means it is totally right when any one element in the ground truth is present in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, or 1.0 (totally right). Just complete the last space of the correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0
What is x in the equation? | -1 <AND> -5 | x = -1 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -5 or 5 | 0.5
What is x in the equation? | -1 <AND> -5 | x = -1 or x = -5 | 1.0
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme talks about Iceland and Greenland. It's pointing out that despite their names, Iceland is not very icy and Greenland isn't very green. | 0.4
Can you explain this meme? | This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in ice and snow. The meme is saying that the person has trust issues because the names of these countries do not accurately represent their landscapes. | The meme is using humor to point out the misleading nature of Iceland's and Greenland's names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the names of the countries and their actual physical characteristics. | 1.0
"""
MMVET_RETRY_SUFFIX = "\nPredict the correctness of the answer (digit): "


def mmvet_query(question: str, answer: str, prediction: str) -> str:
    """The judge prompt for one sample, laid out as MM-Vet's evaluator builds it."""
    spaced = answer.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return MMVET_PROMPT + "\n" + " | ".join([question, spaced, prediction, ""])


def parse_judge_score(reply: str) -> float | None:
    """MM-Vet reads the first space-separated token as a float in [0, 1]; else None."""
    try:
        score = float(reply.split(" ")[0].strip())
    except ValueError:
        return None
    return score if 0.0 <= score <= 1.0 else None


def mmvet_score(
    preds: Preds,
    refs: Refs,
    questions: Mapping[Hashable, str],
    *,
    config: JudgeConfig | None = None,
    max_tokens: int = 3,
    max_tries: int = 5,
) -> dict[str, float]:
    """MM-Vet GPT-eval score (0-1; the paper's tables print it x100).

    For each id the judge gets MM-Vet's few-shot grading prompt with the question, the
    ground truth (with <AND>/<OR> spaced) and the prediction, and answers a correctness
    in 0.0..1.0. As in the official evaluator (yuweihao/MM-Vet mm-vet_evaluator.py): the
    first query is at temperature 0 with max_tokens=3; an unparseable reply is re-asked
    with "Predict the correctness of the answer (digit):" appended, at temperatures 0.0,
    0.5, 1.0, ..., and after `max_tries` unusable replies the sample gets 0.0 — counted
    in "unscored" so it is visible. Returns {"score": mean, "n": ids, "unscored": count}.

    `config` defaults to `judge_config_from_env()`, which raises `MetricUnavailable` when
    no judge is configured. Transport failures raise `JudgeError`.
    """
    ids = check_ids(preds, refs)
    missing = [k for k in ids if k not in questions]
    if missing:
        raise ValueError(f"no question text given for ids {missing[:10]}")
    config = judge_config_from_env() if config is None else config
    total = 0.0
    unscored = 0
    for k in ids:
        base = mmvet_query(questions[k], single_ref(refs, k, "mmvet_score"), pred_text(preds, k))
        score = None
        for attempt in range(max_tries):
            # Official schedule: 0.0, then the re-ask at 0.0, 0.5, 1.0, ...
            prompt = base if attempt == 0 else base + MMVET_RETRY_SUFFIX
            temperature = 0.5 * max(attempt - 1, 0)
            score = parse_judge_score(chat_completion(config, prompt, temperature=temperature, max_tokens=max_tokens))
            if score is not None:
                break
        if score is None:
            unscored += 1
            score = 0.0
        total += score
    return {"score": total / len(ids), "n": float(len(ids)), "unscored": float(unscored)}
