"""Start one training stage on a SkyPilot node: the ``run`` of sky/train*.yaml and sky/pipeline.yaml.

SkyPilot runs this on every node with ``SKYPILOT_NODE_RANK``, ``SKYPILOT_NODE_IPS`` (one per
line, head first), ``SKYPILOT_NUM_NODES`` and ``SKYPILOT_NUM_GPUS_PER_NODE``. The torchrun line
comes from dragonfly's own ``launch_command`` (what ``dragonfly launch-cmd`` prints), filled
with those values, and replaces this process (``exec``): the node's job is torchrun itself,
so a preemption, a SIGKILL or ``sky jobs cancel`` stops it whole.

The ranks run ``dragonfly train ... --resume``. What ``--resume-auto`` adds, moving the
checkpoints of another configuration or other inputs to ``checkpoints.superseded/``, is done
here first, once, by one process on the head node: under torchrun every rank would apply it
at the same time to the same folder (a race), and other nodes see a bucket's listing a few
seconds late. The head also refuses, in one line, to resume DeepSpeed ZeRO shards on another
world size than the one that wrote them (the plain checkpoint resumes on any). Then rank 0
picks the newest *complete* checkpoint (its manifest checked) and every rank loads that one.

    python sky/launch.py --stage general2 --runs-dir /ckpt/runs --data-dir /data [--profile paper]
        [--params params.yaml] [--set KEY=VALUE ...] [--port 29500] [--dry-run] [-- max_steps=100 ...]

``--dry-run`` prints the torchrun line and starts nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from dragonfly.errors import DragonflyError


@dataclass(frozen=True)
class Node:
    """This node's place in the cluster, from SkyPilot's variables."""

    rank: int
    head: str
    nodes: int
    gpus: int

    @property
    def world(self) -> int:
        return self.nodes * self.gpus


def node_from_env(environ=os.environ) -> Node:
    """Outside SkyPilot (a laptop, the tests): one node, one process, on 127.0.0.1."""
    ips = [ip.strip() for ip in environ.get("SKYPILOT_NODE_IPS", "127.0.0.1").splitlines() if ip.strip()]
    nodes = int(environ.get("SKYPILOT_NUM_NODES", "1"))
    if len(ips) != nodes:
        raise DragonflyError(f"SKYPILOT_NODE_IPS lists {len(ips)} address(es) but SKYPILOT_NUM_NODES is {nodes}")
    # A CPU-only node reports 0 GPUs: it still runs one process.
    gpus = max(1, int(environ.get("SKYPILOT_NUM_GPUS_PER_NODE", "1")))
    return Node(int(environ.get("SKYPILOT_NODE_RANK", "0")), ips[0], nodes, gpus)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sky/launch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--runs-dir", help="runs_dir of the profile: every stage's output, on the checkpoint bucket")
    parser.add_argument("--data-dir", help="data root (data.root; built mixtures in <it>/mixtures)")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="extra --set of dragonfly train")
    parser.add_argument("--port", type=int, default=29500, help="master port (multi-node)")
    parser.add_argument("--dry-run", action="store_true", help="print the torchrun line, start nothing")
    parser.add_argument("overrides", nargs="*", help="stage overrides key=value, after --")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[list[str], Path | None]:
    """The ``--set`` values and the output folder of the stage."""
    sets = []
    if args.runs_dir:  # runs_dir, not only --out: the next stage finds this one's final/ there
        sets.append(f"runs_dir={args.runs_dir}")
    if args.data_dir:
        sets += [f"data.root={args.data_dir}", f"data.out_dir={args.data_dir}/mixtures"]
    out = Path(args.runs_dir) / args.profile / args.stage if args.runs_dir else None
    return sets + args.sets, out


def torchrun_line(args: argparse.Namespace, node: Node) -> str:
    from dragonfly.train.deepspeed import launch_command

    sets, out = plan(args)
    extra = ["--params", args.params, *(["--out", str(out)] if out else [])]
    extra += [item for value in sets for item in ("--set", value)] + args.overrides
    return launch_command(
        args.stage, args.profile, node.nodes, node.gpus, node.head, str(node.rank), args.port, extra=extra
    )


def preflight(args: argparse.Namespace, node: Node, log=print) -> None:
    """On the head node, before any rank starts: the stage's resume decision, taken once."""
    from dragonfly.pipeline.steps import plan_stage
    from dragonfly.train import stage_lock

    sets, out = plan(args)
    stage = plan_stage(args.stage, args.profile, args.params, [*sets, *args.overrides], out)
    with stage_lock.held(stage.out, True):  # no run of this machine may be training into it meanwhile
        _resume_decision(stage, node, log)


def _resume_decision(stage, node: Node, log) -> None:
    from dragonfly.fingerprint import up_to_date
    from dragonfly.pipeline.steps import _resumable  # --resume-auto's own rule, not a copy
    from dragonfly.train import checkpoint

    if up_to_date(stage.out, stage.fingerprint):
        return  # finished: every rank reports it and skips
    if not _resumable(stage.out, stage.fingerprint, log):
        return  # nothing to resume (or moved aside): the stage starts afresh
    root = stage.out / "checkpoints"
    # The newest checkpoint with a manifest (read alone: cheap on a bucket) says which world wrote this run.
    for _, path in reversed(checkpoint.list_checkpoints(root)):
        if (path / checkpoint.MANIFEST).is_file():
            if why := checkpoint.world_size_problem(path, node.world):
                raise checkpoint.CheckpointError(why, hint=f"or train into a fresh --runs-dir (or move {root} aside)")
            break


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        node = node_from_env()
        line = torchrun_line(args, node)
        if args.dry_run:
            print(line)
            return
        print(f"sky/launch.py: node {node.rank} of {node.nodes}, {node.gpus} process(es) each, head {node.head}")
        if node.rank == 0:
            preflight(args, node)
    except DragonflyError as err:  # as the dragonfly command prints them: one line, and a hint
        print(f"error: {err}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        sys.exit(1)
    print(f"sky/launch.py: {line}", flush=True)
    argv = shlex.split(line)
    # torchrun from the interpreter's own environment (the project venv), whatever PATH says.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main()
