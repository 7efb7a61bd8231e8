"""Evaluation metrics for the Dragonfly benchmarks (paper Tables 1-4).

Conventions: corpus metrics take `preds` (id -> generated text) and `refs` (id -> list of
reference texts; a bare string counts as one reference). Both must hold exactly the same
ids — otherwise `IdMismatchError` names the ids. Results are plain floats or dicts of
floats on the 0-1 scale, except CIDEr, which is on the COCO toolkit's own scale.
The functions are pure: no global state, no caches, nothing read at import time.

| benchmark(s)                         | function(s)                                   | agrees with |
| ------------------------------------ | --------------------------------------------- | ----------- |
| COCO, IU X-Ray, PEIR Gross, ROCO, MIMIC-CXR | `bleu`, `rouge_l`, `meteor`, `cider`, `caption_metrics` | pycocoevalcap 1.2 (PTB tokenizer + scorers) |
| VQA-RAD, SLAKE, Path-VQA             | `closed_accuracy`, `token_f1`, `corpus_token_f1` | SQuAD normalisation; rouge-score ROUGE-1 |
| same, LLaVA-Med-comparable           | `llava_med_closed_accuracy`, `llava_med_open_recall` | LLaVA-Med run_eval_batch.py |
| AI2D, ScienceQA, MMMU                | `multiple_choice_accuracy`, `parse_choice`    | MMMU parse_multi_choice_response |
| ChartQA                              | `relaxed_accuracy`                            | lmms-eval relaxed_correctness |
| POPE                                 | `pope`                                        | lmms-eval pope utils |
| HallusionBench                       | `hallusionbench_accuracy`                     | lmms-eval (string-match aAcc) |
| MM-Vet                               | `mmvet_score`                                 | MM-Vet official evaluator, via an OpenAI-compatible judge |

Out of scope: SPICE. pycocoevalcap's SPICE needs Stanford CoreNLP models fetched from
the internet on first use, which fails on these offline machines, so it is not offered.

Java: METEOR and the PTB tokenizer (used by default by every caption metric, as the COCO
protocol does) run Java; `JavaNotFoundError` says so when `java` is not on PATH.
"""

from dragonfly.metrics._common import (
    IdMismatchError,
    JavaNotFoundError,
    MetricUnavailable,
    normalize_answer,
)
from dragonfly.metrics.benchmarks import (
    hallusionbench_accuracy,
    mmmu_parse_choice,
    multiple_choice_accuracy,
    parse_choice,
    pope,
    pope_parse,
    relaxed_accuracy,
    relaxed_correctness,
)
from dragonfly.metrics.captions import CaptionScores, bleu, caption_metrics, cider, meteor, rouge_l
from dragonfly.metrics.judge import (
    JudgeConfig,
    JudgeError,
    judge_config_from_env,
    mmvet_score,
)
from dragonfly.metrics.vqa import (
    closed_accuracy,
    corpus_token_f1,
    llava_med_closed_accuracy,
    llava_med_normalize,
    llava_med_open_recall,
    normalize_closed,
    token_f1,
    token_recall,
    vqa_accuracy,
)

__all__ = [
    "CaptionScores",
    "IdMismatchError",
    "JavaNotFoundError",
    "JudgeConfig",
    "JudgeError",
    "MetricUnavailable",
    "bleu",
    "caption_metrics",
    "cider",
    "closed_accuracy",
    "corpus_token_f1",
    "hallusionbench_accuracy",
    "judge_config_from_env",
    "llava_med_closed_accuracy",
    "llava_med_normalize",
    "llava_med_open_recall",
    "meteor",
    "mmmu_parse_choice",
    "mmvet_score",
    "multiple_choice_accuracy",
    "normalize_answer",
    "normalize_closed",
    "parse_choice",
    "pope",
    "pope_parse",
    "relaxed_accuracy",
    "relaxed_correctness",
    "rouge_l",
    "token_f1",
    "token_recall",
    "vqa_accuracy",
]
