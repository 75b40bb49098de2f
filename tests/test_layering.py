"""The layering of the code, read from its import graph (every import statement, at module
level or inside a function):

- the contracts package `carewatch/` imports no worker package (the CLI and run-all
  name the workers and import them when a command runs);
- `rules_engine/` imports neither `simulators/` nor `ingest/`, nor the offline
  `evaluation/` tooling that replays recordings through it;
- `visits/` (the visit list's ranking, the slow-decline signal and their database edge)
  imports no worker package: the operator API serves it, not the other way round;
- `bench/` imports nothing from `tests/`;
- a test module (tests/test_*.py) imports no other test module: shared helpers live in
  support modules (tests/support/; harness/ for what tests and benchmarks share).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.source import parse_source

ROOT = Path(__file__).resolve().parent.parent
WORKERS = (
    "ingest",
    "rules_engine",
    "notifier",
    "operator_api",
    "visits",
    "registry",
    "simulators",
    "gateways",
    "evaluation",
)
PACKAGES = ("carewatch", *WORKERS, "bench", "harness", "tests", "tools", "fuzz")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The absolute names of the modules `path` imports (relative imports resolved)."""
    tree = parse_source(path.read_text("utf-8"))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # `from tests import test_x` imports the module tests.test_x
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def modules(*folders: str) -> Iterator[tuple[str, set[str]]]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), imports_of(path)


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return name.split(".")[0] in packages


def violations(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path, names in modules(folder):
        bad = sorted(n for n in names if _under(n, forbidden) and not _is_attribute(n))
        if bad:
            found[path] = bad
    return found


def _is_attribute(name: str) -> bool:
    """`from x import y` adds x.y, which is a module only if it exists as one."""
    parts = name.split(".")
    if len(parts) < 2:
        return False
    as_module = ROOT.joinpath(*parts)
    parent = ROOT.joinpath(*parts[:-1])
    is_module = as_module.with_suffix(".py").exists() or (as_module / "__init__.py").exists()
    parent_is_module = parent.with_suffix(".py").exists() or (parent / "__init__.py").exists()
    return parent_is_module and not is_module


def test_the_contracts_package_imports_no_worker() -> None:
    assert violations("carewatch", (*WORKERS, "bench", "harness", "tests", "tools", "fuzz")) == {}


def test_the_rules_engine_imports_neither_simulators_nor_ingest() -> None:
    assert violations("rules_engine", ("simulators", "ingest", "evaluation")) == {}


def test_visits_import_no_worker() -> None:
    others = tuple(w for w in WORKERS if w != "visits")
    assert violations("visits", (*others, "bench", "harness", "tests", "tools", "fuzz")) == {}


def test_bench_imports_nothing_from_tests() -> None:
    assert violations("bench", ("tests",)) == {}


def test_test_modules_import_no_other_test_module() -> None:
    found = {}
    for path, names in modules("tests"):
        if not Path(path).name.startswith("test_"):
            continue
        bad = sorted(n for n in names if n.startswith("tests.test_") and not _is_attribute(n))
        if bad:
            found[path] = bad
    assert found == {}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import ingest.worker", {"ingest.worker"}),
        ("def f():\n    from notifier import worker", {"notifier", "notifier.worker"}),
        ("from tests import test_bus", {"tests", "tests.test_bus"}),
        ("from . import alerts", {"carewatch", "carewatch.alerts"}),
    ],
)
def test_the_graph_sees_every_kind_of_import(
    source: str, expected: set[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "carewatch" / "m.py"
    fake.parent.mkdir()
    fake.write_text(source, "utf-8")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert imports_of(fake) == expected
