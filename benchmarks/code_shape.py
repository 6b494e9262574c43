"""The codebase's shape, as issue 17 measures it: modules, lines per module, long functions,
functions with many positional parameters, and import cycles among the library's modules.

    .venv/bin/python benchmarks/code_shape.py [src/forecast service]
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _imports(path: Path, tree: ast.AST, package: str) -> set[str]:
    """Modules of `package` this module imports at run time (TYPE_CHECKING blocks excluded)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(package)}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for node in list(graph):
        if node not in index:
            visit(node)
    return out


def shape(root: Path) -> dict[str, object]:
    package = root.name
    lines, long40, long60, positional, graph = [], [], [], [], {}
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        lines.append((len(text.splitlines()), str(path)))
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = {m for m in _imports(path, tree, package) if m != name}
        for fn in _functions(tree):
            size = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            where = f"{path}:{fn.lineno} {fn.name} ({size})"
            if size > 40:
                long40.append(where)
            if size > 60:
                long60.append(where)
            args = fn.args.posonlyargs + fn.args.args
            count = len([a for a in args if a.arg not in ("self", "cls")])
            if count > 6:
                positional.append(f"{path}:{fn.lineno} {fn.name} ({count})")
    # a package's __init__ importing its own modules is how it names its public functions
    graph = {
        m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")}
        for m, deps in graph.items()
    }
    sizes = [n for n, _ in lines]
    return {
        "root": str(root),
        "modules": len(lines),
        "median_lines": statistics.median(sizes),
        "max_lines": max(lines),
        "over_400": [p for n, p in lines if n > 400],
        "functions_over_40": long40,
        "functions_over_60": long60,
        "over_6_positional": positional,
        "cycles": _cycles(graph),
    }


def main(roots: list[str]) -> None:
    for root in roots:
        s = shape(Path(root))
        print(
            f"{s['root']}: {s['modules']} modules, median {s['median_lines']} lines, "
            f"max {s['max_lines'][0]} ({s['max_lines'][1]})"
        )
        print(f"  modules over 400 lines: {len(s['over_400'])}")
        for p in s["over_400"]:
            print(f"    {p}")
        print(
            f"  functions over 40 lines: {len(s['functions_over_40'])}, "
            f"over 60: {len(s['functions_over_60'])}"
        )
        for p in s["functions_over_60"]:
            print(f"    {p}")
        print(f"  functions with more than 6 positional parameters: {len(s['over_6_positional'])}")
        print(f"  import cycles: {len(s['cycles'])} {s['cycles']}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["src/forecast", "service"])
