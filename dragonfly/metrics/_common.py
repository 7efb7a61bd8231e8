"""Shared input checks, errors and text normalisation for the metric functions."""

from __future__ import annotations

import re
import string
from collections.abc import Hashable, Mapping, Sequence

from dragonfly.errors import DragonflyError

Preds = Mapping[Hashable, str]
Refs = Mapping[Hashable, Sequence[str] | str]


class MetricUnavailable(DragonflyError, RuntimeError):
    """A metric cannot run in this environment (e.g. no LLM judge configured).

    Callers report the benchmark as "skipped" with this message; they never
    substitute a number for it.
    """


class JavaNotFoundError(DragonflyError, RuntimeError):
    """METEOR or the PTB tokenizer was asked for but no `java` executable is on PATH."""


class IdMismatchError(DragonflyError, ValueError):
    """Predictions and references do not cover the same ids."""


def _preview(ids: list[Hashable], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    more = f" … and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"[{shown}{more}]"


def check_ids(preds: Mapping[Hashable, object], refs: Mapping[Hashable, object]) -> list[Hashable]:
    """Return the ids in `preds` order after checking both mappings hold exactly the same ids.

    A silently shrunken evaluation set would inflate or deflate every score, so any
    difference is an error that names the offending ids.
    """
    if not preds and not refs:
        raise ValueError("no samples to score: predictions and references are both empty")
    missing_pred = [k for k in refs if k not in preds]
    missing_ref = [k for k in preds if k not in refs]
    if missing_pred or missing_ref:
        parts = []
        if missing_pred:
            parts.append(f"{len(missing_pred)} id(s) have references but no prediction: {_preview(missing_pred)}")
        if missing_ref:
            parts.append(f"{len(missing_ref)} id(s) have a prediction but no references: {_preview(missing_ref)}")
        raise IdMismatchError("; ".join(parts))
    return list(preds)


def ref_list(refs: Refs, key: Hashable) -> list[str]:
    """References of one id as a non-empty list; a bare string counts as one reference."""
    value = refs[key]
    # A bare str is itself a Sequence[str]; iterating it would yield characters.
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ValueError(f"id {key!r} has an empty reference list")
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"id {key!r}: references must be strings, got {type(item).__name__}")
    return items


def single_ref(refs: Refs, key: Hashable, metric: str) -> str:
    """The one reference of an id, for metrics whose reference scripts take exactly one answer."""
    items = ref_list(refs, key)
    if len(items) != 1:
        raise ValueError(f"{metric} takes exactly one reference per id; id {key!r} has {len(items)}")
    return items[0]


def pred_text(preds: Preds, key: Hashable) -> str:
    value = preds[key]
    if not isinstance(value, str):
        raise TypeError(f"id {key!r}: prediction must be a string, got {type(value).__name__}")
    return value


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style answer normalisation: lowercase, drop ASCII punctuation and the
    articles a/an/the, collapse whitespace."""
    text = text.lower().translate(_PUNCT_TABLE)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())
