"""The training loop's own state, saved in a checkpoint and restored from it as one object.

As lingua's and torchtitan's ``TrainState``: what the loop advances (the step, the log
window) and what it must know to act on a non-finite loss, beside the model, optimiser,
scheduler and RNG states that :mod:`dragonfly.train.state` writes. Only the step and the
MLflow run outlive the process; the rest is this run's by design (see each field).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dragonfly.train.step import Window


@dataclasses.dataclass
class TrainState:
    # Optimiser steps done. StepBatches is a pure function of (seed, step), so the step is
    # also the data position: resume needs no sampler state and replays no batch.
    step: int = 0
    # The MLflow run the steps are logged to (None without tracking); resume continues it.
    mlflow_run_id: str | None = None
    # Loss and throughput since the last log line, on this process (not saved: a resumed
    # run starts a fresh window, its first log line covers the steps it ran).
    window: Window = dataclasses.field(default_factory=Window, compare=False, repr=False)
    # NaN guard: whether the current weights came out of a step of THIS run with a finite
    # loss and gradient norm. Only such a state may be saved as "the last good state" on a
    # NaN; so it is never saved, and a resumed run starts without one.
    stepped_finitely: bool = False
    # The checkpoint this run resumed from, and its step: a non-finite loss before the first
    # step of this run means that checkpoint itself is bad (the guard's message says so).
    resumed_from: Path | None = None
    start_step: int = 0

    def state_dict(self) -> dict:
        """The fields a checkpoint keeps (its record's keys since the first checkpoints)."""
        return {"step": self.step, "mlflow_run_id": self.mlflow_run_id}

    @classmethod
    def resumed(cls, record: dict, directory: Path) -> TrainState:
        """The state saved in ``record``, the state record of checkpoint ``directory``."""
        step = record["step"]
        return cls(step=step, mlflow_run_id=record.get("mlflow_run_id"), resumed_from=directory, start_step=step)

    def record(self, stage, total_steps: int, fingerprint: str | None) -> dict:
        """A checkpoint's state record: this state, and what the run was (checked on resume)."""
        return {
            **self.state_dict(),
            "stage": stage.name,
            "total_steps": total_steps,
            "config": dataclasses.asdict(stage),
            "fingerprint": fingerprint,
        }

    @property
    def failed_at_once(self) -> bool:
        """No step of this run has finished (so a resumed checkpoint is itself the bad state)."""
        return self.step == self.start_step
