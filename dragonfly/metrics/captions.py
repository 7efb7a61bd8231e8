"""Caption / report-generation metrics through the COCO caption toolkit (pycocoevalcap 1.2).

Protocol (as `pycocoevalcap.eval.COCOEvalCap`): predictions and references are first
run through the Stanford PTB tokenizer that ships with pycocoevalcap (lowercases, splits
punctuation off and drops it), then scored with the toolkit's own Bleu(4), Meteor,
Rouge and Cider classes. We call those classes directly instead of `COCOEvalCap`
because that class wants COCO annotation objects and always tries SPICE.

The PTB tokenizer and METEOR are Java programs; we check for `java` on PATH before
starting them and raise `JavaNotFoundError` naming it. With `tokenize=False` the texts
are only whitespace-split, so BLEU, ROUGE-L and CIDEr run without Java (numbers then
differ from the COCO protocol on punctuation and case).

Note: the PTB tokenizer writes a temporary file next to its jar inside the installed
pycocoevalcap package, so that directory must be writable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Literal

from dragonfly.metrics._common import (
    JavaNotFoundError,
    Preds,
    Refs,
    check_ids,
    pred_text,
    ref_list,
)

_BLEU_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4")


def _require_java(what: str) -> None:
    if shutil.which("java") is None:
        raise JavaNotFoundError(
            f"{what} needs a Java runtime (pycocoevalcap runs a .jar), but no `java` "
            f"executable was found on PATH={os.environ.get('PATH', '')!r}. Install a JRE "
            "(e.g. `apt-get install openjdk-17-jre-headless`); BLEU, ROUGE-L and CIDEr can "
            "also run without Java via tokenize=False."
        )


def _one_line(text: str) -> str:
    # The PTB tokenizer and the METEOR jar are line-oriented: any line break inside
    # a text (\r, \u2028, ... not just \n) would shift every later sample.
    return " ".join(text.split())


def _ptb_tokenize(texts: dict[Hashable, list[str]]) -> dict[Hashable, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    _require_java("The PTB tokenizer")
    payload = {k: [{"caption": _one_line(t)} for t in v] for k, v in texts.items()}
    out = PTBTokenizer().tokenize(payload)
    # pycocoevalcap zips ids with output lines and would silently drop samples on a
    # line-count mismatch; fail loudly instead.
    bad = [k for k, v in texts.items() if len(out.get(k, [])) != len(v)]
    if bad:
        raise RuntimeError(f"PTB tokenizer output does not line up with its input for ids {bad[:10]}")
    return out


def _prepare(
    preds: Preds, refs: Refs, tokenize: bool
) -> tuple[list[Hashable], dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    ids = check_ids(preds, refs)
    gts = {k: ref_list(refs, k) for k in ids}
    res = {k: [pred_text(preds, k)] for k in ids}
    if tokenize:
        # One JVM start for both sides; the tuple tag keeps refs and preds apart.
        joined: dict[Hashable, list[str]] = {("ref", k): v for k, v in gts.items()}
        joined.update({("pred", k): v for k, v in res.items()})
        tok = _ptb_tokenize(joined)
        gts = {k: tok[("ref", k)] for k in ids}
        res = {k: tok[("pred", k)] for k in ids}
    else:
        gts = {k: [_one_line(t) for t in v] for k, v in gts.items()}
        res = {k: [_one_line(t) for t in v] for k, v in res.items()}
    return ids, gts, res


def _bleu_scores(gts, res):
    from pycocoevalcap.bleu.bleu import Bleu

    corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
    return [float(x) for x in corpus], [[float(x) for x in row] for row in per]


def _rouge_scores(gts, res):
    from pycocoevalcap.rouge.rouge import Rouge

    corpus, per = Rouge().compute_score(gts, res)
    return float(corpus), [float(x) for x in per]


def _cider_scores(gts, res):
    from pycocoevalcap.cider.cider import Cider

    corpus, per = Cider().compute_score(gts, res)
    return float(corpus), [float(x) for x in per]


def _meteor_scores(gts, res):
    from pycocoevalcap.meteor.meteor import Meteor

    _require_java("METEOR")
    # "|||" is the jar's field separator; pycocoevalcap strips it from the hypothesis
    # only, so a reference containing it would corrupt the protocol.
    gts = {k: [t.replace("|||", " ") for t in v] for k, v in gts.items()}
    res = {k: [t.replace("|||", " ") for t in v] for k, v in res.items()}
    scorer = Meteor()
    try:
        corpus, per = scorer.compute_score(gts, res)
    finally:
        del scorer  # Meteor.__del__ stops the JVM it started
    return float(corpus), [float(x) for x in per]


def bleu(preds: Preds, refs: Refs, *, tokenize: bool = True) -> dict[str, float]:
    """Corpus BLEU-1..4 as the COCO caption toolkit computes it.

    `preds` maps id -> generated text, `refs` maps id -> list of reference texts.
    Returns {"bleu_1", "bleu_2", "bleu_3", "bleu_4"} on the 0-1 scale: pycocoevalcap's
    `Bleu(4)` (corpus-level clipped n-gram precision, "closest" reference length for the
    brevity penalty) after PTB tokenisation (`tokenize=True`, needs Java).
    Agrees with: `pycocoevalcap.bleu.bleu.Bleu(4).compute_score`.
    """
    _, gts, res = _prepare(preds, refs, tokenize)
    corpus, _ = _bleu_scores(gts, res)
    return dict(zip(_BLEU_KEYS, corpus, strict=True))


def rouge_l(
    preds: Preds,
    refs: Refs,
    *,
    tokenize: bool = True,
    implementation: Literal["coco", "rouge-score"] = "coco",
) -> float:
    """Mean sentence-level ROUGE-L on the 0-1 scale.

    implementation="coco" (default, the captioning literature's number): pycocoevalcap's
    `Rouge` — LCS-based F-measure with beta=1.2 using the best precision and best recall
    over the references — after PTB tokenisation when `tokenize=True`.
    implementation="rouge-score": Google's rouge-score `RougeScorer(["rougeL"])` F-measure
    (beta=1, its own lowercase alphanumeric tokenizer, no stemming), best reference by
    F-measure (`score_multi`); `tokenize` is ignored. Some report-generation papers use
    this one.
    Agrees with: `pycocoevalcap.rouge.rouge.Rouge().compute_score` /
    `rouge_score.rouge_scorer.RougeScorer(["rougeL"]).score_multi`.
    """
    if implementation == "rouge-score":
        from rouge_score.rouge_scorer import RougeScorer

        ids = check_ids(preds, refs)
        scorer = RougeScorer(["rougeL"])
        scores = [scorer.score_multi(ref_list(refs, k), pred_text(preds, k))["rougeL"].fmeasure for k in ids]
        return float(sum(scores) / len(scores))
    if implementation != "coco":
        raise ValueError(f"unknown ROUGE-L implementation {implementation!r}; use 'coco' or 'rouge-score'")
    _, gts, res = _prepare(preds, refs, tokenize)
    return _rouge_scores(gts, res)[0]


def meteor(preds: Preds, refs: Refs, *, tokenize: bool = True) -> float:
    """Corpus METEOR 1.5 (0-1) through pycocoevalcap's `Meteor` (the Java jar, English,
    `-norm`), after PTB tokenisation when `tokenize=True`.

    Raises `JavaNotFoundError` when no `java` is on PATH. Starts one JVM per call
    (~7 s: the jar loads its paraphrase table), so score a whole corpus at once.
    Agrees with: `pycocoevalcap.meteor.meteor.Meteor().compute_score`.
    """
    _require_java("METEOR")
    _, gts, res = _prepare(preds, refs, tokenize)
    return _meteor_scores(gts, res)[0]


def cider(preds: Preds, refs: Refs, *, tokenize: bool = True) -> float:
    """Corpus CIDEr-D as the COCO caption toolkit gives it (pycocoevalcap `Cider`:
    n=1..4, sigma=6 length penalty, clipped counts, x10 scale — so not 0-1; the papers
    report it x100 again, e.g. "179.9").

    Document frequencies (IDF) come from the references of the evaluated corpus itself,
    so the value depends on the whole set: a single-sample corpus always scores 0
    (every n-gram has IDF log(1/1)). Score the full test split at once.
    Agrees with: `pycocoevalcap.cider.cider.Cider().compute_score`.
    """
    _, gts, res = _prepare(preds, refs, tokenize)
    return _cider_scores(gts, res)[0]


@dataclass(frozen=True)
class CaptionScores:
    """Corpus scores plus each sample's own score from the same toolkit run."""

    corpus: dict[str, float]
    per_sample: dict[Hashable, dict[str, float]] = field(default_factory=dict)


