"""What a person sees of a training stage: a progress bar on a terminal, and throttled
plain log lines (loss, lr, grad norm, samples/s) everywhere, from rank 0 only."""

from __future__ import annotations

import math
import sys
import time

# How often a plain log line is printed: every ``log_every`` step is in metrics.jsonl, but the
# tiny profile logs every step (1200 in general2, several a second), which would bury a
# console or a log file. A line is due when LINE_SECONDS have passed or LINE_FRACTION of the
# stage since the last one, plus the first and last logged steps: at most about 20 lines
# from the fraction plus one per LINE_SECONDS from the clock, however many steps.
LINE_SECONDS = 10.0
LINE_FRACTION = 0.05


def interactive() -> bool:
    """A person watches: the bar (on stderr) and the log lines (on stdout) both reach a terminal.
    A redirected stream gets no bar, whose carriage-return redraws would flood the file."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class StageReport:
    """What a person sees of a stage (rank 0 only): a progress bar with loss, lr and
    samples/s when ``bar``, and a plain line per logged record, throttled (see LINE_SECONDS).
    A line's loss and samples/s are the means over the records since the previous line, so
    it reads as a trend rather than one noisy window; lr and grad_norm are the latest."""

    def __init__(self, name: str, total: int, start: int, enabled: bool, bar: bool, clock=time.monotonic):
        from tqdm import tqdm

        self.name, self.total, self.enabled, self.clock = name, total, enabled, clock
        self.every = max(1, math.ceil(total * LINE_FRACTION))
        self.last_step, self.last_time, self.pending = start, None, []
        self.bar = tqdm(total=total, initial=start, desc=f"train {name}", unit="step") if (enabled and bar) else None

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def record(self, record: dict) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"loss {record['loss']:#.4g}  lr {record['lr']:.1e}  {record['samples_per_s']:.1f} samples/s",
                refresh=False,
            )
        self.pending.append(record)
        step, now = record["step"], self.clock()
        due = self.last_time is None or step == self.total or step - self.last_step >= self.every
        if due or now - self.last_time >= LINE_SECONDS:
            self.last_step, self.last_time = step, now
            self._line(self.pending)
            self.pending = []

    def _line(self, records: list[dict]) -> None:
        last = records[-1]
        loss = sum(r["loss"] for r in records) / len(records)
        speed = sum(r["samples_per_s"] for r in records) / len(records)
        norm = "" if math.isnan(last["grad_norm"]) else f"  grad_norm {last['grad_norm']:.3g}"  # NaN: DeepSpeed's
        line = f"{self.name} step {last['step']}/{self.total}  loss {loss:#.4g}  lr {last['lr']:.1e}{norm}"
        line += f"  {speed:.1f} samples/s"
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)  # above the bar, which is then redrawn
        else:
            print(line, flush=True)  # flushed: a redirected stdout is block-buffered, and `tail -f` should follow

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
