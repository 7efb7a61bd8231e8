"""The prompt wording shared by the converters, the synthetic benchmark and the evaluator
(LLaVA's and lmms-eval's suffixes), so training and evaluation ask the same way."""

from __future__ import annotations

from collections.abc import Sequence

MCQ_SUFFIX = "Answer with the option's letter from the given choices directly."
SHORT_SUFFIX = "Answer the question using a single word or phrase."


def letters(n: int) -> list[str]:
    """The first ``n`` option letters: A, B, C, ..."""
    return [chr(ord("A") + i) for i in range(n)]


def mcq_prompt(question: str, choices: Sequence[str], context: str = "") -> str:
    """A multiple-choice question with lettered options and the MCQ suffix."""
    lines = [f"Context: {context.strip()}"] if context and context.strip() else []
    lines.append(question.strip())
    lines.extend(f"{letter}. {choice}" for letter, choice in zip(letters(len(choices)), choices, strict=True))
    lines.append(MCQ_SUFFIX)
    return "\n".join(lines)
