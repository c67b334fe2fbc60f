"""Lint gate ruff lacks: no function longer than LIMIT lines, from its ``def`` line to its last line.

The docstring counts, decorators do not. ``python .ci/function_length.py [PATH ...]`` prints one
``file:line:function: N lines`` per long function and exits 1 if there is any; with no PATH it checks the packages.
tests/ are not checked: a test is a linear script (arrange, act, assert), as ruff's PLR0915 ignore for tests says.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMIT = 60
PACKAGES = ("benchmark", "extractors", "lightning_modules", "studies")


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[int, str, int]]:
    """``(line, qualified name, length)`` of each function in ``source`` longer than ``limit`` lines, by line."""
    found: list[tuple[int, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}."
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                # lineno is the def line (decorators have their own); end_lineno is the body's last line.
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    found.append((child.lineno, name[:-1], length))
            visit(child, name)

    visit(ast.parse(source), "")
    return sorted(found)


def main(argv: list[str]) -> int:
    """Print every function over LIMIT lines under the given files or folders (default: the packages)."""
    roots = [Path(a) for a in argv] or [Path(p) for p in PACKAGES]
    files = [f for r in roots for f in ([r] if r.is_file() else sorted(r.rglob("*.py")))]
    problems = [
        f"{f}:{line}:{name}: {length} lines > {LIMIT} (split it into named helpers)"
        for f in files
        for line, name, length in long_functions(f.read_text(encoding="utf-8"))
    ]
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
