"""One trainer for every stage (general 1–2, Med 1–3), on accelerate (+ DeepSpeed ZeRO-1).

A stage is build → resume → loop → save: :func:`build` makes the model, data, optimiser
and scheduler (a :class:`Run`), :func:`resume_state` loads the newest usable checkpoint
into it and returns the :class:`TrainState` the loop (:mod:`dragonfly.train.loop`)
advances, :func:`save_final` writes the model. The loop is deliberately plain:
micro-batches come from :class:`StepBatches` (a pure function of seed and step, so resume
needs no replay), gradients accumulate under ``accelerator.accumulate`` and synchronise on
the last micro-batch (the same steps on the plain and the DeepSpeed engine:
:mod:`dragonfly.train.step`), and a checkpoint holds the whole training state. Rank 0
alone writes checkpoints, logs and MLflow.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from rich.console import Console
from transformers import get_scheduler

from dragonfly.config import Profile
from dragonfly.files import atomic_dir, read_jsonl, write_jsonl
from dragonfly.fingerprint import record as record_fingerprint
from dragonfly.train import checkpoint, state
from dragonfly.train.config import StageConfig, stage_dir
from dragonfly.train.console import StageReport, interactive
from dragonfly.train.data import Collator, ConversationDataset, StepBatches
from dragonfly.train.deepspeed import engine_of, make_accelerator
from dragonfly.train.loop import TrainingError, train_loop
from dragonfly.train.parts import param_groups, set_trainable, start_model
from dragonfly.train.preemption import ignore_sigterm
from dragonfly.train.train_state import TrainState
from dragonfly.weights import hf_bars, unprobed

METRICS_FILE = "metrics.jsonl"  # one record per logged step, beside checkpoints/
TOO_LONG_FILE = "too_long.jsonl"  # the samples a stage leaves out as longer than data.max_length


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


@dataclasses.dataclass
class Run:
    """A built stage: what every piece of the loop works on (the state it advances is a TrainState)."""

    stage: StageConfig
    out: Path
    fingerprint: str | None
    accelerator: object
    console: Console
    model: torch.nn.Module
    processor: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    dataset: ConversationDataset
    params: list  # the trainable parameters, clipped together
    total: int  # optimiser steps of the whole stage
    image_token_id: int
    tracker: object = None  # rank 0's, when tracking

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def accum(self) -> int:
        """Micro-batches per optimiser step on this rank."""
        return self.stage.accumulation(self.accelerator.num_processes)

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.out / METRICS_FILE

    def loader(self, start_step: int) -> torch.utils.data.DataLoader:
        """This rank's micro-batches from ``start_step`` on (the step is the data position)."""
        stage, acc = self.stage, self.accelerator
        sampler = StepBatches(
            self.dataset,
            stage.global_batch,
            stage.micro_batch,
            acc.num_processes,
            acc.process_index,
            stage.seed,
            self.total,
            start_step,
            stage.group_by_length,
        )
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=stage.num_workers,
            collate_fn=Collator(self.processor.tokenizer.pad_token_id),
            worker_init_fn=ignore_sigterm,
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
    run = build(profile, stage, data_root, dataset_dir, out, fingerprint)
    train_state = resume_state(run) if resume else TrainState()
    _trim_metrics(run, train_state.step)
    _start_tracker(run, tracker_factory, train_state)
    report = StageReport(stage.name, run.total, train_state.step, run.main, bar=progress and interactive())
    train_loop(run, train_state, report)
    final = save_final(run, report, began)
    release(run)
    return final


def build(profile: Profile, stage: StageConfig, data_root, dataset_dir, out: Path, fingerprint: str | None) -> Run:
    """Model, data, optimiser and scheduler of a stage, prepared for its engine."""
    accelerator = make_accelerator(stage)
    # soft_wrap: a redirected log keeps long lines whole instead of rich's 80-column wrapping.
    console = Console(quiet=not accelerator.is_main_process, soft_wrap=True)
    torch.manual_seed(stage.seed)
    model, processor, trainable = _model(profile, stage, dataset_dir)
    dataset = _dataset(stage, data_root, dataset_dir, processor, out, accelerator.is_main_process, console)
    total = _total_steps(stage, len(dataset))
    optimizer = torch.optim.AdamW(param_groups(trainable, stage), lr=stage.lr, betas=(0.9, 0.999))
    scheduler = get_scheduler(
        stage.schedule, optimizer, num_warmup_steps=int(stage.warmup_ratio * total), num_training_steps=total
    )
    image_token_id = model.config.image_token_id  # read before the engine wraps the model
    model, optimizer = accelerator.prepare(model, optimizer)
    params = [p for named in trainable.values() for _, p in named]
    return Run(
        stage=stage,
        out=out,
        fingerprint=fingerprint,
        accelerator=accelerator,
        console=console,
        model=model,
        processor=processor,
        optimizer=optimizer,
        scheduler=scheduler,
        dataset=dataset,
        params=params,
        total=total,
        image_token_id=image_token_id,
    )


def _model(profile: Profile, stage: StageConfig, dataset_dir):
    """The stage's starting model and processor, and its trainable parameters by part."""
    model, processor = start_model(profile, stage, dataset_dir)
    if stage.data.max_length <= model.config.image_seq_length:  # at start, not at the first batch
        raise TrainingError(
            f"stage {stage.name}: data.max_length {stage.data.max_length} leaves no room for text beside one "
            f"image, which takes {model.config.image_seq_length} positions; raise data.max_length"
        )
    trainable = set_trainable(model, stage.train)
    if stage.gradient_checkpointing:
        model.language_model.activation_checkpointing_enable()
    return model, processor, trainable


