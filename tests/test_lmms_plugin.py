"""The lmms-eval model (dragonfly/lmms_plugin.py), driven through lmms-eval's own interface.

lmms-eval's stack is heavy (torchvision, wandb, opencv...) and optional, so the test installs
only `lmms-eval==0.7.3` and `loguru` with `--no-deps` into a folder of its own, like `make
sky`, and runs there: lmms-eval's registry must find `dragonfly` through our entry point,
and two requests of each kind go through `generate_until` and `loglikelihood`, offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # real commands in subprocesses: not in `make test-fast`

DRIVER = r"""
import json, sys
import torch
from PIL import Image
from lmms_eval.api.instance import Instance
from lmms_eval.models import get_model

from dragonfly.eval.generate import generate_batch
from dragonfly.lmms_plugin import Dragonfly

model_dir, image_path = sys.argv[1], sys.argv[2]
cls = get_model("dragonfly")  # through the entry point, as `lmms-eval --model dragonfly` resolves it
lm = cls(pretrained=model_dir, batch_size=2)
image = Image.open(image_path)
docs = {0: {"image": image, "q": "What is shown?"}, 1: {"image": image.rotate(90), "q": "What colour is it?"}}
lm.task_dict = {"toy": {"test": docs}}
visual = lambda doc: [doc["image"]]
gen = {"until": ["\n\n"], "max_new_tokens": 5}
requests = [
    Instance("generate_until", (docs[i]["q"], dict(gen), visual, i, "toy", "test"), idx=0,
             metadata={"task": "toy", "doc_id": i, "repeats": 1})
    for i in (0, 1)
]
answers = lm.generate_until(requests)
direct = generate_batch(lm.model, lm.processor,
                        [[{"role": "user", "content": "<image>\n" + docs[i]["q"]}] for i in (0, 1)],
                        [[docs[0]["image"]], [docs[1]["image"]]], 5)
greedy_ids = lm.model.generate(**lm.processor(text=[lm.processor.build_prompt(
    [{"role": "user", "content": "<image>\n" + docs[0]["q"]}])], images=[image]), max_new_tokens=3, do_sample=False)
prompt_len = lm.processor(text=[lm.processor.build_prompt([{"role": "user", "content": "<image>\n" + docs[0]["q"]}])],
                          images=[image])["input_ids"].shape[1]
# The longest greedy prefix that survives decode -> encode (a byte-level token cut inside a
# UTF-8 character decodes to U+FFFD and would come back as other tokens).
tok = lm.processor.tokenizer
new = greedy_ids[0, prompt_len:].tolist()
greedy_text = next(t for k in range(len(new), 0, -1)
                   if tok.encode(t := tok.decode(new[:k]), add_special_tokens=False) == new[:k])
lls = lm.loglikelihood([
    Instance("loglikelihood", (docs[0]["q"], greedy_text, visual, 0, "toy", "test"), idx=0,
             metadata={"task": "toy", "doc_id": 0, "repeats": 1}),
    Instance("loglikelihood", (docs[0]["q"], lambda doc: " zebra crossing", visual, 0, "toy", "test"), idx=1,
             metadata={"task": "toy", "doc_id": 0, "repeats": 1}),
])
# The greedy continuation's log-probability, from one forward written out here.
prompt = lm.processor.build_prompt([{"role": "user", "content": "<image>\n" + docs[0]["q"]}])
full = lm.processor(text=[prompt + greedy_text], images=[image])
with torch.no_grad():
    logp = lm.model(**full).logits[0].float().log_softmax(-1)
ids = full["input_ids"][0]
expected = float(sum(logp[i - 1, ids[i]] for i in range(prompt_len, len(ids))))
print(json.dumps({"class": f"{cls.__module__}.{cls.__name__}", "answers": answers, "direct": direct,
                  "lls": lls, "greedy": greedy_text, "expected": expected}))
"""


@pytest.fixture(scope="module")
def lmms_site(tmp_path_factory) -> Path:
    """lmms-eval and loguru alone, in a folder put on PYTHONPATH; skipped only without PyPI."""
    site = tmp_path_factory.mktemp("lmms-site")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
    done = subprocess.run([*cmd, "lmms-eval==0.7.3", "loguru==0.7.3"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"pip cannot fetch lmms-eval==0.7.3 here: {done.stderr.strip()[-300:]}")
    return site


def test_lmms_eval_finds_dragonfly_and_answers_two_requests_of_each_kind(lmms_site, saved_tiny, retina, tmp_path):
    retina.resize((160, 120)).save(tmp_path / "q.png")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lmms_site), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, str(saved_tiny), str(tmp_path / "q.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["class"] == "dragonfly.lmms_plugin.Dragonfly"
    assert result["answers"] == [a.split("\n\n", 1)[0].strip() for a in result["direct"]]  # batched as our own
    (greedy_lp, greedy_hit), (other_lp, other_hit) = result["lls"]
    assert greedy_hit is True and other_hit is False  # the continuation greedy decoding gives, and one it does not
    assert greedy_lp <= 0.0 and other_lp < greedy_lp
    assert abs(greedy_lp - result["expected"]) < 1e-4  # every continuation token, no more, no fewer
