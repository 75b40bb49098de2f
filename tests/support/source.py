"""Parse the project's own Python source for the tests that read code (layering, the one
writer of alert state, parameterised SQL).

CPython 3.11's parser can refuse a good file with "SystemError: AST constructor
recursion depth mismatch" once an earlier test in the same process has caught a
RecursionError deep in C code (the hostile-input tests do: deeply nested JSON). A fresh
interpreter parses it as it is, so that is the fallback."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys

_PARSE_IN_CHILD = (
    "import ast, pickle, sys; "
    "sys.stdout.buffer.write(pickle.dumps(ast.parse(sys.stdin.buffer.read().decode('utf-8'))))"
)


def parse_source(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SystemError:
        child = subprocess.run(
            [sys.executable, "-c", _PARSE_IN_CHILD],
            input=source.encode("utf-8"),
            capture_output=True,
            check=True,
            timeout=60,
        )
        tree = pickle.loads(child.stdout)  # noqa: S301 - our own child's output
        assert isinstance(tree, ast.Module)
        return tree
