"""The training loop in pieces, as torchtitan splits it: a loop of optimiser steps
(:func:`train_step`), each a forward and backward per micro-batch
(:func:`forward_backward_step`) guarded against a non-finite loss, and the checkpoint
between steps (:func:`save_checkpoint`). What the loop advances is a
:class:`~dragonfly.train.train_state.TrainState`; what it works on, a built stage
(:class:`~dragonfly.train.trainer.Run`).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dragonfly.errors import DragonflyError
from dragonfly.files import append_jsonl
from dragonfly.model.constants import IGNORE_INDEX
from dragonfly.train import checkpoint, state
from dragonfly.train.console import StageReport
from dragonfly.train.preemption import Preempted, StopOnSigterm
from dragonfly.train.step import all_finite, apply_step, to_device, weights_finite
from dragonfly.train.train_state import TrainState

if TYPE_CHECKING:
    from dragonfly.train.trainer import Run


class TrainingError(DragonflyError):
    """A run that must stop (non-finite loss, empty labels); the message says why."""


def describe_batch(batch: dict, tokenizer, image_token_id: int) -> str:
    """The first example of a batch decoded: prompt with images collapsed, and the trained part."""
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    keep = batch["attention_mask"][0].bool()
    ids, labels = ids[keep], labels[keep]
    pieces, run = [], 0
    for tok in ids.tolist():
        if tok == image_token_id:
            run += 1
            continue
        if run:
            pieces.append(f"<image×{run}>")
            run = 0
        pieces.append(tokenizer.decode([tok]))
    trained = tokenizer.decode(ids[labels != IGNORE_INDEX])
    return f"input : {''.join(pieces)!r}\nlabels: {trained!r}"


def train_loop(run: Run, train_state: TrainState, report: StageReport) -> None:
    """Steps to the end of the stage, saving every save_every steps; on SIGTERM (every rank
    agreeing), save and raise Preempted."""
    stage = run.stage
    run.model.train()
    train_state.window.reset()
    with StopOnSigterm() as stop:  # the loader's workers start inside it (and ignore SIGTERM)
        batches = _micro_batches(run, train_state)
        while train_state.step < run.total:
            train_step(run, train_state, itertools.islice(batches, run.accum), report)
            step = train_state.step
            saved = step % stage.save_every == 0 or step == run.total
            if saved:
                save_checkpoint(run, train_state)
            if step < run.total and stop.agreed(run.accelerator):
                if not saved:
                    save_checkpoint(run, train_state)
                report.close()
                raise Preempted(
                    f"stage {stage.name}: stopped by SIGTERM after step {step}/{run.total}, saved as "
                    f"{run.ckpt_root / checkpoint.checkpoint_name(step)}; rerun with --resume to continue"
                )
    report.close()


def _micro_batches(run: Run, train_state: TrainState):
    """This rank's micro-batches from the state's step on; a fresh run shows its first one."""
    batches = iter(run.loader(train_state.step))
    if train_state.step > 0:
        return batches
    first = next(batches)
    shown = describe_batch(first, run.processor.tokenizer, run.image_token_id)
    run.console.print(f"[bold]first batch of {run.stage.name}[/]\n{shown}")
    return itertools.chain([first], batches)


def train_step(run: Run, train_state: TrainState, micro_batches, report: StageReport) -> None:
    """One optimiser step: its micro-batches forward and backward, the step, its log line."""
    seen = 0
    for batch in micro_batches:
        if not (batch["labels"] != IGNORE_INDEX).any(dim=1).all():
            raise TrainingError(
                f"stage {run.stage.name} step {train_state.step}: a sample in the batch has no trained tokens "
                "(all labels are -100); check the chat template and truncation"
            )
        batch = to_device(batch, run.accelerator.device)
        train_state.window.add(forward_backward_step(run, train_state, batch), batch)
        seen += 1
    # accelerate steps on its own count of micro-batches: a step of another count would be lost or merged.
    if seen != run.accum or not run.accelerator.sync_gradients:
        raise RuntimeError(f"step {train_state.step} had {seen} micro-batches, not accelerate's {run.accum}")
    grad_norm = apply_step(run.accelerator, run.model, run.optimizer, run.scheduler, run.params, run.stage.grad_clip)
    # The norm of all-reduced gradients is the same on every rank: no collective needed.
    train_state.stepped_finitely = math.isfinite(grad_norm)
    train_state.step += 1
    report.advance()
    if train_state.step % run.stage.log_every == 0 or train_state.step == run.total:
        _log_step(run, train_state, grad_norm, report)


def forward_backward_step(run: Run, train_state: TrainState, batch: dict) -> torch.Tensor:
    """One micro-batch's loss and gradients; a non-finite loss stops the run (:func:`_stop_on_non_finite`)."""
    accelerator = run.accelerator
    # accumulate: no gradient sync (DDP) and no engine step (DeepSpeed) but on a step's last micro-batch.
    with accelerator.accumulate(run.model):
        loss = run.model(**batch).loss
        if not all_finite(accelerator, loss):
            _stop_on_non_finite(run, train_state)
        accelerator.backward(loss)  # unscaled: accelerate or the engine divides by accum, once
    return loss.detach()


