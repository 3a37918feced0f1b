"""The package's shape, checked: imports run one way (no cycles, counting function-local imports),
a function-local import says why (start-up time) in a comment, and no function is longer than a
screenful. Complexity and statement counts are ruff's (C901, PLR0915 in pyproject.toml)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "launcher"
MAX_FUNCTION_LINES = 60

sys.path.insert(0, str(ROOT / ".ci"))
figures = importlib.import_module("code_figures")


def _modules() -> dict[str, Path]:
    return {figures.module_name(path, PACKAGE): path for path in sorted(PACKAGE.rglob("*.py"))}


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_the_package_has_no_import_cycles() -> None:
    graph = figures.import_graph(_modules(), PACKAGE.name)
    assert graph["launcher.cli.main"], "the graph is empty: the import walk is broken"
    assert figures.strongly_connected(graph) == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_function_local_imports_say_why(module: str) -> None:
    path = _modules()[module]
    lines = path.read_text().splitlines()
    unexplained = []
    for function in _functions(ast.parse(path.read_text())):
        for node in ast.walk(function):
            if node is function or not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            above = node.lineno - 2
            while above >= 0 and (not lines[above].strip() or lines[above].lstrip().startswith(("import ", "from "))):
                above -= 1  # a block of local imports shares one comment
            if "#" not in lines[node.lineno - 1] and not lines[above].lstrip().startswith("#"):
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert unexplained == []


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_function_is_longer_than_a_screenful(module: str) -> None:
    path = _modules()[module]
    long = [
        f"{path.relative_to(ROOT)}:{f.lineno} {f.name}: {(f.end_lineno or f.lineno) - f.lineno + 1} lines"
        for f in _functions(ast.parse(path.read_text()))
        if (f.end_lineno or f.lineno) - f.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_launch_schema_does_not_import_torch() -> None:
    """Editors call `launch schema`; the commands' modules (and torch, about 2 s) load after dispatch."""
    code = "import sys, launcher.cli.main as m; m.main(['schema']); assert 'torch' not in sys.modules, 'torch'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
