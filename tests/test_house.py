"""The house rules a reader relies on: no function in the training, pipeline, evaluation or
CLI rooms (nor the flow) longer than one screen, so each reads in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("dragonfly/train", "dragonfly/pipeline", "dragonfly/eval", "dragonfly/cli", "flows")
MAX_LINES = 80  # signature, docstring and body


def long_functions(paths, root: Path = REPO, limit: int = MAX_LINES) -> list[str]:
    """``file:line name (N lines)`` for every function longer than ``limit`` lines."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_the_rooms_is_over_80_lines():
    files = [f for room in ROOMS for f in sorted((REPO / room).rglob("*.py"))]
    assert len(files) > 20
    assert long_functions(files) == []


def test_the_rule_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "long.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n")
    assert long_functions([tmp_path / "long.py"], tmp_path) == [f"long.py:5 long ({MAX_LINES + 1} lines)"]