def _stop_on_non_finite(run: Run, train_state: TrainState) -> None:
    """The NaN guard: save the current weights when a finite step of this run made them and
    they are finite, then stop; otherwise stop naming the checkpoint to go back to."""
    stage, step = run.stage, train_state.step
    if train_state.stepped_finitely and all_finite(run.accelerator, weights_finite(run.model)):
        save_checkpoint(run, train_state)
        raise TrainingError(
            f"stage {stage.name}: non-finite loss at step {step}; saved the last good "
            f"state as checkpoint {checkpoint.checkpoint_name(step)}"
        )
    raise TrainingError(
        _nothing_saved(stage.name, step, run.ckpt_root, train_state.resumed_from, train_state.failed_at_once)
    )


def _log_step(run: Run, train_state: TrainState, grad_norm: float, report: StageReport) -> None:
    """The window's record: on the console (every rank reduces it), in metrics.jsonl and MLflow (rank 0)."""
    step = train_state.step
    record = train_state.window.flush(run.accelerator, step, run.scheduler.get_last_lr()[0], grad_norm)
    report.record(record)
    if run.main:
        append_jsonl(run.metrics_path, record)
        if run.tracker is not None:
            run.tracker.log_metrics({k: v for k, v in record.items() if k != "step"}, step)


def save_checkpoint(run: Run, train_state: TrainState) -> None:
    """The checkpoint of the state's step; every rank calls it (DeepSpeed's save is
    collective), rank 0 alone writes the state record and commits."""
    root, step, accelerator = run.ckpt_root, train_state.step, run.accelerator
    with checkpoint.writing(root, step):
        tmp = root / (checkpoint.checkpoint_name(step) + ".tmp")
        if run.main:
            checkpoint.begin(root, step)
        accelerator.wait_for_everyone()
        hashes = state.save(tmp, accelerator, run.model, run.optimizer, run.scheduler)
        accelerator.wait_for_everyone()
        if run.main:
            record = train_state.record(run.stage, run.total, run.fingerprint)
            checkpoint.commit(tmp, record, run.stage.keep_last, hashes)
        accelerator.wait_for_everyone()


def _nothing_saved(stage: str, step: int, root: Path, resumed_from: Path | None, at_once: bool) -> str:
    """The NaN-guard message when no state of this run is known good: which checkpoint to use.
    ``at_once``: the run failed before its first step, so ``resumed_from`` itself is bad."""
    existing = [path for _, path in checkpoint.list_checkpoints(root)]
    message = (
        f"stage {stage}: non-finite loss at step {step}; nothing was saved (no step of this run "
        "ended with a finite loss, gradient norm and weights)"
    )
    if resumed_from is not None and at_once:
        before = [path for path in existing if path.name < resumed_from.name]
        message += f"; it resumed from {resumed_from}, which fails at once"
        if before:
            return message + f": go back to {before[-1]} (move {resumed_from.name} aside, then --resume)"
        return message + " and has no checkpoint before it: move it aside and train afresh"
    if existing:
        return message + f"; the newest checkpoint is {existing[-1]}: --resume continues from it"
    return message + "; there is no checkpoint: train afresh (a lower lr?)"
