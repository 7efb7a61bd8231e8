"""The house rules, enforced: the layer contract of pyproject.toml (import-linter), no
package importing another's private module, the model core and the config reader light,
and docs/architecture.md naming every layer and module."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dragonfly"
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_layer_contract_holds_and_breaks_on_one_forbidden_import(tmp_path):
    kept = _lint(REPO)
    assert kept.returncode == 0, kept.stdout[-3000:]
    assert "1 kept, 0 broken" in kept.stdout

    # The same tree with the model core importing the data layer: the contract must fail.
    shutil.copytree(PACKAGE, tmp_path / "dragonfly", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    zoom = tmp_path / "dragonfly/model/zoom.py"
    zoom.write_text(zoom.read_text() + "\nfrom dragonfly.data import schema  # noqa\n")
    broken = _lint(tmp_path)
    assert broken.returncode != 0
    assert "dragonfly.model.zoom -> dragonfly.data.schema" in broken.stdout, broken.stdout[-3000:]


def _imports(path: Path) -> list[str]:
    """Absolute ``dragonfly`` modules a file imports (``from x import y`` gives x and x.y)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return [m for m in found if m.split(".")[0] == "dragonfly"]


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_package_imports_another_packages_private_module():
    offences = []
    for path in PACKAGE.rglob("*.py"):
        importer = _module(path)
        for name in _imports(path):
            parts = name.split(".")
            private = [i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")]
            if private:
                owner = ".".join(parts[: private[0]])  # the package the private module belongs to
                if not (importer == owner or importer.startswith(owner + ".")):
                    offences.append(f"{importer} imports {name}")
    assert offences == []


def test_the_model_core_imports_only_itself_and_the_errors():
    outside = {
        f"{_module(p)} -> {m}"
        for p in (PACKAGE / "model").rglob("*.py")
        for m in _imports(p)
        if not (m.startswith("dragonfly.model") or m == "dragonfly.errors" or m.startswith("dragonfly.errors."))
    }
    assert outside == set()


def test_reading_params_loads_neither_torch_nor_transformers():
    code = (
        "import sys; import dragonfly.config as c, dragonfly.model.specs, dragonfly.data.config as d;"
        "c.load_profile('tiny', 'params.yaml'); d.load_data_config('params.yaml');"
        "heavy = sorted({'torch', 'transformers', 'deepspeed', 'mlflow'} & set(sys.modules)); print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_architecture_doc_names_every_layer_and_module():
    layers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    doc = (REPO / "docs/architecture.md").read_text()
    named = {m.strip() for layer in layers for m in layer.split("|")}
    missing = sorted(m for m in named if f"`{m}`" not in doc)
    assert missing == []
    # Every top-level module or package of dragonfly sits in a layer of the contract.
    tops = {
        f"dragonfly.{p.stem if p.is_file() else p.name}"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())
    }
    assert tops - named == set()


# train/ joins once its training loop is in pieces (issue #25, item 2).
SHORT_FUNCTION_PACKAGES = ("cli", "pipeline", "eval")
MAX_FUNCTION_LINES = 80


def long_functions(folder: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:name (N lines)`` for every function under ``folder`` longer than ``limit`` lines."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(REPO)}:{node.name} ({lines} lines)")
    return found


def test_no_function_in_the_pipeline_cli_or_eval_is_over_80_lines():
    assert [f for package in SHORT_FUNCTION_PACKAGES for f in long_functions(PACKAGE / package)] == []
    assert long_functions(PACKAGE / "train")  # the check sees a long one (train_stage, until #25 item 2)
