"""Tests for dragonfly.metrics against the reference implementations.

Caption metrics are compared with pycocoevalcap's scorers called directly here (and
rouge-score's RougeScorer); POPE, ChartQA, multiple choice, HallusionBench and the
LLaVA-Med metrics with small independent re-statements of the reference scripts
written in this file; the MM-Vet judge against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import threading
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from rouge_score.rouge_scorer import RougeScorer

from dragonfly import metrics as M
from dragonfly.metrics.judge import parse_judge_score

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java not on PATH")

# --- captions ------------------------------------------------------------------------

CAP_PREDS = {
    "punct": "A Dog, running on the GRASS!!",
    "empty": "",
    "multi": "two cats sleeping on a red sofa",
    "same": "a man riding a wave on top of a surfboard",
    "newline": "a plate of food\nwith broccoli.",
    "num": "45% of the lung is affected",
}
CAP_REFS = {
    "punct": ["a dog runs on the grass.", "A brown dog running across a lawn"],
    "empty": ["a bird sitting on a branch"],
    "multi": [
        "Two cats sleep on a red couch.",
        "two cats lying on a sofa",
        "cats asleep on the sofa",
    ],
    "same": ["a man riding a wave on top of a surfboard"],
    "newline": ["a plate of food with broccoli", "a dish with vegetables on it"],
    "num": ["about 45 % of the lung is affected", "nearly half the lung is affected"],
}


def _coco_tokenized(preds, refs):
    # What COCOEvalCap.evaluate does: tokenise gts and res separately.
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": r} for r in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": preds[k]}] for k in refs})
    return gts, res


@needs_java
@pytest.mark.integration  # Java METEOR and SPICE in subprocesses
def test_caption_metrics_match_pycocoevalcap():
    gts, res = _coco_tokenized(CAP_PREDS, CAP_REFS)
    ref_bleu, ref_bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
    ref_rouge, ref_rouge_per = Rouge().compute_score(gts, res)
    ref_cider, ref_cider_per = Cider().compute_score(gts, res)
    ref_meteor, ref_meteor_per = Meteor().compute_score(gts, res)

    got_bleu = M.bleu(CAP_PREDS, CAP_REFS)
    assert list(got_bleu) == ["bleu_1", "bleu_2", "bleu_3", "bleu_4"]
    assert list(got_bleu.values()) == pytest.approx(ref_bleu, abs=1e-12)
    assert M.rouge_l(CAP_PREDS, CAP_REFS) == pytest.approx(ref_rouge, abs=1e-12)
    assert M.cider(CAP_PREDS, CAP_REFS) == pytest.approx(ref_cider, abs=1e-12)
    assert M.meteor(CAP_PREDS, CAP_REFS) == pytest.approx(ref_meteor, abs=1e-9)

    both = M.caption_metrics(CAP_PREDS, CAP_REFS)
    assert both.corpus["cider"] == pytest.approx(ref_cider, abs=1e-12)
    assert both.corpus["meteor"] == pytest.approx(ref_meteor, abs=1e-9)
    assert both.corpus["rouge_l"] == pytest.approx(ref_rouge, abs=1e-12)
    for i, k in enumerate(gts):
        sample = both.per_sample[k]
        assert sample["bleu_4"] == pytest.approx(ref_bleu_per[3][i], abs=1e-12)
        assert sample["rouge_l"] == pytest.approx(ref_rouge_per[i], abs=1e-12)
        assert sample["cider"] == pytest.approx(ref_cider_per[i], abs=1e-12)
        assert sample["meteor"] == pytest.approx(ref_meteor_per[i], abs=1e-9)
    # Edge cases: the empty prediction scores 0 everywhere, the identical one tops out.
    assert all(v == 0.0 for v in both.per_sample["empty"].values())
    assert both.per_sample["same"]["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert both.per_sample["same"]["meteor"] == pytest.approx(1.0, abs=1e-6)
    assert both.per_sample["same"]["rouge_l"] == pytest.approx(1.0)
    # Case and punctuation are removed by the PTB tokenizer before scoring.
    assert gts["punct"][0] == "a dog runs on the grass"


def test_caption_metrics_without_tokenizer_match_pycocoevalcap():
    gts = {k: [" ".join(r.split()) for r in v] for k, v in CAP_REFS.items()}
    res = {k: [" ".join(CAP_PREDS[k].split())] for k in CAP_REFS}
    ref_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    ref_rouge, _ = Rouge().compute_score(gts, res)
    ref_cider, _ = Cider().compute_score(gts, res)
    got_bleu = M.bleu(CAP_PREDS, CAP_REFS, tokenize=False)
    assert list(got_bleu.values()) == pytest.approx(ref_bleu, abs=1e-12)
    assert M.rouge_l(CAP_PREDS, CAP_REFS, tokenize=False) == pytest.approx(ref_rouge, abs=1e-12)
    assert M.cider(CAP_PREDS, CAP_REFS, tokenize=False) == pytest.approx(ref_cider, abs=1e-12)
    both = M.caption_metrics(CAP_PREDS, CAP_REFS, tokenize=False, include_meteor=False)
    assert "meteor" not in both.corpus
    assert both.corpus["cider"] == pytest.approx(ref_cider, abs=1e-12)


def test_rouge_l_rouge_score_implementation():
    scorer = RougeScorer(["rougeL"])
    expected = [scorer.score_multi(CAP_REFS[k], CAP_PREDS[k])["rougeL"].fmeasure for k in CAP_REFS]
    got = M.rouge_l(CAP_PREDS, CAP_REFS, implementation="rouge-score")
    assert got == pytest.approx(sum(expected) / len(expected), abs=1e-12)
    with pytest.raises(ValueError, match="implementation"):
        M.rouge_l(CAP_PREDS, CAP_REFS, implementation="nope")  # type: ignore[arg-type]


def test_caption_properties():
    same = {
        "a": "a man riding a wave on a surfboard",
        "b": "two dogs play with a red ball in the park",
    }
    refs = {k: [v] for k, v in same.items()}
    b = M.bleu(same, refs, tokenize=False)
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in b.values())
    assert M.rouge_l(same, refs, tokenize=False) == pytest.approx(1.0)
    assert M.cider(same, refs, tokenize=False) > 0
    # CIDEr's IDF comes from the evaluated corpus: one sample alone always gets 0.
    assert M.cider({"a": same["a"]}, {"a": [same["a"]]}, tokenize=False) == 0.0
    # A bare string reference counts as one reference, not as a list of characters.
    assert M.rouge_l(same, dict(same), tokenize=False) == pytest.approx(1.0)


def test_java_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    for call in (
        lambda: M.meteor(CAP_PREDS, CAP_REFS, tokenize=False),
        lambda: M.bleu(CAP_PREDS, CAP_REFS),
        lambda: M.caption_metrics(CAP_PREDS, CAP_REFS, tokenize=False),
    ):
        with pytest.raises(M.JavaNotFoundError, match="java"):
            call()
    # Java-free paths keep working.
    assert M.cider(CAP_PREDS, CAP_REFS, tokenize=False) > 0


# --- id checks -----------------------------------------------------------------------

CORPUS_FUNCS = [
    lambda p, r: M.bleu(p, r, tokenize=False),
    lambda p, r: M.rouge_l(p, r, tokenize=False),
    lambda p, r: M.cider(p, r, tokenize=False),
    lambda p, r: M.meteor(p, r, tokenize=False),
    M.closed_accuracy,
    M.corpus_token_f1,
    M.relaxed_accuracy,
    M.pope,
    M.hallusionbench_accuracy,
    M.llava_med_closed_accuracy,
    M.llava_med_open_recall,
    lambda p, r: M.multiple_choice_accuracy(p, r, {}),
    lambda p, r: M.mmvet_score(p, r, {}, config=M.JudgeConfig("http://127.0.0.1:9", "m")),
]


@pytest.mark.parametrize("func", CORPUS_FUNCS)
def test_mismatched_ids_are_named(func):
    preds = {"q1": "yes", "q2": "no", "extra-pred": "yes"}
    refs = {"q1": ["yes"], "q2": ["no"], "lost-ref": ["no"]}
    with pytest.raises(M.IdMismatchError) as err:
        func(preds, refs)
    assert "'extra-pred'" in str(err.value) and "'lost-ref'" in str(err.value)
    with pytest.raises(ValueError, match="no samples"):
        func({}, {})


# --- closed VQA / token F1 -------------------------------------------------------------


def _ref_norm(text):
    # SQuAD v1.1 normalize_answer, re-stated.
    text = "".join(ch for ch in text.lower() if ch not in set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _ref_closed(pred, refs):
    fold = {
        "yeah": "yes",
        "yep": "yes",
        "yup": "yes",
        "true": "yes",
        "nope": "no",
        "nah": "no",
        "false": "no",
    }
    p = _ref_norm(pred)
    p = fold.get(p, p)
    return any(p == fold.get(_ref_norm(r), _ref_norm(r)) for r in refs)


CLOSED = {
    "dot": ("Yes.", ["yes"]),
    "yeah": ("Yeah", ["yes"]),
    "true": ("TRUE", ["yes"]),
    "nope": ("nope!", ["No"]),
    "false-ref": ("no", ["false"]),
    "long": ("Yes, there is a mass", ["yes"]),
    "article": ("The Liver", ["liver"]),
    "multi": ("right lobe", ["left lobe", "Right lobe."]),
    "empty": ("", ["no"]),
    "pct": ("45 %", ["45%"]),
    "wrong": ("yes", ["no"]),
    "inside": ("true vocal cord", ["yes"]),
}


def test_closed_accuracy_matches_restatement():
    preds = {k: v[0] for k, v in CLOSED.items()}
    refs = {k: v[1] for k, v in CLOSED.items()}
    expected = sum(_ref_closed(p, r) for p, r in CLOSED.values()) / len(CLOSED)
    assert M.closed_accuracy(preds, refs) == pytest.approx(expected)
    per = {k: M.closed_accuracy({k: p}, {k: r}) for k, (p, r) in CLOSED.items()}
    assert per == {
        "dot": 1, "yeah": 1, "true": 1, "nope": 1, "false-ref": 1, "long": 0, "article": 1,
        "multi": 1, "empty": 0, "pct": 1, "wrong": 0, "inside": 0,
    }  # fmt: skip


TOKEN_PAIRS = [
    ("left lung upper lobe", "upper lobe of left lung"),
    ("mass mass in liver", "liver mass"),
    ("ct scan", "mri"),
    ("axial plane", "axial"),
    ("x ray of chest", "chest x ray"),
]


def test_token_f1_agrees_with_rouge1():
    scorer = RougeScorer(["rouge1"])
    for pred, ref in TOKEN_PAIRS:
        r1 = scorer.score(ref, pred)["rouge1"]
        assert M.token_f1(pred, ref) == pytest.approx(r1.fmeasure)
        assert M.token_recall(pred, ref) == pytest.approx(r1.recall)


def test_token_f1_edges_and_corpus():
    assert M.token_f1("The Left Lung.", "left lung") == 1.0
    assert M.token_f1("", "") == 1.0
    assert M.token_f1("", "liver") == 0.0
    assert M.token_f1("liver", "") == 0.0
    assert M.token_f1("a", "the") == 1.0  # both normalise to nothing
    for text in ("right kidney", "Axial CT, with contrast!"):
        assert M.token_f1(text, text) == 1.0
    preds = {"1": "left lung", "2": "liver mass", "3": ""}
    refs = {"1": ["right lung", "left lung"], "2": ["mass"], "3": ["yes"]}
    got = M.corpus_token_f1(preds, refs)
    assert got["f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert got["precision"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert got["recall"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)


# --- LLaVA-Med re-statement (run_eval_batch.py + glossary.normalize_word) -------------


def _lm_normalize_word(token):
    punct = [
        ";",
        r"/",
        "[",
        "]",
        '"',
        "{",
        "}",
        "(",
        ")",
        "=",
        "+",
        "\\",
        "_",
        "-",
        ">",
        "<",
        "@",
        "`",
        ",",
        "?",
        "!",
    ]
    work = token
    for p in punct:
        if (p + " " in token or " " + p in token) or re.search(r"(\d)(\,)(\d)", token) is not None:
            work = work.replace(p, "")
        else:
            work = work.replace(p, " ")
    token = re.sub(r"(?!<=\d)(\.)(?!\d)", "", work, count=32)
    numbers = dict(zip(["none", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
                       ["0", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"], strict=True))  # fmt: skip
    kept = [numbers.get(w, w) for w in token.lower().split()]
    return " ".join(w for w in kept if w not in ("a", "an", "the")).replace(",", "")


def _lm_counts(sentence):
    words = defaultdict(int)
    for w in sentence.lower().strip().split():
        words[w] += 1
    return words


def _lm_recall(candidate, reference):
    cand = _lm_counts(_lm_normalize_word(candidate))
    ref = _lm_counts(_lm_normalize_word(reference))
    tp = fn = 0
    for w in set(cand) | set(ref):
        if w in cand and w in ref:
            tp += cand[w]
        elif w in ref:
            fn += ref[w]
    if not cand or not ref or tp == 0:
        return 0.0
    return tp / (tp + fn)


LLAVA_MED_CLOSED = {
    "plain": ("Yes", "yes"),
    "sentence": ("No, there is no fracture.", "no"),
    "not": ("It is not visible", "no"),  # quirk: "no" inside "not"
    "normal": ("The study is normal", "no"),  # quirk: "no" inside "normal"
    "both": ("yes and no", "yes"),
    "miss": ("yes", "no"),
    "empty": ("", "yes"),
    "case": ("YES.", "Yes"),
}
LLAVA_MED_OPEN = {
    "exact": ("left lung", "left lung"),
    "partial": ("the lung", "left lung"),
    "repeat": ("lung lung", "lung nodule"),  # quirk: prediction multiplicity
    "punct": ("Right-kidney (lower pole).", "right kidney"),
    "numbers": ("two lesions", "2 lesions"),
    "comma-num": ("1,000 cells", "1000 cells"),
    "empty": ("", "liver"),
    "miss": ("spleen", "liver"),
}


def test_llava_med_closed_matches_restatement():
    preds = {k: v[0] for k, v in LLAVA_MED_CLOSED.items()}
    refs = {k: [v[1]] for k, v in LLAVA_MED_CLOSED.items()}
    hits = [
        _lm_normalize_word(gt.lower()) in _lm_normalize_word(pred.lower()) for pred, gt in LLAVA_MED_CLOSED.values()
    ]
    assert M.llava_med_closed_accuracy(preds, refs) == pytest.approx(sum(hits) / len(hits))
    assert hits == [True, True, True, True, True, False, False, True]
    # The strict metric disagrees exactly on the quirks.
    assert M.closed_accuracy({"n": "It is not visible"}, {"n": ["no"]}) == 0.0


def test_llava_med_open_recall_matches_restatement():
    preds = {k: v[0] for k, v in LLAVA_MED_OPEN.items()}
    refs = {k: [v[1]] for k, v in LLAVA_MED_OPEN.items()}
    per = [_lm_recall(_lm_normalize_word(p.lower()), _lm_normalize_word(g.lower())) for p, g in LLAVA_MED_OPEN.values()]
    assert M.llava_med_open_recall(preds, refs) == pytest.approx(sum(per) / len(per))
    assert per[2] == pytest.approx(2 / 3)
    for text in ("Yes, it is (the) left-lung. 1,000 cells", "a/b test; x_y", "see fig. 3.5 now."):
        assert M.llava_med_normalize(text.lower()) == _lm_normalize_word(text.lower())
    with pytest.raises(ValueError, match="exactly one reference"):
        M.llava_med_open_recall({"a": "x"}, {"a": ["x", "y"]})


# --- multiple choice (MMMU parse_multi_choice_response re-statement) --------------------


def _ref_mmmu_parse(response, options):
    letters = [chr(ord("A") + i) for i in range(len(options))]
    for ch in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(ch)
    response = " " + response + " "
    cands, brack, index_ans = [], False, True
    for c in letters:
        if f"({c})" in response:
            cands.append(c)
            brack = True
    if not cands:
        cands = [c for c in letters if f"{c} " in response]
    if not cands:
        cands = [c for c in letters if f"{c}." in response]
    if not cands and len(response.split()) > 5:
        for c, ans in zip(letters, options, strict=True):
            if ans.lower() in response.lower():
                cands.append(c)
                index_ans = False
    if not cands:
        return None
    if len(cands) == 1:
        return cands[0]
    if index_ans:
        starts = [response.rfind(f"({c})") if brack else response.rfind(f" {c} ") for c in cands]
    else:
        starts = [response.lower().rfind(options[letters.index(c)].lower()) for c in cands]
    best = max(starts)
    return cands[starts.index(best)]


MC_OPTIONS = ["dog", "cat", "bird", "fish"]
MC_RESPONSES = {
    "paren": "The answer is (B).",
    "bare": "B",
    "lower-paren": "b) cat",
    "text": "cat",
    "text-case": "Cat.",
    "lower": "b",
    "answer-is": "the answer is c.",
    "dot": "C. bird",
    "long-text": "Looking at the picture closely I would say it shows a fish swimming",
    "two-brackets": "Not (A), I think (C) is right",
    "two-letters": "A or D",
    "article": "A cat sits on the mat",
    "nothing": "I am not sure",
    "empty": "",
}


def test_mmmu_parser_matches_restatement():
    for key, text in MC_RESPONSES.items():
        assert M.mmmu_parse_choice(text, MC_OPTIONS) == _ref_mmmu_parse(text, MC_OPTIONS), key
    rng_a, rng_b = random.Random(0), random.Random(0)
    assert M.mmmu_parse_choice("no idea", MC_OPTIONS, rng=rng_a) == rng_b.choice(["A", "B", "C", "D"])


def test_parse_choice_extensions():
    got = {k: M.parse_choice(v, MC_OPTIONS) for k, v in MC_RESPONSES.items()}
    assert got == {
        "paren": "B", "bare": "B", "lower-paren": "B", "text": "B", "text-case": "B", "lower": "B",
        "answer-is": "C", "dot": "C", "long-text": "D", "two-brackets": "C", "two-letters": "D",
        "article": "A", "nothing": None, "empty": None,
    }  # fmt: skip
    # Wherever MMMU's parser answers, ours gives the same letter.
    for text in MC_RESPONSES.values():
        mmmu = _ref_mmmu_parse(text, MC_OPTIONS)
        if mmmu is not None:
            assert M.parse_choice(text, MC_OPTIONS) == mmmu
    assert M.parse_choice("the answer is a cat", MC_OPTIONS) == "B"


def test_multiple_choice_accuracy():
    preds = {k: v for k, v in MC_RESPONSES.items()}
    gold = {k: ["B"] for k in preds}
    options = {k: MC_OPTIONS for k in preds}
    ours = [M.parse_choice(t, MC_OPTIONS) == "B" for t in preds.values()]
    mmmu = [_ref_mmmu_parse(t, MC_OPTIONS) == "B" for t in preds.values()]
    assert M.multiple_choice_accuracy(preds, gold, options) == pytest.approx(sum(ours) / len(ours))
    assert M.multiple_choice_accuracy(preds, gold, options, parser="mmmu") == pytest.approx(sum(mmmu) / len(mmmu))
    with pytest.raises(ValueError, match="option letters"):
        M.multiple_choice_accuracy({"x": "A"}, {"x": ["E"]}, {"x": MC_OPTIONS})
    with pytest.raises(ValueError, match="no options"):
        M.multiple_choice_accuracy({"x": "A"}, {"x": ["A"]}, {})


# --- ChartQA (lmms-eval relaxed_correctness re-statement) ------------------------------


def _ref_relaxed(prediction, target, max_relative_change=0.05):
    def to_float(text):
        try:
            return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            return None

    p, t = to_float(prediction), to_float(target)
    if p is not None and t:
        return abs(p - t) / abs(t) <= max_relative_change
    return prediction.lower() == target.lower()


CHART = {
    "close": ("12.3", "12"),
    "far": ("13", "12"),
    "pct-both": ("45%", "46%"),
    "pct-vs-frac": ("45%", "0.45"),
    "pct-vs-plain": ("45%", "45"),
    "case": ("Yes", "yes"),
    "text-miss": ("Blue", "Red"),
    "zero": ("0.0", "0"),
    "comma": ("1,000", "1000"),
    "empty": ("", "5"),
    "negative": ("-10.4", "-10"),
    "space": (" 12", "12"),
}


def test_relaxed_accuracy_matches_lmms_eval_restatement():
    preds = {k: v[0] for k, v in CHART.items()}
    refs = {k: [v[1]] for k, v in CHART.items()}
    expected = [_ref_relaxed(p, t) for p, t in CHART.values()]
    assert M.relaxed_accuracy(preds, refs) == pytest.approx(sum(expected) / len(expected))
    for key, (p, t) in CHART.items():
        assert M.relaxed_correctness(p, t) == _ref_relaxed(p, t), key
    assert not M.relaxed_correctness("1,000", "1000")
    assert M.relaxed_correctness("1,000", "1000", thousands_separators=True)
    assert M.relaxed_correctness("1,234.5%", "12.3", thousands_separators=True)
    # Several references: any one suffices.
    assert M.relaxed_accuracy({"a": "blue"}, {"a": ["Red", "Blue"]}) == 1.0


# --- POPE (lmms-eval pope utils re-statement) ----------------------------------------------


def _ref_pope_lmms(preds, labels):
    rows = [(p.lower().strip(), g.lower().strip()) for p, g in zip(preds, labels, strict=True)]
    acc = sum(p == g for p, g in rows) / len(rows)
    tp = sum(p == "yes" and g == "yes" for p, g in rows)
    fp = sum(p == "yes" and g == "no" for p, g in rows)
    fn = sum(p == "no" and g == "yes" for p, g in rows)
    prec = tp / (tp + fp) if tp + fp > 0 else 0
    rec = tp / (tp + fn) if tp + fn > 0 else 0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0
    yes = sum(g == "yes" for _, g in rows) / len(rows)
    return {"accuracy": acc, "precision": prec, "recall": rec, "f1": f1, "yes_ratio": yes}


def _ref_pope_llava(text):
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


POPE_ROWS = [
    ("Yes", "yes"),
    (" no ", "no"),
    ("yes", "no"),
    ("Yes.", "yes"),
    ("", "yes"),
    ("yes, there is a dog", "yes"),
    ("No", "yes"),
    ("NO", "no"),
    ("There is not a cat.", "no"),
    ("yes", "yes"),
]


def test_pope_matches_lmms_eval_restatement():
    preds = {f"q{i}": p for i, (p, _) in enumerate(POPE_ROWS)}
    refs = {f"q{i}": [g] for i, (_, g) in enumerate(POPE_ROWS)}
    got = M.pope(preds, refs)
    expected = _ref_pope_lmms([p for p, _ in POPE_ROWS], [g for _, g in POPE_ROWS])
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    parsed = [M.pope_parse(p) for p, _ in POPE_ROWS]
    assert got["pred_yes_ratio"] == pytest.approx(parsed.count("yes") / len(parsed))


def test_pope_llava_parser_matches_restatement():
    for text, _ in POPE_ROWS:
        assert M.pope_parse(text, "llava") == _ref_pope_llava(text), text
    preds = {f"q{i}": p for i, (p, _) in enumerate(POPE_ROWS)}
    refs = {f"q{i}": [g] for i, (_, g) in enumerate(POPE_ROWS)}
    labels = [_ref_pope_llava(p) for p, _ in POPE_ROWS]
    expected = _ref_pope_lmms(labels, [g for _, g in POPE_ROWS])
    got = M.pope(preds, refs, parser="llava")
    assert got["f1"] == pytest.approx(expected["f1"])
    assert got["accuracy"] == pytest.approx(expected["accuracy"])
    assert got["pred_yes_ratio"] == pytest.approx(labels.count("yes") / len(labels))
    with pytest.raises(ValueError, match="yes/no"):
        M.pope({"a": "yes"}, {"a": ["maybe"]})


def test_pope_perfect_and_degenerate():
    perfect = M.pope({"a": "yes", "b": "no"}, {"a": "yes", "b": "no"})
    assert perfect == {
        "f1": 1.0, "accuracy": 1.0, "precision": 1.0, "recall": 1.0, "yes_ratio": 0.5, "pred_yes_ratio": 0.5,
    }  # fmt: skip
    never_yes = M.pope({"a": "no", "b": "no"}, {"a": "yes", "b": "no"})
    assert never_yes["f1"] == 0.0 and never_yes["precision"] == 0.0


# --- HallusionBench (lmms-eval hb_aggregation_result_intern re-statement) -----------------


def test_hallusionbench_matches_restatement():
    rows = [
        ("Yes, it is.", "1"),
        ("No.", "0"),
        ("yes", "0"),
        ("I see two eyes", "0"),
        ("", "1"),
        ("NO", "no"),
    ]
    expected = sum(("1" if p.lower().find("yes") != -1 else "0") == {"no": "0"}.get(g, g) for p, g in rows)
    preds = {i: p for i, (p, _) in enumerate(rows)}
    refs = {i: [g] for i, (_, g) in enumerate(rows)}
    assert M.hallusionbench_accuracy(preds, refs) == pytest.approx(expected / len(rows))


# --- MM-Vet judge against a real local HTTP endpoint --------------------------------------

JUDGE_REPLIES = {
    "Q-right": ["1.0"],
    "Q-partial": ["0.4 because half"],
    "Q-retry": ["I think it is fine", "0.5"],
    "Q-never": ["n/a"] * 10,
}


class _JudgeHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 — name fixed by http.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if server.status != 200:
            self.send_response(server.status)
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        row = next(line for line in reversed(prompt.split("\n")) if line.startswith("Q-"))
        qid = row.split(" | ")[0]
        turn = server.turns[qid]
        server.turns[qid] += 1
        reply = JUDGE_REPLIES[qid][min(turn, len(JUDGE_REPLIES[qid]) - 1)]
        data = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                        "finish_reason": "stop"}]}).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeHandler)
    server.requests, server.turns, server.status = [], Counter(), 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_mmvet_judge_against_local_endpoint(judge_server):
    base = f"http://127.0.0.1:{judge_server.server_port}/v1"
    config = M.judge_config_from_env(
        {
            "DRAGONFLY_JUDGE_BASE_URL": base,
            "DRAGONFLY_JUDGE_MODEL": "judge-1",
            "DRAGONFLY_JUDGE_API_KEY": "k-123",
        }
    )
    ids = list(JUDGE_REPLIES)
    preds = {k: f"prediction for {k}" for k in ids}
    refs = {k: ["red<AND>blue"] for k in ids}
    questions = {k: k for k in ids}
    got = M.mmvet_score(preds, refs, questions, config=config)
    assert got == {"score": pytest.approx((1.0 + 0.4 + 0.5 + 0.0) / 4), "n": 4.0, "unscored": 1.0}

    reqs = judge_server.requests
    assert len(reqs) == 1 + 1 + 2 + 5
    assert {r["path"] for r in reqs} == {"/v1/chat/completions"}
    assert {r["auth"] for r in reqs} == {"Bearer k-123"}
    assert {r["body"]["model"] for r in reqs} == {"judge-1"}
    first = reqs[0]["body"]["messages"][0]["content"]
    assert first.startswith("Compare the ground truth and prediction")
    assert first.endswith("\nQ-right | red <AND> blue | prediction for Q-right | ")
    never = [r["body"] for r in reqs if "Q-never |" in r["body"]["messages"][0]["content"]]
    assert [b["temperature"] for b in never] == [0.0, 0.0, 0.5, 1.0, 1.5]
    assert never[1]["messages"][0]["content"].endswith("Predict the correctness of the answer (digit): ")


def test_mmvet_judge_http_errors(judge_server):
    base = f"http://127.0.0.1:{judge_server.server_port}/v1"
    judge_server.status = 500
    config = M.JudgeConfig(base_url=base, model="m", http_retries=1, retry_wait_s=0.0)
    with pytest.raises(M.JudgeError, match="500"):
        M.mmvet_score({"a": "x"}, {"a": ["y"]}, {"a": "q"}, config=config)
    assert len(judge_server.requests) == 2
    judge_server.status = 401
    with pytest.raises(M.JudgeError, match="401"):
        M.mmvet_score({"a": "x"}, {"a": ["y"]}, {"a": "q"}, config=config)
    assert len(judge_server.requests) == 3  # client errors are not retried


def test_mmvet_without_judge_is_unavailable(monkeypatch):
    for name in ("DRAGONFLY_JUDGE_BASE_URL", "DRAGONFLY_JUDGE_MODEL", "DRAGONFLY_JUDGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(M.MetricUnavailable, match="DRAGONFLY_JUDGE_BASE_URL and DRAGONFLY_JUDGE_MODEL"):
        M.mmvet_score({"a": "x"}, {"a": ["y"]}, {"a": "q"})
    with pytest.raises(M.MetricUnavailable, match="DRAGONFLY_JUDGE_MODEL"):
        M.judge_config_from_env({"DRAGONFLY_JUDGE_BASE_URL": "http://127.0.0.1:1/v1"})


def test_parse_judge_score():
    assert parse_judge_score("0.7 because") == 0.7
    assert parse_judge_score("1.0") == 1.0
    assert parse_judge_score("1.5") is None
    assert parse_judge_score("Score: 0.5") is None