def _dataset(stage: StageConfig, data_root, dataset_dir, processor, out: Path, main: bool, console):
    """The stage's samples, those longer than data.max_length left out and listed (rank 0)."""
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
    if _total_steps(stage, len(dataset)) <= 0:
        left_out = (
            f" ({len(too_long)} left out as longer than data.max_length, {out / TOO_LONG_FILE})" if too_long else ""
        )
        raise TrainingError(
            f"stage {stage.name}: {len(dataset)} samples{left_out} give no optimiser step at global_batch "
            f"{stage.global_batch}"
        )
    if note := epochs_cap(stage, len(dataset)):
        console.print(note)
    return dataset


def resume_state(run: Run) -> TrainState:
    """The state of the newest usable checkpoint, loaded into the run; a fresh state when there is none."""
    found = _agreed_resume_point(run.accelerator, run.ckpt_root, run.console.print)
    if found is None:
        return TrainState()
    saved = checkpoint.read_state(found)
    _check_resumable(run, found, saved)
    state.load(found, run.accelerator, run.model, run.optimizer, run.scheduler, run.console.print)
    train_state = TrainState.resumed(saved, found)
    run.console.print(f"[cyan]resumed[/] {run.stage.name} from {found} at step {train_state.step}/{run.total}")
    return train_state


def _check_resumable(run: Run, found: Path, saved: dict) -> None:
    """Refuse a checkpoint of another configuration or of other inputs."""
    stage, root, fingerprint = run.stage, run.ckpt_root, run.fingerprint
    if conflicts := resume_conflicts(saved.get("config"), stage):
        raise TrainingError(
            f"stage {stage.name}: cannot resume {found} with a different configuration "
            f"({'; '.join(conflicts)}); restore those values, or train into a fresh --out "
            f"(or delete {root})"
        )
    if fingerprint is not None and saved.get("fingerprint") not in (None, fingerprint):
        # The same stage config (checked above), other inputs (a retrained previous stage, a rebuilt mixture):
        # continuing would mix two runs into one model.
        raise TrainingError(
            f"stage {stage.name}: cannot resume {found}: it was trained from other inputs "
            f"(fingerprint {saved['fingerprint'][:12]} vs {fingerprint[:12]}); train into a "
            f"fresh --out (or delete {root})"
        )


def _trim_metrics(run: Run, start_step: int) -> None:
    """Rank 0 drops the logged steps after ``start_step``: a resumed run logs them again."""
    if run.main:
        run.out.mkdir(parents=True, exist_ok=True)
        old = read_jsonl(run.metrics_path) if run.metrics_path.is_file() else []
        write_jsonl(run.metrics_path, [r for r in old if r["step"] <= start_step])


def _start_tracker(run: Run, tracker_factory, train_state: TrainState) -> None:
    """Rank 0's tracker, continuing the checkpoint's MLflow run; the state then names the run it logs to."""
    resumed_id = train_state.mlflow_run_id
    tracker = tracker_factory(run.stage, resumed_id) if (run.main and tracker_factory) else None
    if tracker is not None and tracker.resumed_elsewhere:
        run.console.print(
            f"MLflow: run {resumed_id} of the checkpoint is not in this tracking store; logging to "
            f"a new run {tracker.run_id} tagged with it (steps before {train_state.step} are in the old run)"
        )
    if tracker is not None and tracker.run_id != resumed_id:
        tracker.log_params(
            {
                "stage": dataclasses.asdict(run.stage),
                "world_size": run.accelerator.num_processes,
                "engine": engine_of(run.stage),
                "total_steps": run.total,
                "num_samples": len(run.dataset),
            }
        )
    run.tracker = tracker
    train_state.mlflow_run_id = tracker.run_id if tracker else None


def save_final(run: Run, report: StageReport, began: float) -> Path:
    """Rank 0 saves the model and processor as ``<out>/final``, then its fingerprint, and
    closes the tracker with the model and the metrics."""
    final, accelerator = run.out / "final", run.accelerator
    if run.main:
        # unprobed: save_pretrained unwraps through accelerate, which imports DeepSpeed (a no-op in DeepSpeed runs).
        with atomic_dir(final) as tmp, hf_bars(report.bar is not None), unprobed():
            weights = state.model_state_dict(accelerator, run.model)
            state.unwrap(accelerator, run.model).save_pretrained(tmp, state_dict=weights)
            run.processor.save_pretrained(tmp)
        if run.fingerprint is not None:
            seconds = round(time.perf_counter() - began, 3)
            record_fingerprint(run.out, run.fingerprint, final, stage=run.stage.name, seconds=seconds)
        if run.tracker is not None:
            if run.stage.log_model_artifact:
                run.tracker.log_artifacts(final, "model")
            run.tracker.log_artifacts(run.metrics_path)
            run.tracker.finish()
    accelerator.wait_for_everyone()
    return final


def release(run: Run) -> None:
    """Ends the run's accelerator (its process group), every rank together."""
    # The DDP wrapper (its reducer holds the process group) goes while every rank is still
    # here and the group alive: freed after end_training, a gloo group's destructor can wait
    # forever on a peer that has already exited (seen once in a loaded 2-process CI run).
    run.model = run.optimizer = None
    run.accelerator.free_memory()
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()


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
