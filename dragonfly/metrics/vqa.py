"""Biomedical VQA metrics (VQA-RAD, SLAKE, Path-VQA): strict closed-question accuracy,
token-level F1 / recall for open questions, and LLaVA-Med-compatible variants.

No installed library implements these answer-level definitions (HF `evaluate` loads
its metrics from the Hub and fails offline), so they are written here.
"""

from __future__ import annotations

import re
from collections import Counter

from dragonfly.metrics._common import (
    Preds,
    Refs,
    check_ids,
    normalize_answer,
    pred_text,
    ref_list,
    single_ref,
)

# Whole-answer synonyms folded onto yes/no in `closed_accuracy`. Only a complete
# normalised answer is mapped ("true" -> "yes"), never a word inside a longer answer,
# so "true vocal cord" stays as it is.
YES_SYNONYMS = frozenset({"yes", "yeah", "yep", "yup", "true"})
NO_SYNONYMS = frozenset({"no", "nope", "nah", "false"})


def normalize_closed(text: str) -> str:
    """Normalisation used by `closed_accuracy`: `normalize_answer` (lowercase, no
    punctuation, no articles, single spaces), then a whole-answer yes/no synonym fold
    (YES_SYNONYMS -> "yes", NO_SYNONYMS -> "no")."""
    norm = normalize_answer(text)
    if norm in YES_SYNONYMS:
        return "yes"
    if norm in NO_SYNONYMS:
        return "no"
    return norm


def closed_accuracy(preds: Preds, refs: Refs) -> float:
    """Strict closed-question accuracy (0-1): a prediction is correct when its
    `normalize_closed` form equals that of any reference.

    "Yes." == "yes" == "Yeah" == "TRUE", "The liver" == "liver", but "Yes, there is a
    mass" != "yes" — free-text answers need the model to answer tersely; the lenient,
    substring-based number comparable with LLaVA-Med's tables is
    `llava_med_closed_accuracy`.
    Reference: the answer normalisation of the SQuAD v1.1 evaluation script (lowercase,
    strip punctuation and articles) plus the documented yes/no fold; no library version.
    """
    ids = check_ids(preds, refs)
    hits = 0
    for k in ids:
        pred = normalize_closed(pred_text(preds, k))
        hits += any(pred == normalize_closed(r) for r in ref_list(refs, k))
    return hits / len(ids)


VQA_ANNOTATORS = 10  # answers per question in VQA v2, which its accuracy formula is built on


def vqa_accuracy(pred: str, refs: list[str] | tuple[str, ...]) -> float:
    """VQA accuracy of one answer (0-1). With the ten human answers of VQA v2, the official
    formula: min(1, matches / 3) averaged over the ten leave-one-annotator-out subsets.
    With fewer references (one label, or a few accepted alternatives) they are alternatives,
    and the score is exact match against any of them: min(1, m / 3) would cap a correct
    single-reference answer at 1/3. Answers compare in their `normalize_closed` form, not
    with the VQA evaluator's own answer processor (numbers as digits, contractions)."""
    pred_n = normalize_closed(pred)
    norm = [normalize_closed(r) for r in refs]
    if len(norm) < VQA_ANNOTATORS:
        return float(pred_n in norm)
    total = 0.0
    for left_out in range(len(norm)):
        matches = sum(r == pred_n for k, r in enumerate(norm) if k != left_out)
        total += min(1.0, matches / 3)
    return total / len(norm)


def _prf(pred: str, ref: str) -> tuple[float, float, float]:
    pred_tokens = normalize_answer(pred).split()
    ref_tokens = normalize_answer(ref).split()
    if not pred_tokens or not ref_tokens:
        # Both empty means the answers agree; one empty means nothing overlaps.
        same = float(pred_tokens == ref_tokens)
        return same, same, same
    overlap = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if overlap == 0:
        return 0.0, 0.0, 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall), precision, recall


def token_f1(pred: str, ref: str) -> float:
    """Token-level F1 of one answer pair (0-1), SQuAD-style: both sides go through
    `normalize_answer`, the overlap is the multiset intersection of tokens,
    F1 = 2PR/(P+R). Two empty answers score 1, one empty answer scores 0.

    This is the "token-level F1" of Med-PaLM M (Tu et al., 2024) that the Dragonfly
    paper cites for VQA. Agrees with rouge-score's ROUGE-1 F-measure on texts that have
    no articles or punctuation (same unigram-overlap formula).
    """
    return _prf(pred, ref)[0]


def token_recall(pred: str, ref: str) -> float:
    """Share of the reference's tokens found in the prediction (multiset, after
    `normalize_answer`); the recall half of `token_f1`."""
    return _prf(pred, ref)[2]


def corpus_token_f1(preds: Preds, refs: Refs) -> dict[str, float]:
    """Mean token F1, precision and recall over the ids (0-1). With several references
    an id takes the reference that gives the best F1 (SQuAD's max over gold answers)."""
    ids = check_ids(preds, refs)
    totals = [0.0, 0.0, 0.0]
    for k in ids:
        pred = pred_text(preds, k)
        best = max((_prf(pred, r) for r in ref_list(refs, k)), key=lambda s: s[0])
        totals = [t + s for t, s in zip(totals, best, strict=True)]
    n = len(ids)
    return {"f1": totals[0] / n, "precision": totals[1] / n, "recall": totals[2] / n}


