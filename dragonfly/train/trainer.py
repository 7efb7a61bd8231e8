"""One trainer for every stage (general 1–2, Med 1–3), on accelerate (+ DeepSpeed ZeRO-1).

The loop is deliberately plain: micro-batches come from :class:`StepBatches` (a pure
function of seed and step, so resume needs no replay), gradients accumulate under
``accelerator.accumulate`` and synchronise on the last micro-batch (the same steps on the
plain and the DeepSpeed engine: :mod:`dragonfly.train.step`), and a checkpoint holds the
whole training state. Rank 0 alone writes checkpoints, logs and MLflow.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from rich.console import Console
from transformers import get_scheduler

from dragonfly.config import Profile
from dragonfly.errors import DragonflyError
from dragonfly.files import append_jsonl, atomic_dir, read_jsonl, write_jsonl
from dragonfly.fingerprint import record as record_fingerprint
from dragonfly.model.constants import IGNORE_INDEX
from dragonfly.train import checkpoint, state
from dragonfly.train.config import StageConfig, stage_dir
from dragonfly.train.console import StageReport, interactive
from dragonfly.train.data import Collator, ConversationDataset, StepBatches
from dragonfly.train.deepspeed import engine_of, make_accelerator
from dragonfly.train.parts import param_groups, set_trainable, start_model
from dragonfly.train.preemption import Preempted, StopOnSigterm, ignore_sigterm
from dragonfly.train.step import Window, all_finite, apply_step, to_device, weights_finite
from dragonfly.weights import hf_bars, unprobed

METRICS_FILE = "metrics.jsonl"  # one record per logged step, beside checkpoints/
TOO_LONG_FILE = "too_long.jsonl"  # the samples a stage leaves out as longer than data.max_length


class TrainingError(DragonflyError):
    """A run that must stop (non-finite loss, empty labels); the message says why."""


def _total_steps(stage: StageConfig, num_samples: int) -> int:
    per_epoch = num_samples // stage.global_batch
    steps = int(per_epoch * stage.epochs)
    return min(steps, stage.max_steps) if stage.max_steps > 0 else steps


def epochs_cap(stage: StageConfig, num_samples: int) -> str | None:
    """The line saying that ``epochs`` stops the stage before ``max_steps`` (silent otherwise:
    a user who asked for 1,200 steps and got 480 should not have to work out why)."""
    total = _total_steps(stage, num_samples)
    if stage.max_steps > 0 and total < stage.max_steps:
        return (
            f"note: {stage.name} runs {total} steps, not max_steps={stage.max_steps}: epochs={stage.epochs:g} of "
            f"{num_samples} samples at global_batch {stage.global_batch} ends it first (raise epochs to train longer)"
        )
    return None


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


# Keys a resumed run may change: bookkeeping, and how a step is split (the same global
# batch gives the same update; tested equal to 4e-8 across 1 and 2 processes). Not
# ``engine``: the two engines write checkpoints the other cannot read.
RESUME_SAFE = frozenset(
    {
        "save_every",
        "keep_last",
        "log_every",
        "num_workers",
        "log_model_artifact",
        "micro_batch",
        "gradient_checkpointing",
        "zero_stage",
    }
)


def resume_conflicts(saved: dict | None, stage: StageConfig) -> list[str]:
    """Config keys whose value differs from the checkpoint's (and that change the run)."""
    if saved is None:  # a checkpoint written before configs were recorded
        return []
    current, default = dataclasses.asdict(stage), dataclasses.asdict(StageConfig())
    # A key newer than the checkpoint (e.g. engine) ran at its default there.
    before = {key: saved.get(key, default[key]) for key in current}
    return sorted(
        f"{key}: {before[key]!r} → {current[key]!r}"
        for key in current
        if key not in RESUME_SAFE and before[key] != current[key]
    )


