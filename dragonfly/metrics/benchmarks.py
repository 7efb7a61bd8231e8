"""General-benchmark scores: multiple choice (AI2D, ScienceQA, MMMU), ChartQA relaxed
accuracy, POPE and HallusionBench.

Each is a re-statement in our own code of the scoring rule used by lmms-eval /
the benchmark's official script (cited per function); none of these rules ships in an
installed library.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

from dragonfly.metrics._common import (
    Preds,
    Refs,
    check_ids,
    normalize_answer,
    pred_text,
    ref_list,
    single_ref,
)

# --- multiple choice ---------------------------------------------------------------


def _letters(options: Sequence[str]) -> list[str]:
    if not 0 < len(options) <= 26:
        raise ValueError(f"a multiple-choice question needs 1-26 options, got {len(options)}")
    return list(string.ascii_uppercase[: len(options)])


def mmmu_parse_choice(response: str, options: Sequence[str], *, rng: random.Random | None = None) -> str | None:
    """Answer letter from free text, following MMMU's `parse_multi_choice_response`
    (MMMU-Benchmark/MMMU eval/eval_utils.py, copied into lmms-eval
    lmms_eval/tasks/mmmu/utils.py), step by step:

    1. strip , . ! ? ; : ' from both ends (in that order), pad with spaces;
    2. candidates = letters written "(B)"; else letters followed by a space ("B ");
       else letters followed by "." ("B.") — all case-sensitive, upper-case letters;
    3. else, only if the response has more than 5 words, options whose text occurs in
       it (case-insensitive);
    4. several candidates: the one occurring last wins ("(X)", " X " or option text).
    When nothing matches MMMU picks a random letter; here that happens only when an
    `rng` is given (pass `random.Random(seed)` to reproduce their expected ~1/k credit),
    otherwise None is returned and scored wrong.
    """
    letters = _letters(options)
    for ch in ",.!?;:'":
        response = response.strip(ch)
    padded = f" {response} "

    candidates = [c for c in letters if f"({c})" in padded]
    bracketed = bool(candidates)
    if not candidates:
        candidates = [c for c in letters if f"{c} " in padded]
    if not candidates:
        candidates = [c for c in letters if f"{c}." in padded]
    by_text = False
    if not candidates and len(padded.split()) > 5:
        lowered = padded.lower()
        candidates = [c for c, text in zip(letters, options, strict=True) if text.lower() in lowered]
        by_text = bool(candidates)

    if not candidates:
        return rng.choice(letters) if rng is not None else None
    if len(candidates) == 1:
        return candidates[0]
    if by_text:
        positions = [padded.lower().rfind(options[letters.index(c)].lower()) for c in candidates]
    elif bracketed:
        positions = [padded.rfind(f"({c})") for c in candidates]
    else:
        positions = [padded.rfind(f" {c} ") for c in candidates]
    # max() keeps the first of equal positions, like MMMU's np.argmax.
    return candidates[max(range(len(candidates)), key=positions.__getitem__)]


_LEAD_LETTER = re.compile(r"^\s*\(?([A-Za-z])\s*[).:]")
# "answer is b." / "answer: (c)" but not "answer is a cat" (a lone "a" is an article).
_ANSWER_IS = re.compile(
    r"\banswer\s*(?:is|:)\s*:?\s*(?:\(([A-Za-z])\)|([A-Za-z])(?:\)|\s*(?:[.,;!]|$)))", re.IGNORECASE
)


def parse_choice(response: str, options: Sequence[str]) -> str | None:
    """Answer letter from free text: `mmmu_parse_choice` first; when it finds nothing,
    these extensions (case-insensitive), in order, before giving up with None:

    * a leading letter with a bracket, dot or colon: "b) cat", "(c) dog", "d. 12", "a:";
    * the whole response is one letter: "b";
    * "answer is b" / "answer: b";
    * the response equals one option's text after `normalize_answer` ("Cat." -> "cat"),
      or contains exactly one option's text.
    MMMU would score all of these by a random guess; the extensions only ever fire where
    its parser has no answer, so on responses it parses the two agree.
    """
    letters = _letters(options)
    found = mmmu_parse_choice(response, options)
    if found is not None:
        return found
    for pattern in (_LEAD_LETTER, _ANSWER_IS):
        match = pattern.search(response)
        letter = next((g for g in match.groups() if g), "").upper() if match else ""
        if letter in letters:
            return letter
    bare = response.strip().strip(string.punctuation + " ").upper()
    if len(bare) == 1 and bare in letters:
        return bare
    norm = normalize_answer(response)
    norm_options = [normalize_answer(o) for o in options]
    exact = [c for c, o in zip(letters, norm_options, strict=True) if o and o == norm]
    if len(exact) == 1:
        return exact[0]
    padded = f" {norm} "
    inside = [c for c, o in zip(letters, norm_options, strict=True) if o and f" {o} " in padded]
    return inside[0] if len(inside) == 1 else None


def multiple_choice_accuracy(
    preds: Preds,
    refs: Refs,
    options: Mapping[Hashable, Sequence[str]],
    *,
    parser: Literal["dragonfly", "mmmu"] = "dragonfly",
    rng: random.Random | None = None,
) -> float:
    """Multiple-choice accuracy (0-1) for AI2D, ScienceQA and MMMU.

    `refs[id]` is the correct letter ("B"; a one-element list is fine), `options[id]`
    the option texts in letter order. The letter is extracted from each free-text
    prediction with `parse_choice` (parser="dragonfly") or strictly with
    `mmmu_parse_choice` (parser="mmmu", optionally with `rng` for MMMU's random
    fallback); unparseable answers count as wrong. Correct = extracted letter equals the
    reference letter (MMMU's `eval_multi_choice`).
    """
    ids = check_ids(preds, refs)
    missing = [k for k in ids if k not in options]
    if missing:
        raise ValueError(f"no options given for ids {missing[:10]}")
    if parser not in ("dragonfly", "mmmu"):
        raise ValueError(f"unknown parser {parser!r}; use 'dragonfly' or 'mmmu'")
    hits = 0
    for k in ids:
        gold = single_ref(refs, k, "multiple_choice_accuracy").strip().upper()
        if gold not in _letters(options[k]):
            raise ValueError(f"id {k!r}: reference {gold!r} is not one of the option letters")
        text = pred_text(preds, k)
        got = mmmu_parse_choice(text, options[k], rng=rng) if parser == "mmmu" else parse_choice(text, options[k])
        hits += got == gold
    return hits / len(ids)


# --- ChartQA -----------------------------------------------------------------------


def _chart_number(text: str, thousands_separators: bool) -> float | None:
    if thousands_separators and re.fullmatch(r"\s*-?\d{1,3}(,\d{3})+(\.\d+)?%?\s*", text):
        text = text.replace(",", "")
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(
    pred: str, target: str, *, max_relative_change: float = 0.05, thousands_separators: bool = False
) -> bool:
    """ChartQA relaxed correctness of one answer (Masry et al. 2022, §5.1), as lmms-eval's
    `relaxed_correctness` (lmms_eval/tasks/chartqa/utils.py, itself from Qwen-VL /
    pix2struct): when both sides parse as numbers (Python `float`; a trailing "%" divides
    by 100) and the target is non-zero, correct iff |pred - target| / |target| <= 5%;
    otherwise case-insensitive exact string match.

    Quirks kept: no whitespace stripping, "45%" vs "45" compare 0.45 with 45, a target of
    0 falls back to string match ("0.0" != "0"), and "1,000" is not a number — unless
    `thousands_separators=True` (our extension, off by default to stay comparable), which
    reads digit groups like "1,234.5" as numbers.
    """
    p = _chart_number(pred, thousands_separators)
    t = _chart_number(target, thousands_separators)
    if p is not None and t:
        return abs(p - t) / abs(t) <= max_relative_change
    return pred.lower() == target.lower()


def relaxed_accuracy(
    preds: Preds,
    refs: Refs,
    *,
    max_relative_change: float = 0.05,
    thousands_separators: bool = False,
) -> float:
    """ChartQA relaxed accuracy (0-1): mean of `relaxed_correctness`; with several
    references an id is right when any one is. Agrees with lmms-eval's ChartQA
    `relaxed_overall`."""
    ids = check_ids(preds, refs)
    hits = 0
    for k in ids:
        pred = pred_text(preds, k)
        hits += any(
            relaxed_correctness(
                pred,
                r,
                max_relative_change=max_relative_change,
                thousands_separators=thousands_separators,
            )
            for r in ref_list(refs, k)
        )
    return hits / len(ids)


# --- POPE ----------------------------------------------------------------------------


def _yes_no_label(text: str, key: Hashable, benchmark: str) -> str:
    label = text.lower().strip()
    if label not in ("yes", "no"):
        raise ValueError(f"{benchmark} reference of id {key!r} must be yes/no, got {text!r}")
    return label


def pope_parse(pred: str, parser: Literal["lmms-eval", "llava"] = "lmms-eval") -> str:
    """Map a POPE answer to "yes", "no" or "other".

    parser="lmms-eval": `pred.lower().strip()` must be exactly "yes" or "no" (lmms-eval
    lmms_eval/tasks/pope/utils.py::pope_process_results) — "Yes." and "Yes, there is"
    are "other" and can never be right.
    parser="llava": LLaVA's llava/eval/eval_pope.py (from the POPE authors): keep the
    text before the first ".", drop commas, split on spaces; "no" if one of the words
    is "No", "no" or "not", else "yes" (so every answer is yes or no).
    """
    if parser == "lmms-eval":
        label = pred.lower().strip()
        return label if label in ("yes", "no") else "other"
    if parser == "llava":
        words = pred.split(".")[0].replace(",", "").split(" ")
        return "no" if {"No", "no", "not"} & set(words) else "yes"
    raise ValueError(f"unknown POPE parser {parser!r}; use 'lmms-eval' or 'llava'")


def pope(preds: Preds, refs: Refs, *, parser: Literal["lmms-eval", "llava"] = "lmms-eval") -> dict[str, float]:
    """POPE scores (0-1) with "yes" as the positive class, as lmms-eval aggregates them:

    * accuracy = share of ids whose parsed answer equals the label;
    * precision = TP / (TP + FP), recall = TP / (TP + FN), f1 = their harmonic mean
      (0 when undefined), where an answer parsed as "other" is neither a positive nor a
      negative prediction (it only lowers accuracy);
    * yes_ratio = share of *reference* labels that are "yes" — lmms-eval's
      `pope_aggregate_yes_ratio` counts the ground truth, which is 0.5 on POPE by design;
    * pred_yes_ratio = share of *predictions* parsed as "yes" — the "yes ratio" of the POPE
      paper and LLaVA's eval_pope.py, the one that shows a yes-bias.
    `parser` chooses how answers become yes/no (see `pope_parse`). Each id has one
    reference, "yes" or "no". Reference: lmms-eval lmms_eval/tasks/pope/utils.py.
    """
    ids = check_ids(preds, refs)
    tp = fp = fn = correct = gt_yes = pred_yes = 0
    for k in ids:
        gt = _yes_no_label(single_ref(refs, k, "pope"), k, "POPE")
        got = pope_parse(pred_text(preds, k), parser)
        correct += got == gt
        gt_yes += gt == "yes"
        pred_yes += got == "yes"
        tp += got == "yes" and gt == "yes"
        fp += got == "yes" and gt == "no"
        fn += got == "no" and gt == "yes"
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(ids)
    return {
        "f1": f1,
        "accuracy": correct / n,
        "precision": precision,
        "recall": recall,
        "yes_ratio": gt_yes / n,
        "pred_yes_ratio": pred_yes / n,
    }


# --- HallusionBench ---------------------------------------------------------------------


def hallusionbench_accuracy(preds: Preds, refs: Refs) -> float:
    """HallusionBench question-level accuracy ("aAcc", 0-1) without a GPT judge, as
    lmms-eval's `hb_aggregation_result_intern` (lmms_eval/tasks/hallusion_bench/
    evaluate_hb.py): a prediction means "yes" iff "yes" occurs anywhere in it
    (case-insensitive), and is correct when that equals the label.

    `refs[id]` is the dataset's gt_answer: "1"/"0" or "yes"/"no". Quirk kept: substring
    matching reads "eyes" as yes. lmms-eval's default aggregation instead asks GPT-4
    whether the answer is correct/incorrect/unclear; the figure-level (fAcc) and
    question-pair (qAcc) scores need the dataset's grouping keys and are not computed here.
    """
    ids = check_ids(preds, refs)
    hits = 0
    for k in ids:
        raw = single_ref(refs, k, "hallusionbench_accuracy").strip().lower()
        label = {"1": "yes", "0": "no"}.get(raw, raw)
        gt = _yes_no_label(label, k, "HallusionBench")
        said_yes = "yes" in pred_text(preds, k).lower()
        hits += said_yes == (gt == "yes")
    return hits / len(ids)