# --- LLaVA-Med compatibility -------------------------------------------------------
# Re-statement (own code) of the answer handling in microsoft/LLaVA-Med,
# llava/eval/run_eval_batch.py @ ad758b6 (the script its README uses for the VQA-RAD /
# SLAKE / PathVQA tables) with llava/eval/eval_metrics/glossary.py::normalize_word and
# evaluate_metrics.py::calculate_f1score.

_LM_PUNCT = ';/[]"{}()=+\\_-><@`,?!'
_LM_DIGIT_COMMA = re.compile(r"\d,\d")
# LLaVA-Med writes "(?!<=\d)(\.)(?!\d)"; the first group is a lookahead for the literal
# "<=", which can never match at a ".", so only "(?!\d)" acts.
_LM_PERIOD = re.compile(r"\.(?!\d)")
_LM_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_LM_ARTICLES = {"a", "an", "the"}


def llava_med_normalize(text: str) -> str:
    """LLaVA-Med's `normalize_word`, including its quirks:

    * each punctuation mark in `;/[]"{}()=+\\_-><@`,?!` is deleted when it touches a
      space anywhere in the text (or the text has a digit,digit), otherwise replaced by
      a space — decided per mark over the whole text;
    * "." not followed by a digit is deleted, at most 32 times (it passes `re.UNICODE`,
      i.e. 32, as the `count` argument of `re.sub`);
    * number words none/zero..ten become digits, a/an/the are dropped, commas removed.
    Not reproduced: its VQA contraction table ("dont" -> "don't"), which only rewrites
    apostrophe-less spellings.
    """
    out = text
    strip_all = _LM_DIGIT_COMMA.search(text) is not None
    for mark in _LM_PUNCT:
        out = out.replace(mark, "") if strip_all or f"{mark} " in text or f" {mark}" in text else out.replace(mark, " ")
    out = _LM_PERIOD.sub("", out, count=32)
    words = [_LM_NUMBER_WORDS.get(w, w) for w in out.lower().split()]
    return " ".join(w for w in words if w not in _LM_ARTICLES).replace(",", "")


def llava_med_closed_accuracy(preds: Preds, refs: Refs) -> float:
    """LLaVA-Med's "yes/no accuracy" (0-1) on closed questions: after lowercasing and
    `llava_med_normalize`, a hit is counted when the ground-truth string occurs anywhere
    in the prediction (`gt in pred`).

    Quirks kept on purpose so numbers compare with published LLaVA-Med-protocol tables:
    substring matching means gt "no" hits "not", "normal" or "unknown", and a prediction
    containing both "yes" and "no" is right whatever the truth. Each id takes exactly one
    reference. (The older `run_eval.py` also dropped misses whose prediction had neither
    "yes" nor "no" from the denominator; `run_eval_batch.py` fixed that, and so do we.)
    Reference: microsoft/LLaVA-Med llava/eval/run_eval_batch.py (evaluate, CLOSED branch).
    """
    ids = check_ids(preds, refs)
    hits = 0
    for k in ids:
        gt = llava_med_normalize(single_ref(refs, k, "llava_med_closed_accuracy").lower())
        pred = llava_med_normalize(pred_text(preds, k).lower())
        hits += gt in pred
    return hits / len(ids)


def _llava_med_recall(pred: str, gt: str) -> float:
    # Its calculate_f1score normalises again on top of the caller's normalisation.
    pred_counts = Counter(llava_med_normalize(pred).lower().split())
    gt_counts = Counter(llava_med_normalize(gt).lower().split())
    if not pred_counts or not gt_counts:
        return 0.0
    # Quirk: true positives are counted with the *prediction's* multiplicity, so
    # repeating a matched word raises recall (pred "lung lung", gt "lung nodule" -> 2/3).
    tp = sum(c for w, c in pred_counts.items() if w in gt_counts)
    fn = sum(c for w, c in gt_counts.items() if w not in pred_counts)
    return tp / (tp + fn) if tp else 0.0


def llava_med_open_recall(preds: Preds, refs: Refs) -> float:
    """LLaVA-Med's open-question "recall" (0-1): mean over ids of the share of
    ground-truth tokens present in the prediction, on `llava_med_normalize`d,
    whitespace-split, lowercased text.

    Quirk kept: matched tokens are counted with the prediction's multiplicity (see
    `_llava_med_recall`); empty prediction or ground truth scores 0. One reference per id.
    Reference: microsoft/LLaVA-Med llava/eval/run_eval_batch.py (OPEN branch, the
    "recall" row) and llava/eval/eval_metrics/evaluate_metrics.py::calculate_f1score.
    """
    ids = check_ids(preds, refs)
    total = 0.0
    for k in ids:
        gt = llava_med_normalize(single_ref(refs, k, "llava_med_open_recall").lower())
        pred = llava_med_normalize(pred_text(preds, k).lower())
        total += _llava_med_recall(pred, gt)
    return total / len(ids)