def train_stage(
    profile: Profile,
    stage: StageConfig,
    data_root: str | Path,
    dataset_dir: str | Path,
    out_dir: str | Path | None = None,
    resume: bool = False,
    tracker_factory=None,
    fingerprint: str | None = None,
    progress: bool = True,
) -> Path:
    """Run one stage; returns the directory of its saved model (``<out>/final``). Rank 0
    records ``fingerprint`` beside it last, so only a finished stage is ever skipped.
    ``progress``: a progress bar when the output is a terminal (never in a redirected log);
    False: plain log lines only, on a terminal too."""
    began = time.perf_counter()
    out = Path(out_dir) if out_dir else stage_dir(profile, stage.name)
    ckpt_root = out / "checkpoints"
    accelerator = make_accelerator(stage)
    main = accelerator.is_main_process
    # soft_wrap: a redirected log keeps long lines whole instead of rich's 80-column wrapping.
    console = Console(quiet=not main, soft_wrap=True)
    torch.manual_seed(stage.seed)

    model, processor = start_model(profile, stage, dataset_dir)
    if stage.data.max_length <= model.config.image_seq_length:  # at start, not at the first batch
        raise TrainingError(
            f"stage {stage.name}: data.max_length {stage.data.max_length} leaves no room for text beside one "
            f"image, which takes {model.config.image_seq_length} positions; raise data.max_length"
        )
    trainable = set_trainable(model, stage.train)
    if stage.gradient_checkpointing:
        model.language_model.activation_checkpointing_enable()
    dataset = ConversationDataset.from_mixture(
        dataset_dir, stage.data.split, data_root, processor, stage.data.max_length
    )
    dataset, too_long = dataset.without_too_long()
    if main and not too_long:
        (out / TOO_LONG_FILE).unlink(missing_ok=True)  # an earlier configuration's list
    if too_long:
        if main:
            write_jsonl(out / TOO_LONG_FILE, too_long)
        console.print(
            f"{len(too_long)} sample(s) longer than data.max_length {stage.data.max_length} (up to "
            f"{max(r['length'] for r in too_long)} positions) left out, listed in {out / TOO_LONG_FILE}"
        )
    total = _total_steps(stage, len(dataset))
    if total <= 0:
        left_out = (
            f" ({len(too_long)} left out as longer than data.max_length, {out / TOO_LONG_FILE})" if too_long else ""
        )
        raise TrainingError(
            f"stage {stage.name}: {len(dataset)} samples{left_out} give no optimiser step at global_batch "
            f"{stage.global_batch}"
        )
    if note := epochs_cap(stage, len(dataset)):
        console.print(note)
    optimizer = torch.optim.AdamW(param_groups(trainable, stage), lr=stage.lr, betas=(0.9, 0.999))
    scheduler = get_scheduler(
        stage.schedule, optimizer, num_warmup_steps=int(stage.warmup_ratio * total), num_training_steps=total
    )
    image_token_id = model.config.image_token_id
    model, optimizer = accelerator.prepare(model, optimizer)

    start_step, run_id = 0, None
    found = _agreed_resume_point(accelerator, ckpt_root, console.print) if resume else None
    if found is not None:
        saved = checkpoint.read_state(found)
        if conflicts := resume_conflicts(saved.get("config"), stage):
            raise TrainingError(
                f"stage {stage.name}: cannot resume {found} with a different configuration "
                f"({'; '.join(conflicts)}); restore those values, or train into a fresh --out "
                f"(or delete {ckpt_root})"
            )
        if fingerprint is not None and saved.get("fingerprint") not in (None, fingerprint):
            # The same stage config (checked above), other inputs (a retrained previous stage, a rebuilt mixture):
            # continuing would mix two runs into one model.
            raise TrainingError(
                f"stage {stage.name}: cannot resume {found}: it was trained from other inputs "
                f"(fingerprint {saved['fingerprint'][:12]} vs {fingerprint[:12]}); train into a "
                f"fresh --out (or delete {ckpt_root})"
            )
        state.load(found, accelerator, model, optimizer, scheduler, console.print)
        start_step, run_id = saved["step"], saved.get("mlflow_run_id")
        console.print(f"[cyan]resumed[/] {stage.name} from {found} at step {start_step}/{total}")
    metrics_path = out / METRICS_FILE
    if main:
        out.mkdir(parents=True, exist_ok=True)
        old = read_jsonl(metrics_path) if metrics_path.is_file() else []
        write_jsonl(metrics_path, [r for r in old if r["step"] <= start_step])  # drop steps redone after resume
    tracker = tracker_factory(stage, run_id) if (main and tracker_factory) else None
    if tracker is not None and tracker.resumed_elsewhere:
        console.print(
            f"MLflow: run {run_id} of the checkpoint is not in this tracking store; logging to "
            f"a new run {tracker.run_id} tagged with it (steps before {start_step} are in the old run)"
        )
    if tracker is not None and tracker.run_id != run_id:
        tracker.log_params(
            {
                "stage": dataclasses.asdict(stage),
                "world_size": accelerator.num_processes,
                "engine": engine_of(stage),
                "total_steps": total,
                "num_samples": len(dataset),
            }
        )

    sampler = StepBatches(
        dataset,
        stage.global_batch,
        stage.micro_batch,
        accelerator.num_processes,
        accelerator.process_index,
        stage.seed,
        total,
        start_step,
        stage.group_by_length,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=stage.num_workers,
        collate_fn=Collator(processor.tokenizer.pad_token_id),
        worker_init_fn=ignore_sigterm,
    )
    params = [p for named in trainable.values() for _, p in named]

    def save(step: int) -> None:
        with checkpoint.writing(ckpt_root, step):
            write(step)

    def write(step: int) -> None:
        tmp = ckpt_root / (checkpoint.checkpoint_name(step) + ".tmp")
        if main:
            checkpoint.begin(ckpt_root, step)
        accelerator.wait_for_everyone()
        hashes = state.save(tmp, accelerator, model, optimizer, scheduler)
        accelerator.wait_for_everyone()
        if main:
            checkpoint.commit(
                tmp,
                {
                    "step": step,
                    "stage": stage.name,
                    "mlflow_run_id": tracker.run_id if tracker else None,
                    "total_steps": total,
                    "config": dataclasses.asdict(stage),
                    "fingerprint": fingerprint,
                },
                stage.keep_last,
                hashes,
            )
        accelerator.wait_for_everyone()

    model.train()
    step, window, shown = start_step, Window(), start_step > 0
    # Whether the current weights came out of a step of THIS run that had a finite loss and
    # gradient norm: only such a state may be saved as "the last good state" on a NaN.
    stepped_finitely = False
    report = StageReport(stage.name, total, start_step, main, bar=progress and interactive())
    with StopOnSigterm() as stop:
        for batch in loader:
            if not shown:
                console.print(
                    f"[bold]first batch of {stage.name}[/]\n{describe_batch(batch, processor.tokenizer, image_token_id)}"
                )
                shown = True
            if not (batch["labels"] != IGNORE_INDEX).any(dim=1).all():
                raise TrainingError(
                    f"stage {stage.name} step {step}: a sample in the batch has no trained tokens "
                    "(all labels are -100); check the chat template and truncation"
                )
            batch = to_device(batch, accelerator.device)
            # accumulate: no gradient sync (DDP) and no engine step (DeepSpeed) but on a step's last micro-batch.
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                if not all_finite(accelerator, loss):
                    if stepped_finitely and all_finite(accelerator, weights_finite(model)):
                        save(step)
                        raise TrainingError(
                            f"stage {stage.name}: non-finite loss at step {step}; saved the last good "
                            f"state as checkpoint {checkpoint.checkpoint_name(step)}"
                        )
                    raise TrainingError(_nothing_saved(stage.name, step, ckpt_root, found, step == start_step))
                accelerator.backward(loss)  # unscaled: accelerate or the engine divides by accum, once
            window.add(loss.detach(), batch)
            if not accelerator.sync_gradients:
                continue
            grad_norm = apply_step(accelerator, model, optimizer, scheduler, params, stage.grad_clip)
            # The norm of all-reduced gradients is the same on every rank: no collective needed.
            stepped_finitely = math.isfinite(grad_norm)
            step += 1
            report.advance()
            if step % stage.log_every == 0 or step == total:
                record = window.flush(accelerator, step, scheduler.get_last_lr()[0], grad_norm)
                report.record(record)
                if main:
                    append_jsonl(metrics_path, record)
                    if tracker is not None:
                        tracker.log_metrics({k: v for k, v in record.items() if k != "step"}, step)
            saved_now = step % stage.save_every == 0 or step == total
            if saved_now:
                save(step)
            if step < total and stop.agreed(accelerator):
                if not saved_now:
                    save(step)
                report.close()
                raise Preempted(
                    f"stage {stage.name}: stopped by SIGTERM after step {step}/{total}, saved as "
                    f"{ckpt_root / checkpoint.checkpoint_name(step)}; rerun with --resume to continue"
                )
    report.close()
    final = out / "final"
    if main:
        # unprobed: save_pretrained unwraps through accelerate, which imports DeepSpeed (a no-op in DeepSpeed runs).
        with atomic_dir(final) as tmp, hf_bars(report.bar is not None), unprobed():
            state.unwrap(accelerator, model).save_pretrained(tmp, state_dict=state.model_state_dict(accelerator, model))
            processor.save_pretrained(tmp)
        if fingerprint is not None:
            record_fingerprint(out, fingerprint, final, stage=stage.name, seconds=round(time.perf_counter() - began, 3))
        if tracker is not None:
            if stage.log_model_artifact:
                tracker.log_artifacts(final, "model")
            tracker.log_artifacts(metrics_path)
            tracker.finish()
    accelerator.wait_for_everyone()
    # The DDP wrapper (its reducer holds the process group) goes while every rank is still
    # here and the group alive: freed after end_training, a gloo group's destructor can wait
    # forever on a peer that has already exited (seen once in a loaded 2-process CI run).
    model = optimizer = None
    accelerator.free_memory()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _agreed_resume_point(accelerator, root: Path, log) -> Path | None:
    """Rank 0 verifies the checkpoints (reading each file once) and picks one; the other
    ranks take its choice, so they never load different states or hash the files again."""
    from accelerate.utils import broadcast

    choice, error = -1, None  # -1: none (a first run); -2: some exist, none is usable
    if accelerator.is_main_process:
        try:
            found = checkpoint.resume_point(root, log)
            choice = -1 if found is None else int(found.name.removeprefix("step-"))
        except checkpoint.CheckpointError as err:
            choice, error = -2, err
    choice = int(broadcast(torch.tensor([choice], device=accelerator.device), from_process=0).item())
    if error is not None:
        raise error
    if choice == -2:
        raise checkpoint.CheckpointError(f"--resume: no usable checkpoint in {root} (rank 0 says why)")
    return None if choice == -1 else root / checkpoint.checkpoint_name(choice)


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