def caption_metrics(preds: Preds, refs: Refs, *, tokenize: bool = True, include_meteor: bool = True) -> CaptionScores:
    """BLEU-1..4, ROUGE-L (coco), CIDEr and optionally METEOR in one pass: the texts are
    tokenised once and one METEOR JVM is started, as `COCOEvalCap.evaluate` does.

    `corpus` holds the same numbers as `bleu`, `rouge_l`, `cider` and `meteor` on the
    same input; `per_sample` holds the toolkit's per-id scores (sentence BLEU, ROUGE-L,
    CIDEr-D with the corpus IDF, METEOR). SPICE is out of scope (see the package docstring).
    """
    if include_meteor:
        _require_java("METEOR")
    ids, gts, res = _prepare(preds, refs, tokenize)
    per: dict[Hashable, dict[str, float]] = {k: {} for k in ids}
    corpus: dict[str, float] = {}

    b_corpus, b_per = _bleu_scores(gts, res)
    for n, key in enumerate(_BLEU_KEYS):
        corpus[key] = b_corpus[n]
        for k, v in zip(ids, b_per[n], strict=True):
            per[k][key] = v
    parts = [("rouge_l", _rouge_scores), ("cider", _cider_scores)]
    if include_meteor:
        parts.append(("meteor", _meteor_scores))
    for key, fn in parts:
        corpus[key], values = fn(gts, res)
        for k, v in zip(ids, values, strict=True):
            per[k][key] = v
    return CaptionScores(corpus=corpus, per_sample=per)
