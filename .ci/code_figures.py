"""The architecture's figures for a package, one per line: library lines, longest function,
highest cyclomatic complexity (ruff's mccabe), import cycles between its modules (every import,
function-local ones included) and function-local imports.

    python .ci/code_figures.py [PACKAGE_DIR]      (default: launcher)

tests/test_architecture.py uses its import walk to check that there are no cycles.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    """`launcher.config.schema` for root/config/schema.py; a package's __init__ is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load: `from a import b` loads a, and a.b if a module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = here if is_package else here.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    module = node.module or ""
    full = (f"{base}.{module}" if module else base) if node.level else module
    return [full, *(f"{full}.{alias.name}" for alias in node.names)]


def _nearest_module(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(modules: dict[str, Path], package: str) -> dict[str, set[str]]:
    """For each module of the package, the package's modules it imports (anywhere in it)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(node, name, path.name == "__init__.py"):
                found = _nearest_module(target, modules) if target.startswith(package) else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of more than one module: the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = {stack.pop()}
            while v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                cycles.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def local_imports(tree: ast.AST) -> int:
    """Import statements inside a function (each counted once, nested functions included)."""
    inside: set[int] = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(id(n) for n in ast.walk(function) if isinstance(n, ast.Import | ast.ImportFrom))
    return len(inside)


def longest_function(tree: ast.AST) -> tuple[int, str]:
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    return max(((f.end_lineno or f.lineno) - f.lineno + 1, f.name) for f in functions) if functions else (0, "")


def highest_complexity(root: Path) -> tuple[int, str]:
    report = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "C901", "--output-format", "concise",
         "--config", "lint.mccabe.max-complexity=0", str(root)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    found = re.findall(r"`(\w+)` is too complex \((\d+) > 0\)", report)
    return max(((int(n), name) for name, n in found), default=(0, ""))


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "launcher").resolve()
    modules = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    trees = {name: ast.parse(path.read_text()) for name, path in modules.items()}
    lines = sum(len(path.read_text().splitlines()) for path in modules.values())
    longest = max((longest_function(tree), name) for name, tree in trees.items())
    cycles = strongly_connected(import_graph(modules, root.name))
    complexity = highest_complexity(root)
    print(f"library lines: {lines} in {len(modules)} modules")
    print(f"longest function: {longest[0][0]} lines ({longest[1]}.{longest[0][1]})")
    print(f"highest complexity: {complexity[0]} ({complexity[1]})")
    print(f"import cycles: {len(cycles)}" + "".join(f"\n  {' <-> '.join(sorted(c))}" for c in cycles))
    print(f"function-local imports: {sum(local_imports(tree) for tree in trees.values())}")


if __name__ == "__main__":
    main()
