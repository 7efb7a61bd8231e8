"""No code in the `dragonfly` package unpickles arbitrary data, except where reviewed below.

Only code is scanned (comments and strings are blanked first), so a docstring may talk
about pickle; every real use must be on ALLOWED with the reason it is safe."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dragonfly"

# What can run code hidden in a file: pickle and its relatives, loaders built on them, and
# accelerate's save_state/load_state (which pickle the scheduler and RNG states).
PATTERNS = {
    "torch.load": r"\btorch\.load\b",
    "pickle": r"\b(cloud)?pickle\b",
    "dill": r"\bdill\b",
    "joblib": r"\bjoblib\b",
    "weights_only=False": r"\bweights_only\s*=\s*False\b",
    "allow_pickle=True": r"\ballow_pickle\s*=\s*True\b",
    "read_pickle": r"\bread_pickle\b",
    "shelve/marshal": r"\b(shelve|marshal)\b",
    "accelerate state": r"\.(save|load)_state\(|\bload_custom_state\b|\bregister_for_checkpointing\b",
    "mlflow model unpickling": r"\bmlflow\.(pyfunc|pytorch|sklearn)\.load_model\b",
}

# (file relative to dragonfly/, pattern) -> why that use is safe. Keep it short and reviewed.
ALLOWED = {
    ("safe_load.py", "torch.load"): "the single loader: weights_only=True, map_location=cpu; "
    "DeepSpeed's four plain classes are allowed only for files under a checkpoint's deepspeed/",
    ("safe_load.py", "pickle"): "names pickle.UnpicklingError, the refusal torch raises (safe_load.Refused)",
}


def _code_only(source: str) -> str:
    """The source with comments and string literals replaced by spaces (line numbers kept)."""
    lines = source.splitlines(keepends=True)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.STRING):
            continue
        (r0, c0), (r1, c1) = tok.start, tok.end
        for row in range(r0, r1 + 1):
            line = lines[row - 1]
            start = c0 if row == r0 else 0
            end = c1 if row == r1 else len(line.rstrip("\n"))
            lines[row - 1] = line[:start] + " " * (end - start) + line[end:]
    return "".join(lines)


def _sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def test_no_unreviewed_unsafe_loads():
    found = set()
    for name, source in _sources().items():
        code = _code_only(source)
        for label, pattern in PATTERNS.items():
            for match in re.finditer(pattern, code):
                line = code.count("\n", 0, match.start()) + 1
                if (name, label) not in ALLOWED:
                    found.add(f"dragonfly/{name}:{line}: {label}: {source.splitlines()[line - 1].strip()}")
    assert not found, "unreviewed unpickling (make it safe, or add it to ALLOWED with a reason):\n" + "\n".join(
        sorted(found)
    )


def test_every_torch_load_passes_weights_only_true():
    bad = []
    for name, source in _sources().items():
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "torch"
                and any(alias.name == "load" for alias in node.names)
            ):
                bad.append(f"{name}:{node.lineno}: `from torch import load` hides torch.load from this test")
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                flag = next((k.value for k in node.keywords if k.arg == "weights_only"), None)
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    bad.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "torch.load without a literal weights_only=True:\n" + "\n".join(bad)


def test_allow_list_is_not_stale():
    """Each allowed use still exists, so the list cannot quietly cover a future one."""
    sources = _sources()
    for name, label in ALLOWED:
        assert re.search(PATTERNS[label], _code_only(sources[name])), (name, label)
