"""The end of an optimiser step, the same on both engines, and the per-step bookkeeping.

The trainer runs every micro-batch inside ``accelerator.accumulate(model)`` (the Accelerator
knows the accumulation steps, ``make_accelerator``) and calls ``accelerator.backward`` on the
*unscaled* loss. The 1/accum scale is then applied exactly once: by accelerate on the plain
engine, by the DeepSpeed engine itself (its config's equal ``gradient_accumulation_steps``)
on DeepSpeed. ``accelerator.sync_gradients`` is true on the last micro-batch of a step only,
and that is when :func:`apply_step` runs:

- plain: clip the accumulated (DDP-averaged) gradients to ``grad_clip``, AdamW step, zero them.
- DeepSpeed: the engine did the same inside that last backward (ZeRO's clip factor is torch's,
  ``grad_clip / (norm + 1e-6)`` when below 1), so accelerate's optimiser wrappers are no-ops;
  the norm is read from the engine after its step.

Either way the logged ``grad_norm`` is the L2 norm, before clipping, of the averaged
accumulated gradient of the trainable parameters. docs/deepspeed.md has the whole story.
"""

from __future__ import annotations

import math
import resource
import time

import torch

from dragonfly.train.state import uses_deepspeed


def apply_step(accelerator, model, optimizer, scheduler, params, grad_clip: float) -> float:
    """Finish the step whose last backward just ran; returns its pre-clip gradient norm."""
    if uses_deepspeed(accelerator):
        norm = model.get_global_grad_norm()  # this step's: the engine stepped inside backward
    else:
        # grad_clip 0 means no clipping, as in DeepSpeed; the norm is still measured (a clip to inf).
        norm = accelerator.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    scheduler.step()  # ours on both engines (never handed to DeepSpeed), stepped once per optimiser step
    return math.nan if norm is None else float(norm)


def to_device(batch: dict, device) -> dict:
    """DDP moves a module's inputs to its device; DeepSpeed's engine does not."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def all_finite(accelerator, value: torch.Tensor) -> bool:
    """Every rank agrees, so no rank waits forever in a collective another has left."""
    value = torch.as_tensor(value).detach()
    flag = torch.tensor([float(torch.isfinite(value).all().item())], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() == accelerator.num_processes)


def weights_finite(model) -> torch.Tensor:
    """Checked only when a loss is non-finite (never per step): a full pass over the weights."""
    return torch.tensor(all(bool(torch.isfinite(p).all()) for p in model.parameters()))


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Window:
    """Loss, throughput and token counts accumulated between two log lines."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.losses, self.samples, self.tokens, self.start = [], 0, 0, time.perf_counter()

    def add(self, loss: torch.Tensor, batch: dict) -> None:
        self.losses.append(loss.float())
        self.samples += batch["input_ids"].shape[0]
        self.tokens += int(batch["attention_mask"].sum())

    def flush(self, accelerator, step: int, lr: float, grad_norm: float) -> dict:
        loss = accelerator.reduce(torch.stack(self.losses).mean(), reduction="mean")
        counts = accelerator.reduce(
            torch.tensor([self.samples, self.tokens], dtype=torch.float64, device=accelerator.device), reduction="sum"
        )
        seconds = max(time.perf_counter() - self.start, 1e-9)
        record = {
            "step": step,
            "loss": float(loss),
            "lr": lr,
            "grad_norm": grad_norm,
            "samples_per_s": float(counts[0]) / seconds,
            "tokens_per_s": float(counts[1]) / seconds,
            "peak_memory_mb": peak_memory_mb(),
        }
        self.reset()
        return record
