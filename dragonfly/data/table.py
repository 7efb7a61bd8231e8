"""Table rules for converted samples: one row of derived facts per sample, checked by a
pandera model; every bad row becomes a (reason, detail) instead of stopping a build.

Apart from `schema.py` because pandas and pandera take about a second to import, and every
command reads samples while only building and converting data validates them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from dragonfly.data.schema import ROLES, SPLITS, TASKS, Sample
from dragonfly.model.constants import IMAGE_TOKEN


class SampleTable(pa.DataFrameModel):
    """Row-level rules for a table of samples (one row per sample, see `samples_frame`).

    Placeholders: the model expands each `<image>` into one image's tokens, so the count
    must equal the number of images, and the first one must be in the first user turn.
    """

    id: Series[str] = pa.Field(str_length={"min_value": 1})
    source: Series[str] = pa.Field(str_length={"min_value": 1})
    split: Series[str] = pa.Field(isin=list(SPLITS))
    task: Series[str] = pa.Field(isin=list(TASKS))
    n_images: Series[int] = pa.Field(ge=0)
    n_placeholders: Series[int] = pa.Field(ge=0)
    first_user_placeholders: Series[int] = pa.Field(ge=0)
    bad_roles: Series[int] = pa.Field(eq=0)
    control_tokens: Series[int] = pa.Field(eq=0)
    empty_turns: Series[int] = pa.Field(eq=0)
    assistant_turns: Series[int] = pa.Field(ge=1)
    first_is_user: Series[bool]
    n_answers: Series[int] = pa.Field(ge=0)
    blank_answers: Series[int] = pa.Field(eq=0)
    n_choices: Series[int] = pa.Field(ge=0)
    answer_in_options: Series[bool]

    @pa.dataframe_check
    def unique_id(cls, df: pd.DataFrame) -> Series[bool]:
        return ~df["id"].duplicated(keep="first")

    @pa.dataframe_check
    def image_placeholder_present(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["n_images"] == 0) | (df["first_user_placeholders"] >= 1)

    @pa.dataframe_check
    def placeholder_count(cls, df: pd.DataFrame) -> Series[bool]:
        return df["n_placeholders"] == df["n_images"]

    @pa.dataframe_check
    def text_only_matches_images(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["task"] == "text_only") == (df["n_images"] == 0)

    @pa.dataframe_check
    def starts_with_user(cls, df: pd.DataFrame) -> Series[bool]:
        return df["first_is_user"]

    @pa.dataframe_check
    def has_answer(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["task"] == "text_only") | (df["n_answers"] >= 1)

    @pa.dataframe_check
    def mcq_choices(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["task"] != "mcq") | ((df["n_choices"] >= 2) & df["answer_in_options"])

    class Config:
        coerce = True


# Which reason a failed check maps to, in priority order: a row failing several checks is
# quarantined under the first matching reason (all failed checks go into the detail).
_REASON_BY_CHECK: tuple[tuple[str, str], ...] = (
    ("unique_id", "duplicate_id"),
    ("split", "bad_split"),
    ("task", "bad_task"),
    ("id", "missing_id"),
    ("source", "missing_source"),
    ("bad_roles", "bad_role"),
    ("control_tokens", "control_token_in_text"),
    ("image_placeholder_present", "missing_image_placeholder"),
    ("placeholder_count", "image_placeholder_mismatch"),
    ("text_only_matches_images", "task_image_mismatch"),
    ("blank_answers", "empty_answer"),
    ("has_answer", "empty_answer"),
    ("empty_turns", "empty_turn"),
    ("assistant_turns", "no_assistant_turn"),
    ("starts_with_user", "bad_turn_order"),
    ("mcq_choices", "bad_choices"),
)


# Chat-template control tokens written into a message's text (Llama-3's <|eot_id|>, ChatML's
# <|im_start|>, ...): the tokenizer would read them as structure, a forged turn in training.
CONTROL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def samples_frame(samples: Sequence[Sample]) -> pd.DataFrame:
    """One row of derived, checkable facts per sample; the index is the sample's position."""
    rows = []
    for s in samples:
        users = [t for t in s.turns if t.role == "user"]
        options = {chr(ord("A") + i) for i in range(len(s.choices))} | set(s.choices)
        rows.append(
            {
                "id": s.id,
                "source": s.source,
                "split": s.split,
                "task": s.task,
                "n_images": len(s.images),
                "n_placeholders": sum(t.text.count(IMAGE_TOKEN) for t in s.turns),
                "first_user_placeholders": users[0].text.count(IMAGE_TOKEN) if users else 0,
                "bad_roles": sum(t.role not in ROLES for t in s.turns),
                "control_tokens": sum(len(CONTROL_TOKEN.findall(t.text)) for t in s.turns),
                "empty_turns": sum(not t.text.replace(IMAGE_TOKEN, "").strip() for t in s.turns),
                "assistant_turns": sum(t.role == "assistant" for t in s.turns),
                "first_is_user": bool([t.role for t in s.turns if t.role != "system"][:1] == ["user"]),
                "n_answers": len(s.answers),
                "blank_answers": sum(not a.strip() for a in s.answers),
                "n_choices": len(s.choices),
                "answer_in_options": bool(s.answers) and all(a in options for a in s.answers),
            }
        )
    columns = list(SampleTable.to_schema().columns)
    return pd.DataFrame(rows, columns=columns)


def table_problems(samples: Sequence[Sample]) -> dict[int, tuple[str, str]]:
    """Validate `samples` lazily; map the position of every bad sample to (reason, detail)."""
    if not samples:
        return {}
    frame = samples_frame(samples)
    try:
        SampleTable.validate(frame, lazy=True)
        return {}
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    failed: dict[int, set[str]] = {}
    for _, case in cases.iterrows():
        if pd.isna(case["index"]):
            continue
        check = str(case["check"])
        column = case["column"]
        key = check if check in dict(_REASON_BY_CHECK) else str(column)
        failed.setdefault(int(case["index"]), set()).add(key)
    out: dict[int, tuple[str, str]] = {}
    for idx, keys in failed.items():
        reason = next((r for k, r in _REASON_BY_CHECK if k in keys), "schema_error")
        out[idx] = (reason, "failed checks: " + ", ".join(sorted(keys)))
    return out
