"""Evaluation prompts: a sample + its benchmark spec -> the user message sent to the model.

Pure functions. The rules (why: converters already phrase questions the way the model is
trained on them, so the evaluator must not add a second, different instruction):
- a task with a fixed prompt (captioning, reports) gets exactly that text after its
  image placeholders;
- a multiple-choice question gets its options as "A. ...\\nB. ..." lines unless it
  already lists them, then the spec's instruction unless it already has one;
- any other question gets the spec's instruction for its task unless its last
  sentence is already an instruction ("Answer ...", "Respond ...", "Reply ...");
- image placeholders stay where the sample put them; there must be one per image.
"""

from __future__ import annotations

import re

from dragonfly.data.prompts import letters
from dragonfly.data.schema import Sample
from dragonfly.errors import DragonflyError
from dragonfly.eval.benchmarks import BenchmarkSpec
from dragonfly.model.constants import IMAGE_TOKEN

_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
_INSTRUCTION_START = re.compile(r"^(answer|respond|reply)\b", re.IGNORECASE)


class PromptError(DragonflyError, ValueError):
    """A sample that cannot be turned into a prompt (no question, placeholder mismatch)."""


def strip_placeholders(text: str) -> str:
    return "\n".join(line for line in text.replace(IMAGE_TOKEN, "").splitlines() if line.strip()).strip()


def has_instruction(question: str, instruction: str = "") -> bool:
    """True when `question` already contains `instruction` or ends with an answer-format
    sentence such as "Answer yes or no." or "Answer the question using a single word"."""
    bare = strip_placeholders(question)
    if instruction and instruction.lower() in bare.lower():
        return True
    lines = bare.splitlines()
    if not lines:
        return False
    last_sentence = _SENTENCE_END.split(lines[-1].strip())[-1]
    return bool(_INSTRUCTION_START.match(last_sentence))


def lists_options(question: str, choices: tuple[str, ...] | list[str]) -> bool:
    """Whether every option already appears on its own line as "<letter>. <text>"."""
    lines = {line.strip() for line in question.splitlines()}
    return all(
        f"{letter}. {choice.strip()}" in lines for letter, choice in zip(letters(len(choices)), choices, strict=True)
    )


def option_lines(choices: tuple[str, ...] | list[str]) -> str:
    return "\n".join(
        f"{letter}. {choice.strip()}" for letter, choice in zip(letters(len(choices)), choices, strict=True)
    )


def _append(text: str, addition: str) -> str:
    return f"{text.rstrip()}\n{addition}" if strip_placeholders(text) else f"{text}{addition}"


def user_text(sample: Sample, spec: BenchmarkSpec) -> str:
    """The user message content for `sample` under `spec` (placeholders included)."""
    n_images = len(sample.images)
    if sample.task in spec.fixed_prompts:
        text = IMAGE_TOKEN + "\n"
        text = text * n_images + spec.fixed_prompts[sample.task]
    else:
        text = sample.instruction().strip()
        instruction = spec.instructions.get(sample.task, "")
        if sample.task == "mcq":
            if not sample.choices:
                raise PromptError(f"{sample.id}: a multiple-choice sample without choices")
            if not lists_options(text, sample.choices):
                text = _append(text, option_lines(sample.choices))
        if instruction and not has_instruction(text, instruction):
            text = _append(text, instruction)
        if not strip_placeholders(text):
            raise PromptError(
                f"{sample.id}: no question text and benchmark {spec.name!r} has no prompt for task {sample.task!r}"
            )
    found = text.count(IMAGE_TOKEN)
    if found != n_images:
        raise PromptError(f"{sample.id}: {found} {IMAGE_TOKEN} placeholder(s) for {n_images} image(s)")
    return text


def messages(sample: Sample, spec: BenchmarkSpec) -> list[dict[str, str]]:
    """Single-turn chat messages for `processor.build_prompt`."""
    return [{"role": "user", "content": user_text(sample, spec)}]


def question_text(prompt: str) -> str:
    """The prompt without image placeholders: what an LLM judge is shown as the question."""
    return strip_placeholders(prompt)
