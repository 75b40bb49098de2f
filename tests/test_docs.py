"""Docs that must match the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from carewatch.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_doc_is_generated_from_settings() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    from gen_config_doc import render

    assert (ROOT / "docs/configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: run python tools/gen_config_doc.py"
    )


def test_every_cli_command_has_help() -> None:
    parser = build_parser()
    out = subprocess.run(
        [sys.executable, "-m", "carewatch.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():  # type: ignore[union-attr]
            assert name in out
            assert sub.format_help().strip()


def test_readme_gives_the_test_command_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert "./run test" in readme and "./run test" in ci


def test_production_refuses_default_secrets() -> None:
    import pytest
    from pydantic import ValidationError

    from carewatch.settings import Settings

    with pytest.raises(ValidationError, match="CAREWATCH_ACK_SECRET"):
        Settings(_env_file=None, environment="production")  # type: ignore[call-arg]
    secrets = {
        name: f"real-{name}-from-the-operator"
        for name in (
            "ack_secret",
            "mqtt_device_secret",
            "aliyun_access_key_secret",
            "wecom_corp_secret",
            "provider_callback_secret",
        )
    }
    ok = Settings(_env_file=None, environment="production", **secrets)  # type: ignore[call-arg,arg-type]
    assert ok.environment == "production"


def _flow(name: str) -> list[str]:
    """The paths of the numbered steps under `## {name}` in docs/flows.md."""
    text = (ROOT / "docs/flows.md").read_text("utf-8")
    section = text.split(f"\n## {name}", 1)[1].split("\n## ", 1)[0]
    steps = re.findall(r"^\d+\. `([^`]+)`", section, flags=re.MULTILINE)
    assert steps, f"no steps under {name!r}"
    return steps


def test_flows_name_files_that_exist_and_an_sos_takes_at_most_15() -> None:
    sos = _flow("SOS press")
    fall = _flow("Fall")
    text = (ROOT / "docs/flows.md").read_text("utf-8")
    mentioned = re.findall(r"`([a-z_]+/[a-z_/]+\.py)`", text)
    missing = [p for p in {*sos, *fall, *mentioned} if not (ROOT / p).is_file()]
    assert missing == []
    assert len(sos) == len(set(sos)) <= 15
    assert sos[0].startswith("ingest/") and sos[-1].startswith("notifier/channels/")


# Paths the docs may name that are not in the repository: what the code writes when it
# runs (benchmark results, local state), files an operator makes from a shipped example,
# and the data sets kept next to the repository.
NOT_IN_REPO = (
    "bench/results/",
    "var/",
    "ledger/",  # the operator's own ledger files in the import examples
    "infra/deploy/carewatch.env",  # the untracked copy of carewatch.env.example
    "../shared/",
)
# An absolute path under one of these is a development machine's, not an installed
# location (/etc/..., /opt/..., /usr/...) or a URL route (/api/...), which are not checked.
MACHINE_ROOTS = ("/home/", "/Users/", "/root/", "/work/", "/mnt/")
PATH_ENDINGS = (".py", ".md", ".sql", ".yml", ".yaml", ".json", ".conf", ".toml", ".csv")


def _docs() -> list[Path]:
    return [
        *sorted((ROOT / "docs").rglob("*.md")),
        ROOT / "README.md",
        ROOT / "rules_engine/README.md",
    ]


def _repo_folders() -> set[str]:
    return {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir()
        and (p.name == ".ci" or not p.name.startswith("."))
        and p.name not in {"var", "build", "__pycache__"}
        and not p.name.endswith(".egg-info")
    }


def _backticked_tokens(text: str) -> list[str]:
    """Every whitespace-separated word inside `inline code` and ``` fenced blocks ```."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    spans = [*blocks, *re.findall(r"`([^`\n]+)`", rest)]
    return [word for span in spans for word in re.split(r"[\s=]+", span)]


def _as_path(word: str) -> str:
    """`tests/test_x.py::test_y`, `ingest/pipeline.py:120`, `(harness/),` -> the path."""
    path = word.lstrip("(['\"|").split("::")[0]
    return re.sub(r":\d+$", "", path.rstrip(")],;:.'\"|")).rstrip(":")


def _exists(path: str, doc: Path) -> bool:
    import glob
    import importlib.util

    pattern = re.sub(r"<[^>]*>|\{[^}]*\}", "*", path)
    for base in (ROOT, doc.parent):
        if glob.glob(str(base / pattern)):
            return True
    # a library's source file (e.g. faststream/redis/...): in the installed package
    spec = importlib.util.find_spec(path.split("/")[0])
    locations = list(spec.submodule_search_locations or []) if spec else []
    return any(glob.glob(str(Path(loc).parent / pattern)) for loc in locations)


def _exists_here(path: str, doc: Path) -> bool:
    return (ROOT / path).exists() or (doc.parent / path).exists()


def test_paths_named_in_docs_exist() -> None:
    """A repository path in backticks in docs/ or a README (it has a `/` and ends in .py,
    .md, .sql, .yml, .json, .conf... or starts with a folder of the repository) exists;
    a bare `name.py` exists at the root or beside the doc (else say where it is); no doc
    names an absolute path of a development machine."""
    folders = _repo_folders()
    wrong: list[str] = []
    for doc in _docs():
        for word in _backticked_tokens(doc.read_text("utf-8")):
            path = _as_path(word)
            if "/" not in path and path.endswith(".py") and not _exists_here(path, doc):
                # a module named by its bare file name: the reader cannot find it
                wrong.append(f"{doc.relative_to(ROOT)}: {path} (name it from the repo root)")
                continue
            if "/" not in path or "://" in path or path.startswith(("...", "$")):
                continue
            name = doc.relative_to(ROOT)
            if path.startswith(MACHINE_ROOTS):
                wrong.append(f"{name}: {path} (a development machine's path)")
                continue
            if path.startswith("/") or path.startswith(NOT_IN_REPO):
                continue
            if not (path.endswith(PATH_ENDINGS) or path.split("/")[0] in folders):
                continue
            if not _exists(path, doc):
                wrong.append(f"{name}: {path}")
    assert wrong == [], "\n".join(wrong)


def test_each_adr_has_its_own_number_and_a_line_in_the_index() -> None:
    records = sorted(p.name for p in (ROOT / "docs/adr").glob("[0-9]*.md"))
    numbers = [name.split("-", 1)[0] for name in records]
    assert len(numbers) == len(set(numbers)), records
    index = (ROOT / "docs/adr/README.md").read_text("utf-8")
    assert [name for name in records if f"({name})" not in index] == []
    for name in records:
        title = (ROOT / "docs/adr" / name).read_text("utf-8").splitlines()[0]
        assert title.startswith(f"# ADR {name.split('-', 1)[0]}:"), (name, title)
