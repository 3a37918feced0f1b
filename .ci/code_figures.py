"""The architecture's figures for the launcher package, printed one per line.

Longest function, highest cyclomatic complexity (ruff's mccabe), import cycles between the
package's modules (every import, function-local ones included), function-local imports, library
lines. Run from the repository root: `python .ci/code_figures.py [package-dir]`.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(node: ast.Import | ast.ImportFrom, here: str, is_package: bool, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = here if is_package else here.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    mod = node.module or ""
    full = (f"{base}.{mod}" if mod else base) if node.level else mod
    names = [full]
    names += [f"{full}.{a.name}" for a in node.names]  # `from pkg import module`
    return [n for n in names if n == package or n.startswith(package + ".")]


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "launcher").resolve()
    package = root.name
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root): f for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    local_imports = 0
    longest = (0, "")
    lines = 0
    for name, path in modules.items():
        text = path.read_text()
        lines += len(text.splitlines())
        tree = ast.parse(text)
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
                if length > longest[0]:
                    longest = (length, f"{name}.{fn.name}")
                local_imports += sum(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(fn) if n is not fn)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in imported(node, name, path.name == "__init__.py", package):
                    while target and target not in modules:
                        target = target.rpartition(".")[0]
                    if target and target != name:
                        graph[name].add(target)
    # Nested functions' imports were counted once per enclosing function: count them once.
    local_imports = 0
    for path in files:
        tree = ast.parse(path.read_text())
        top = set()
        for node in tree.body:
            top.update(
                id(n)
                for n in ast.walk(node)
                if isinstance(n, ast.Import | ast.ImportFrom)
                and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            )
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            top.update(id(n) for n in cls.body if isinstance(n, ast.Import | ast.ImportFrom))
        local_imports += sum(isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in top for n in ast.walk(tree))
    cycles = strongly_connected(graph)
    ruff = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--select",
            "C901",
            "--config",
            "lint.mccabe.max-complexity=0",
            "--output-format",
            "concise",
            str(root),
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    worst = max(((int(m[1]), m[0]) for m in re.findall(r"`(\w+)` is too complex \((\d+) > 0\)", ruff)), default=(0, ""))
    print(f"library lines: {lines} in {len(files)} modules")
    print(f"longest function: {longest[0]} lines ({longest[1]})")
    print(f"highest complexity: {worst[0]} ({worst[1]})")
    print(f"import cycles: {len(cycles)}" + "".join(f"\n  {' <-> '.join(sorted(c))}" for c in cycles))
    print(f"function-local imports: {local_imports}")


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module: the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    main()
