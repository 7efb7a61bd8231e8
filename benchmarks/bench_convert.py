"""Peak memory and time of `dragonfly convert-released` against a plain loader.

A released-layout checkpoint of a mid-size model (Llama 1024 wide × 12 layers, 32k
vocabulary, a CLIP-B/32-shaped tower; ~0.3 B parameters, fp32) is written once. Then, each
in a fresh process so the peaks do not mix:

- **ours:** `dragonfly.released.convert` (the model on the meta device, the loaded tensors
  assigned, then saved);
- **peer:** a plain loader: build `DragonflyForCausalLM`'s parts with their random init (a
  `CLIPVisionModel`, a `LlamaForCausalLM`, the `nn.Linear`), then `torch.load` the state
  dict and `load_state_dict` it (`from_pretrained` without `low_cpu_mem_usage`).

Peak RSS is each child's own `getrusage(RUSAGE_SELF).ru_maxrss` at its end. Run:
`.venv/bin/python benchmarks/bench_convert.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_OURS = """
import sys
from dragonfly.released import convert
convert(sys.argv[1], sys.argv[2], vision=sys.argv[3])
"""

CHILD_PEER = """
import json, sys, torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
src, clip = sys.argv[1], sys.argv[3]
cfg = json.load(open(f"{src}/config.json"))
tower = CLIPVisionModel(CLIPVisionConfig.from_pretrained(clip))
llm = LlamaForCausalLM(LlamaConfig(**cfg["text_config"]))
proj = torch.nn.Linear(tower.config.hidden_size, cfg["hidden_size"])
state = torch.load(f"{src}/pytorch_model.bin", weights_only=True)
for prefix, module in (("image_encoder.", tower), ("language_model.", llm), ("vision_embed_tokens.", proj)):
    module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
"""


def write_checkpoint(root: Path) -> tuple[Path, Path, float]:
    import torch
    from transformers import AutoTokenizer, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    # The Llama-3-style tokenizer the released code saved with its tiny checkpoint (tests/fixtures).
    tokenizer = AutoTokenizer.from_pretrained(Path(__file__).resolve().parents[1] / "tests/fixtures/released/bin")
    tower = CLIPVisionModel(CLIPVisionConfig())  # CLIP ViT-B/32 vision shape
    clip = root / "clip"
    tower.save_pretrained(clip)
    text = LlamaConfig(
        vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16
    )
    llm = LlamaForCausalLM(text)
    proj = torch.nn.Linear(768, 1024)
    state = {f"image_encoder.{k}": v for k, v in tower.state_dict().items()}
    state |= {f"language_model.{k}": v for k, v in llm.state_dict().items()}
    state |= {f"vision_embed_tokens.{k}": v for k, v in proj.state_dict().items()}
    src = root / "released"
    src.mkdir()
    torch.save(state, src / "pytorch_model.bin")
    config = {"model_type": "dragonfly", "image_encoder": "openai/clip-vit-base-patch32"}
    config |= {"text_config": text.to_dict(), "hidden_size": 1024}
    (src / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(src)
    size = sum(t.numel() * t.element_size() for t in state.values()) / 2**30
    return src, clip, size


REPORT = "\nimport resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"


def peak(code: str, *args: str) -> tuple[float, float]:
    """(peak RSS in GiB, seconds) of `code` run in a fresh interpreter."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code + REPORT, *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    seconds = time.perf_counter() - start
    return int(done.stdout.split()[-1]) / 2**20, seconds


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, clip, size = write_checkpoint(Path(tmp))
        ours = peak(CHILD_OURS, str(src), str(Path(tmp) / "out"), str(clip))
        peer = peak(CHILD_PEER, str(src), "-", str(clip))
    print(f"checkpoint {size:.2f} GiB")
    print(f"ours: peak RSS {ours[0]:.2f} GiB ({ours[0] / size:.2f}x the checkpoint), {ours[1]:.1f} s (incl. saving)")
    print(f"peer: peak RSS {peer[0]:.2f} GiB ({peer[0] / size:.2f}x the checkpoint), {peer[1]:.1f} s (load only)")
    print(f"ratio (peer / ours, peak memory): {peer[0] / ours[0]:.2f}x")


if __name__ == "__main__":
    main()
