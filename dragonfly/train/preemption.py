"""SIGTERM, what schedulers and SkyPilot send before they take a machine away: finish the
step under way, save a checkpoint, stop with a status that says so.

The handler only raises a flag; the trainer looks at it at the end of each optimiser step.
Ranks agree through one all-reduce of that flag per step (several processes only), so every
rank saves the same step even when the signal reaches them at different moments.
DataLoader workers ignore SIGTERM: a scheduler signals the whole process group, and a worker
that died of it would take the main process down before it could save.
"""

from __future__ import annotations

import signal
import threading

import torch

from dragonfly.errors import DragonflyError

EXIT_CODE = 128 + signal.SIGTERM  # 143, as a process ended by SIGTERM reports


class Preempted(DragonflyError):
    """The run stopped on SIGTERM after saving; ``--resume`` continues it."""

    exit_code = EXIT_CODE


class StopOnSigterm:
    """``with StopOnSigterm() as stop:`` ... ``stop.agreed(accelerator)`` after each step.
    Outside the main thread (a Prefect task in a worker thread) no handler can be installed,
    and SIGTERM keeps its default meaning."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_signal(self, signum, frame) -> None:
        self.received = True

    def agreed(self, accelerator) -> bool:
        """True on every rank when any rank has received SIGTERM."""
        if accelerator.num_processes == 1:
            return self.received
        flag = torch.tensor([float(self.received)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def ignore_sigterm(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the main process decides when the run ends."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
