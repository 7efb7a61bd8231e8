"""What a person sees of training: loss lines a redirected log can hold, a progress bar only on a
terminal (and not with --no-progress), and no DeepSpeed import (nor its warning) on a CPU run."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from typer.testing import CliRunner

from dragonfly.train.console import StageReport

BAR = ("\r", "█", "step/s", "it/s", "%|")
LINE = "general1 step "
# The CLI, then whether DeepSpeed got imported: the CLI exits through SystemExit, hence the finally.
PROBE = (
    "import sys\n"
    "from dragonfly.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    print('deepspeed imported:', 'deepspeed' in sys.modules, file=sys.stderr)\n"
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(step: int) -> dict:
    return {"step": step, "loss": 1.0, "lr": 1e-3, "grad_norm": 0.5, "samples_per_s": 10.0}


def test_redirected_log_has_throttled_loss_lines_no_bar_and_no_deepspeed(workspace, tmp_path):
    """The real command with stdout and stderr in pipes (as `> train.log 2>&1`), 40 steps logged each."""
    out = tmp_path / "run"
    args = ["train", "--stage", "general1", "--out", str(out)]
    args += ["global_batch=2", "micro_batch=2", "epochs=2", "max_steps=40", "save_every=20"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DRAGONFLY_TRACKING": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=600
    )
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    assert "Setting accelerator to CPU" not in text and "deepspeed imported: False" in done.stderr, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(LINE)]
    assert lines and all(k in lines[0] for k in ("loss ", "lr ", "grad_norm ", "samples/s")), done.stdout
    assert lines[0].startswith("general1 step 1/40 ") and lines[-1].startswith("general1 step 40/40 ")
    # Every step is in metrics.jsonl; the console gets a line per 5 % of the stage (or 10 s).
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 40
    assert len(lines) <= 40 // 2 + 2, lines
    assert not [mark for mark in BAR if mark in text], text[-3000:]
    assert len(text.splitlines()) < 40, text
    assert "in front of a freshly initialised LLM" in done.stdout  # the tiny LLM is random


def test_report_throttles_lines_by_share_of_the_stage_and_by_time(capsys):
    now = [0.0]
    fast = StageReport("general2", 1200, 0, enabled=True, bar=False, clock=lambda: now[0])
    for step in range(1, 1201):
        now[0] += 0.25  # 4 steps/s: 300 s in all
        fast.record(_record(step))
    steps = [int(line.split()[2].split("/")[0]) for line in capsys.readouterr().out.splitlines()]
    assert steps[0] == 1 and steps[-1] == 1200
    assert 20 <= len(steps) <= 2 + 20 + 300 // 10, steps  # the fraction plus the clock

    slow = StageReport("general2", 1200, 0, enabled=True, bar=False, clock=lambda: now[0])
    for step in range(1, 6):
        now[0] += 30.0  # a step every 30 s: each logged step is worth a line
        slow.record(_record(step))
    assert len(capsys.readouterr().out.splitlines()) == 5

    quiet = StageReport("general2", 10, 0, enabled=False, bar=True)  # any rank but 0
    quiet.record(_record(1))
    assert quiet.bar is None and capsys.readouterr().out == ""


def test_bar_on_a_terminal_unless_no_progress(workspace, tmp_path, monkeypatch):
    from dragonfly.pipeline import train

    run = ["max_steps=2", "global_batch=2", "micro_batch=2", "save_every=100"]
    seen = {}
    for progress in (True, False):
        stdout, stderr = _Terminal(), _Terminal()
        monkeypatch.setattr(sys, "stdout", stdout)
        monkeypatch.setattr(sys, "stderr", stderr)
        train("general1", "tiny", workspace / "params.yaml", run, out_dir=tmp_path / str(progress), progress=progress)
        monkeypatch.undo()
        seen[progress] = stdout.getvalue(), stderr.getvalue()
    (out_on, err_on), (out_off, err_off) = seen[True], seen[False]
    assert "train general1" in err_on and "loss " in err_on  # the bar, its postfix
    assert "train general1" not in err_off and not [mark for mark in BAR if mark in out_off + err_off]
    assert "general1 step 2/2  loss " in out_on and "general1 step 2/2  loss " in out_off


def test_train_takes_no_progress_and_passes_it_on(monkeypatch, tmp_path):
    import dragonfly.pipeline
    from dragonfly.cli import app

    calls = []
    monkeypatch.setattr(dragonfly.pipeline, "train", lambda *a, **k: calls.append(k) or tmp_path)
    monkeypatch.setenv("DRAGONFLY_TRACKING", "0")
    runner = CliRunner()
    for flag, expected in (([], True), (["--no-progress"], False)):
        result = runner.invoke(app, ["train", "--stage", "general1", *flag])
        assert result.exit_code == 0, result.output
        assert calls.pop()["progress"] is expected
