"""The one base class of every error the project raises on purpose.

The ``dragonfly`` command prints a :class:`DragonflyError` as one short line (plus a hint
line when there is one) and exits 1; ``--debug`` (or ``DRAGONFLY_DEBUG=1``, read by the
CLI only) shows the traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DragonflyError(Exception):
    """An expected failure (bad config, data, checkpoint, image...): the message says what
    is wrong and names it; ``hint`` says what to do, when that is not obvious."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class CheckpointError(DragonflyError, FileNotFoundError):
    """A model directory or training checkpoint that is missing, incomplete or unsafe."""


def close_match(word: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest option, or '' when none is close."""
    found = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {found[0]!r}?)" if found else ""
