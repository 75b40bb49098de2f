"""Production mode refuses to start with an empty or default secret; the shipped example
env file starts in development mode and `carewatch db migrate` works with it; the
deployment files run production mode with the secrets the operator supplies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from pydantic import SecretStr, ValidationError

from carewatch.settings import ROOT_SECRET_MIN_CHARS, ROOT_SECRETS, Settings
from harness.services import Databases

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "infra/deploy/carewatch.env.example"
CAREWATCH = str(Path(sys.executable).with_name("carewatch"))

REAL_ENDPOINTS = {
    "aliyun_sms_endpoint": "https://dysmsapi.aliyuncs.com/",
    "wecom_base_url": "https://qyapi.weixin.qq.com",
}
GOOD_SECRETS = {
    "ack_secret": "ack-secret-from-the-operator-0123",
    "mqtt_device_secret": "device-secret-from-the-operator-45",
    "aliyun_access_key_id": "test-operator-key-id",
    "aliyun_access_key_secret": "aliyun-secret-from-the-operator",
    "wecom_corp_id": "ww0123456789abcdef",
    "wecom_corp_secret": "wecom-secret-from-the-operator",
    "wecom_callback_token": "wecom-token-from-the-operator",
    "wecom_encoding_aes_key": "b3BlcmF0b3Itd2Vjb20tZW5jb2RpbmctYWVzLWtleTA",
    "provider_callback_secret": "callback-secret-from-the-operator",
}


def production(**overrides: Any) -> Settings:
    values = {**REAL_ENDPOINTS, **GOOD_SECRETS, **overrides}
    return Settings(_env_file=None, environment="production", **values)  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def no_carewatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CAREWATCH_"):
            monkeypatch.delenv(name)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a `carewatch` process: no CAREWATCH_* but those given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREWATCH_")}
    return {**env, **extra}


def test_production_with_real_secrets_starts() -> None:
    assert production().environment == "production"


@pytest.mark.parametrize("name", sorted(GOOD_SECRETS))
def test_production_refuses_each_empty_or_default_secret(name: str) -> None:
    env = f"CAREWATCH_{name.upper()}"
    default = Settings.model_fields[name].default
    default_text = default.get_secret_value() if isinstance(default, SecretStr) else default
    for bad in ("", "   ", default_text):
        with pytest.raises(ValidationError, match=re.escape(env)) as refused:
            production(**{name: bad})
        # the message names only the setting at fault, and never echoes a secret
        text = str(refused.value)
        assert all(f"CAREWATCH_{n.upper()}" not in text for n in GOOD_SECRETS if n != name)
        assert all(v not in text for v in GOOD_SECRETS.values())


@pytest.mark.parametrize("name", sorted(GOOD_SECRETS))
def test_an_empty_value_in_the_environment_is_refused_too(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `CAREWATCH_ACK_SECRET=` as in the example file: unset, so the dev-only default
    monkeypatch.setenv(f"CAREWATCH_{name.upper()}", "")
    values = {k: v for k, v in {**REAL_ENDPOINTS, **GOOD_SECRETS}.items() if k != name}
    with pytest.raises(ValidationError, match=f"CAREWATCH_{name.upper()}"):
        Settings(_env_file=None, environment="production", **values)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", ["ack_secret", "mqtt_device_secret"])
def test_production_refuses_a_short_root_secret(name: str) -> None:
    with pytest.raises(ValidationError, match=f"CAREWATCH_{name.upper()} is shorter"):
        production(**{name: "x" * (ROOT_SECRET_MIN_CHARS - 1)})
    assert production(**{name: "x" * ROOT_SECRET_MIN_CHARS}).environment == "production"


def test_local_fake_providers_need_no_real_keys() -> None:
    # tests and the demo run the fake providers on loopback with demo keys
    local = {"aliyun_sms_endpoint": "http://127.0.0.1:8090/aliyun-sms/"}
    local["wecom_base_url"] = "http://localhost:8090/wecom"
    roots = {n: GOOD_SECRETS[n] for n in ROOT_SECRETS}
    ok = Settings(_env_file=None, environment="production", **local, **roots)  # type: ignore[call-arg]
    assert ok.aliyun_access_key_id == "demo-key-id"
    with pytest.raises(ValidationError, match="CAREWATCH_ALIYUN_ACCESS_KEY_SECRET"):
        # a provider elsewhere is real, whatever its name
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            environment="production",
            **{**local, "aliyun_sms_endpoint": "http://10.0.0.5:8090/aliyun-sms/"},
            **roots,
        )


def test_development_mode_keeps_the_dev_defaults() -> None:
    dev = Settings(_env_file=None)  # type: ignore[call-arg]
    assert dev.environment == "development"
    assert dev.ack_secret.get_secret_value() == "dev-only-change-me"


def test_the_cli_refuses_with_a_clear_message_naming_the_setting(tmp_path: Path) -> None:
    env = clean_env(
        CAREWATCH_ENVIRONMENT="production",
        CAREWATCH_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        **{f"CAREWATCH_{k.upper()}": v for k, v in {**REAL_ENDPOINTS, **GOOD_SECRETS}.items()},
    )
    env["CAREWATCH_MQTT_DEVICE_SECRET"] = ""
    done = subprocess.run(
        [CAREWATCH, "db", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "CAREWATCH_MQTT_DEVICE_SECRET" in done.stderr
    assert "production refuses to start" in done.stderr
    assert "Traceback" not in done.stderr
    assert GOOD_SECRETS["ack_secret"] not in done.stderr + done.stdout


def example_values() -> dict[str, str]:
    values = {}
    for line in EXAMPLE.read_text("utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_the_example_env_file_loads_in_development_mode() -> None:
    assert "CAREWATCH_ENVIRONMENT" not in example_values()  # systemd and compose set it
    loaded = Settings(_env_file=EXAMPLE)  # type: ignore[call-arg]
    assert loaded.environment == "development"
    assert loaded.wecom_agent_id == Settings.model_fields["wecom_agent_id"].default
    assert loaded.ack_base_url == "https://ack.example.gov.cn"  # the file was read


def test_the_example_env_file_in_production_names_every_missing_secret() -> None:
    """What compose and systemd would do with the example as shipped: refuse."""
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=EXAMPLE, environment="production")  # type: ignore[call-arg]
    for name in GOOD_SECRETS:
        assert f"CAREWATCH_{name.upper()}" in str(refused.value)


def test_db_migrate_works_with_the_example_env_file(tmp_path: Path, databases: Databases) -> None:
    (tmp_path / ".env").write_text(EXAMPLE.read_text("utf-8"), "utf-8")
    name = f"{databases.prefix}_env_example"
    dsn = databases.dsn(name)
    try:
        done = subprocess.run(
            [CAREWATCH, "db", "migrate"],
            cwd=tmp_path,  # the settings read .env from the working directory
            env=clean_env(CAREWATCH_DATABASE_URL=dsn),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert "applied" in done.stdout
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT to_regclass('alerts') IS NOT NULL").fetchone()
        assert row == (True,)
    finally:
        with psycopg.connect(databases.admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_compose_runs_production_and_requires_the_secrets() -> None:
    text = (ROOT / "infra/deploy/docker-compose.yml").read_text("utf-8")
    doc = yaml.safe_load(text)
    workers = {
        n: s for n, s in doc["services"].items() if s.get("image", "").startswith("carewatch:")
    }
    assert workers
    for name, svc in workers.items():
        env = svc["environment"]
        assert env["CAREWATCH_ENVIRONMENT"] == "production", name
        for secret in ("CAREWATCH_ACK_SECRET", "CAREWATCH_MQTT_DEVICE_SECRET"):
            # compose itself refuses to start while the operator has not set it
            assert env[secret] == f"${{{secret}:?set in carewatch.env}}", (name, secret)


def test_systemd_units_run_production() -> None:
    common = ROOT / "infra/deploy/systemd/carewatch-.service.d/10-common.conf"
    lines = common.read_text("utf-8").splitlines()
    env_lines = [ln for ln in lines if ln.startswith("Environment=")]
    assert any("CAREWATCH_ENVIRONMENT=production" in ln.split() for ln in env_lines)


def test_an_empty_text_setting_stays_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    # CAREWATCH_MQTT_SHARE_GROUP= is the documented way to plain subscriptions
    monkeypatch.setenv("CAREWATCH_MQTT_SHARE_GROUP", "")
    monkeypatch.setenv("CAREWATCH_WECOM_AGENT_ID", "")
    loaded = Settings(_env_file=None)  # type: ignore[call-arg]
    assert loaded.mqtt_share_group == ""
    assert loaded.wecom_agent_id == Settings.model_fields["wecom_agent_id"].default
