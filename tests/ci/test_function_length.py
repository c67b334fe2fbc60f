"""The function-length gate (``.ci/function_length.py``): what it counts, and the line it prints."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "function_length.py"


@pytest.fixture(scope="module")
def gate():
    spec = importlib.util.spec_from_file_location("function_length", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def function(name: str, lines: int, indent: str = "") -> str:
    """A function of exactly ``lines`` lines: def, docstring, then ``pass`` lines."""
    body = [f'{indent}    """Doc."""'] + [f"{indent}    pass"] * (lines - 2)
    return "\n".join([f"{indent}def {name}():", *body]) + "\n"


def test_counts_from_def_to_last_line_with_docstring_and_without_decorators(gate):
    source = "@decorator\n@other\n" + function("at_limit", 60) + "\n" + function("over", 61)
    assert gate.long_functions(source) == [(64, "over", 61)]
    assert gate.long_functions(function("short", 5), limit=4) == [(1, "short", 5)]


def test_names_methods_and_nested_functions_by_their_qualified_name(gate):
    method = function("method", 61, indent="    ")
    source = "class Box:\n" + method + "\n\nasync " + function("coroutine", 61)
    nested = "def outer():\n" + function("inner", 61, indent="    ")
    assert gate.long_functions(source) == [(2, "Box.method", 61), (65, "coroutine", 61)]
    # The outer function holds the inner one's lines too: both are reported.
    assert gate.long_functions(nested) == [(1, "outer", 62), (2, "outer.inner", 61)]


def test_main_prints_file_line_function_and_length_and_fails_only_on_long_functions(gate, tmp_path, capsys):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "long.py").write_text("x = 1\n" + function("too_long", 70))
    (tmp_path / "pkg" / "fine.py").write_text(function("fine", 60))
    assert gate.main([str(tmp_path / "pkg")]) == 1
    long = tmp_path / "pkg" / "long.py"
    assert capsys.readouterr().out == f"{long}:2:too_long: 70 lines > 60 (split it into named helpers)\n"
    assert gate.main([str(tmp_path / "pkg" / "fine.py")]) == 0
    assert capsys.readouterr().out == ""
