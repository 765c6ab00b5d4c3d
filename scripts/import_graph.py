"""Measure the shape of the srweb package: import cycles, loose modules and the longest functions.

Reads the source with ``ast`` (nothing is imported), so it runs on any checkout:

    python scripts/import_graph.py            # report for ./srweb
    python scripts/import_graph.py --json     # the same figures as JSON
    python scripts/import_graph.py --root OTHER_CHECKOUT/srweb

An import counts wherever it is written: at module level, inside a function, or as a literal
``import_module("srweb.x")``. Importing ``srweb.a.b`` is an edge to ``srweb.a.b`` only (package
``__init__`` files are not counted as importers of their children).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

NOT_LOOSE = {"__init__", "__main__", "config"}
EXCLUDED_FROM_LENGTH = ("migrations",)


@dataclass
class ModuleInfo:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)
    in_function_imports: int = 0
    functions: list[tuple[str, int, int]] = field(default_factory=list)  # (qualname, first line, length)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(target: str, known: set[str]) -> str | None:
    """The longest known module that ``target`` names (``srweb.a.b.func`` -> ``srweb.a.b``)."""
    parts = target.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _import_targets(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        return [f"{base}.{alias.name}" for alias in node.names] + [base]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called in {"import_module", "__import__"} and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


class _Collector(ast.NodeVisitor):
    def __init__(self, info: ModuleInfo, package: str, known: set[str]):
        self.info, self.package, self.known = info, package, known
        self.scope: list[str] = []

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        qualname = ".".join([*self.scope, node.name])
        self.info.functions.append((qualname, node.lineno, node.end_lineno - node.lineno + 1))
        self._nested(node)

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._nested(node)

    def _nested(self, node: ast.AST) -> None:
        self.scope.append(getattr(node, "name", "?"))
        self.generic_visit(node)
        self.scope.pop()

    def generic_visit(self, node: ast.AST) -> None:
        targets = _import_targets(node, self.package)
        resolved = {r for r in (_resolve(t, self.known) for t in targets if t.startswith("srweb")) if r}
        resolved.discard(self.info.name)
        self.info.imports |= resolved
        if isinstance(node, (ast.Import, ast.ImportFrom)) and self.scope and resolved:
            self.info.in_function_imports += 1
        super().generic_visit(node)


def scan(root: Path) -> dict[str, ModuleInfo]:
    paths = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    modules = {module_name(p, root): ModuleInfo(module_name(p, root), p) for p in paths}
    known = set(modules)
    for info in modules.values():
        package = info.name if info.path.name == "__init__.py" else info.name.rpartition(".")[0]
        _Collector(info, package, known).visit(ast.parse(info.path.read_text(), str(info.path)))
    return modules


def cycles(modules: dict[str, ModuleInfo]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(modules[node].imports):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules) + 100))
    for name in sorted(modules):
        if name not in index:
            connect(name)
    return sorted(found)


def loose_modules(modules: dict[str, ModuleInfo], root: Path) -> list[str]:
    return sorted(i.path.stem for i in modules.values() if i.path.parent == root and i.path.stem not in NOT_LOOSE)


def longest_functions(modules: dict[str, ModuleInfo], top: int = 10) -> list[tuple[int, str]]:
    rows = [
        (length, f"{info.name}:{qualname} (line {line})")
        for info in modules.values()
        if not any(part in EXCLUDED_FROM_LENGTH for part in info.name.split("."))
        for qualname, line, length in info.functions
    ]
    return sorted(rows, reverse=True)[:top]


def report(root: Path) -> dict:
    modules = scan(root)
    return {
        "modules": len(modules),
        "loose_modules": loose_modules(modules, root),
        "cycles": cycles(modules),
        "in_function_srweb_imports": sum(i.in_function_imports for i in modules.values()),
        "longest_functions": [{"lines": n, "function": f} for n, f in longest_functions(modules)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1] / "srweb")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = report(args.root.resolve())
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"modules: {figures['modules']}")
    print(f"loose top-level modules ({len(figures['loose_modules'])}): {', '.join(figures['loose_modules'])}")
    print(f"imports of srweb modules inside functions: {figures['in_function_srweb_imports']}")
    print(f"import cycles: {len(figures['cycles'])}")
    for component in figures["cycles"]:
        print("  " + " <-> ".join(component))
    print("longest functions (outside migrations):")
    for row in figures["longest_functions"]:
        print(f"  {row['lines']:4d}  {row['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
