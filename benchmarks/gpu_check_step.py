"""One paper-shaped general2 step, timed part by part, beside the dry run's prediction
(benchmarks/gpu_check.py).

The trainer has no timing hooks, so the split is made here: forward hooks on the model's
parts record CUDA events (the host clock on a CPU) on the stream, and a gradient hook on
the projector's output marks where the backward pass leaves the LLM:

- data: the host's wait for the next micro-batch from the loader, then its copy to the GPU;
- vision: every call of the tower and the projector (base tiles, the high tiles scored
  without gradient, the kept ones encoded again);
- selection: the rest of the image path before the LLM (summaries, scores, top-k, gathers,
  separators, the token embedding and the scatter of the image features into it);
- LLM forward (with the loss), LLM backward (until the gradient reaches the image features;
  the token embedding's gradient may finish after it and then counts to vision), vision
  backward (the rest);
- optimiser: AdamW on fp32 master weights, the bf16 gradients cast in and the weights cast
  back out (what DeepSpeed's bf16 ZeRO-1 keeps on one GPU: 2 + 2 + 12 bytes a parameter).
"""

from __future__ import annotations

import time

import torch

from dragonfly.train import dryrun as D
from dragonfly.train.step import to_device

DATASHEET_BF16 = D.H100_BF16_FLOPS  # the H200 is the H100's chip at the same clocks: 989 dense bf16 TFLOP/s
MEASURED_BF16 = 790e12  # 8192³ bf16 products on random data, one H200 here (device KINDS.md, 2026-10/11)


class Clock:
    """Marks on the GPU stream (CUDA events) or on the host clock; milliseconds between two."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class StepProbe:
    """Forward hooks that mark each part's calls, and the gradient's arrival at the image path."""

    def __init__(self, model, clock: Clock):
        self.clock, self.handles = clock, []
        self.reset()
        self.handles.append(model.register_forward_pre_hook(lambda *_: setattr(self, "begin", clock.mark())))
        for name, module in (
            ("vision", model.vision_tower),
            ("vision", model.projector),
            ("llm", model.language_model),
        ):
            self.handles.append(module.register_forward_pre_hook(self._opener(name)))
            self.handles.append(module.register_forward_hook(self._closer(name, module is model.projector)))

    def reset(self) -> None:
        self.begin, self.open, self.spans, self.grad_at = None, {}, [], None

    def _opener(self, name: str):
        def hook(*_):
            self.open[name] = self.clock.mark()

        return hook

    def _closer(self, name: str, image_features: bool):
        def hook(_module, _inputs, output):
            self.spans.append((name, self.open.pop(name), self.clock.mark()))
            if image_features and output.requires_grad:
                output.register_hook(self._arrived)

        return hook

    def _arrived(self, grad):
        if self.grad_at is None:  # the first of the projector's outputs the backward reaches
            self.grad_at = self.clock.mark()
        return grad

    def split(self, backward: tuple, optimiser: tuple, copy: tuple) -> dict[str, float]:
        """Milliseconds per part of the step just run (after a sync)."""
        ms = self.clock.ms
        vision = sum(ms(a, b) for name, a, b in self.spans if name == "vision")
        llm_start, llm_end = next((a, b) for name, a, b in self.spans if name == "llm")
        return {
            "h2d": ms(*copy),
            "vision_forward": vision,
            "selection": ms(self.begin, llm_start) - vision,
            "llm_forward": ms(llm_start, llm_end),
            "llm_backward": ms(backward[0], self.grad_at),
            "vision_backward": ms(self.grad_at, backward[1]),
            "optimiser": ms(*optimiser),
        }

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


class MasterAdamW:
    """AdamW on fp32 master copies of bf16 parameters (fused on CUDA)."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, weight_decay: float):
        self.pairs = [(p, p.detach().float()) for p in params]
        fused = params[0].device.type == "cuda"
        self.inner = torch.optim.AdamW([m for _, m in self.pairs], lr=lr, weight_decay=weight_decay, fused=fused)

    def step(self) -> None:
        for p, master in self.pairs:
            if p.grad is not None:  # a parameter the step did not reach keeps its value, as in AdamW
                master.grad, p.grad = p.grad.float(), None
        self.inner.step()
        for p, master in self.pairs:
            p.data.copy_(master)
            master.grad = None

    def state_bytes(self) -> int:
        per = sum(m.numel() for _, m in self.pairs)
        return per * 4 * 3  # master weights and two moments, fp32


