"""Docs that must match the code."""

from __future__ import annotations

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
        name: f"real-{name}"
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