def one_step(model, batch: dict, optimiser: MasterAdamW, probe: StepProbe, clock: Clock, device) -> dict:
    """Forward, backward and optimiser on one micro-batch, split by part (ms)."""
    probe.reset()
    start = clock.mark()
    batch = to_device(batch, device)
    copied = clock.mark()
    loss = model(**batch).loss
    back = clock.mark()
    loss.backward()
    stepped = clock.mark()
    optimiser.step()
    done = clock.mark()
    clock.sync()
    split = probe.split((back, stepped), (stepped, done), (start, copied))
    return split | {"gpu_step": clock.ms(start, done), "loss": float(loss.detach())}


def timed_steps(model, loader, optimiser, device, warmup: int, steps: int) -> list[dict]:
    """`steps` timed micro-batch steps after `warmup`; each with its wait for data (ms)."""
    clock = Clock(device)
    probe = StepProbe(model, clock)
    batches, records = iter(loader), []
    try:
        for index in range(warmup + steps):
            began = time.perf_counter()
            batch = next(batches)
            waited = time.perf_counter() - began
            record = one_step(model, batch, optimiser, probe, clock, device)
            record |= {"data_wait": waited * 1e3, "wall": (time.perf_counter() - began) * 1e3}
            record["tokens"] = int(batch["attention_mask"].sum())
            if index >= warmup:
                records.append(record)
    finally:
        probe.close()
    return records


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float | None:
    """This GPU's bf16 product rate on random data (the ceiling METHOD.md asks for)."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    clock = Clock(device)
    start = clock.mark()
    for _ in range(repeats):
        a @ b
    end = clock.mark()
    clock.sync()
    return 2 * n**3 * repeats / (clock.ms(start, end) / 1e3) / 1e12


def summarise(records: list[dict]) -> dict[str, float]:
    """Mean of each timed quantity over the steps; the data wait's worst too."""
    keys = [k for k in records[0] if k != "loss"]
    out = {k: sum(r[k] for r in records) / len(records) for k in keys}
    out["data_wait_max"] = max(r["data_wait"] for r in records)
    return out


def predicted(model, micro: int, length: int, mfu: float, parts: set[str]) -> dict:
    """The dry run's figures for this model and micro-batch on one GPU (no checkpointing)."""
    shapes = D.Shapes.of(model.config)
    flops = D.step_flops(shapes, parts, [[(length, 1)] * micro])
    weights, attention = D.llm_flops(shapes, length)
    memory = D.memory_per_gpu(D.parameters(model), parts, 1, shapes, micro, length, False)
    seconds = D.stage_hours(flops, 1, 1, mfu) * 3600
    return {
        "flops": flops,
        "llm_flops": micro * 3 * (weights + attention),  # forward + weight and input gradients
        "memory": memory,
        "memory_total": sum(memory.values()),
        "step_s": seconds,
        "tokens_per_s": micro * length / seconds,
        "assumed_mfu": mfu,
    }


def fitting_micro(model, device: torch.device, length: int, parts: set[str], candidates: tuple[int, ...]) -> list[int]:
    """Micro-batches to try, largest first: those the dry run says fit 85 % of the GPU."""
    if device.type != "cuda":
        return sorted(candidates, reverse=True)
    room = 0.85 * torch.cuda.get_device_properties(device).total_memory
    fits = [
        m for m in sorted(candidates, reverse=True) if predicted(model, m, length, 1.0, parts)["memory_total"] <= room
    ]
    return fits or [1]


def measured_memory(model, optimiser: MasterAdamW, device: torch.device) -> dict[str, float] | None:
    """Bytes: the peak since the last reset, and what of it is weights, gradients, optimiser."""
    if device.type != "cuda":
        return None
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p, _ in optimiser.pairs)
    peak = torch.cuda.max_memory_allocated(device)
    state = optimiser.state_bytes()
    return {
        "peak": float(peak),
        "reserved": float(torch.cuda.max_memory_reserved(device)),
        "weights": float(weights),
        "gradients": float(grads),
        "optimizer": float(state),
        "activations": float(peak - weights - grads - state),  # and the allocator's other blocks
    }


def mfu(flops: float, ms: float, matmul: float | None) -> dict[str, float | None]:
    rate = flops / (ms / 1e3)
    return {
        "datasheet": rate / DATASHEET_BF16,
        "measured_peak": rate / MEASURED_BF16,
        "this_run_matmul": rate / (matmul * 1e12) if matmul else None,
    }
