"""Security checks as tests: SQL only parameterised, no credentials in the repository,
phone numbers masked in the logs a real send path writes, ack links single-use under
concurrency.

Ack links are signed, expiring and single-use per action: tests/test_ack_links.py (HMAC
signature, expiry, tampering, malformed tokens), tests/test_hostile_parsers.py (mutated
tokens never verify) and tests/test_ack_app.py (refused links, replay -> 409) cover them;
what was missing, a replay race, is here.
"""

from __future__ import annotations

import ast
import asyncio
import io
import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from carewatch.logs import JsonFormatter
from carewatch.settings import Settings
from harness.services import free_port
from notifier.ack_links import sign
from notifier.channels.aliyun_sms import AliyunSmsChannel
from notifier.channels.base import Message
from notifier.channels.wecom import WeComChannel
from tests.fake_provider_server import offline_settings, running_fake_providers
from tests.support.ack import running_ack_app
from tests.support.notifier import (
    GRID_WORKER_ID,
    insert_alert,
    notifier_settings,
    query,
    seed_registry,
)
from tests.support.source import parse_source

ROOT = Path(__file__).resolve().parent.parent

# --- SQL only parameterised ------------------------------------------------------------

# SQL statements in string literals (upper-case keywords, as this code base writes SQL).
_SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|"
    r"DATABASE|ROLE|USER|VIEW)|DROP\s+(TABLE|DATABASE|ROLE|INDEX)|ALTER\s+(TABLE|ROLE)|"
    r"TRUNCATE\s|COPY\s+\w+|GRANT\s|WITH\s+\w+\s+AS\s*\()",
    re.DOTALL,
)
ALLOW_MARK = "sql-allow:"
# Text built with string formatting that is known not to carry values, and why.
ALLOWED: dict[tuple[str, str], str] = {}
ALLOWED_PATHS = {
    "infra/grafana/generate.py": (
        "writes the dashboards' SQL at build time from constants in the file, quoted by its"
        " literal(); Grafana runs it as the read-only reader role, no runtime input reaches it"
    ),
}


@dataclass(frozen=True)
class Offender:
    path: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.code}"


def _literal_text(node: ast.AST) -> str:
    """The constant text of a string expression (f-string parts included)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal_text(v) for v in node.values)
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left) + " " + _literal_text(node.right)
    return ""


class _SqlBuildFinder(ast.NodeVisitor):
    """SQL text built by f-string, %, .format() or + from something not constant."""

    def __init__(self, constants: dict[str, str]) -> None:
        self.constants = constants  # module-level NAME = "literal"
        self.found: list[ast.AST] = []

    def _constant(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) or (
            isinstance(node, ast.Name) and node.id in self.constants
        )

    def _is_sql(self, node: ast.AST) -> bool:
        text = _literal_text(node)
        if not text and isinstance(node, ast.Name):
            text = self.constants.get(node.id, "")
        return bool(_SQL.search(text))

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        if any(isinstance(v, ast.FormattedValue) for v in node.values) and self._is_sql(node):
            self.found.append(node)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if (isinstance(node.op, ast.Mod) and self._is_sql(node.left)) or (
            isinstance(node.op, ast.Add)
            and (self._is_sql(node.left) or self._is_sql(node.right))
            and not all(self._constant(side) for side in (node.left, node.right))
        ):
            self.found.append(node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        # str.format on SQL text; psycopg.sql.SQL(...).format(...) composes safely.
        if isinstance(func, ast.Attribute) and func.attr == "format" and self._is_sql(func.value):
            self.found.append(node)
        self.generic_visit(node)


def sql_builds(source: str, path: str) -> Iterator[Offender]:
    tree = parse_source(source)
    lines = source.splitlines()
    constants = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        and isinstance(n.value, ast.Constant)
        and isinstance(n.value.value, str)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    finder = _SqlBuildFinder(constants)
    finder.visit(tree)
    for node in finder.found:
        line = node.lineno  # type: ignore[attr-defined]
        nearby = " ".join(lines[max(0, line - 2) : line])
        code = ast.unparse(node)
        allowed = path in ALLOWED_PATHS or any(p == path and code.startswith(s) for p, s in ALLOWED)
        if allowed or ALLOW_MARK in nearby:
            continue
        yield Offender(path, line, code[:160])


def tracked_python() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


def test_sql_is_only_parameterised() -> None:
    offenders = [o for p in tracked_python() for o in sql_builds((ROOT / p).read_text("utf-8"), p)]
    assert not offenders, (
        "SQL built from variables (use %s parameters or psycopg.sql):\n"
        + "\n".join(map(str, offenders))
    )


def test_the_sql_scan_catches_string_building() -> None:
    bad = """
TABLE_SQL = "SELECT * FROM t WHERE id = "
def f(conn, x, table):
    conn.execute(f"SELECT * FROM t WHERE id = {x}")
    conn.execute("DELETE FROM t WHERE id = %s" % x)
    conn.execute("UPDATE t SET a = {}".format(x))
    conn.execute(TABLE_SQL + x)
    conn.execute(f"TRUNCATE {table}")  # sql-allow: test of the allow mark
"""
    good = """
from psycopg import sql
def f(conn, x, table):
    conn.execute("SELECT * FROM t WHERE id = %s", (x,))
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
    conn.execute("SELECT a " "FROM t")
    log.info(f"selected {x} rows")
"""
    assert [o.line for o in sql_builds(bad, "bad.py")] == [4, 5, 6, 7]
    assert list(sql_builds(good, "good.py")) == []


def test_allowlisted_sql_still_exists() -> None:
    """An allowlist entry whose code is gone would hide the next offender there."""
    for path, code in ALLOWED:
        assert code in (ROOT / path).read_text("utf-8"), (path, code)
    for path in ALLOWED_PATHS:
        assert (ROOT / path).is_file(), path


# --- no credentials in the repository ----------------------------------------------------

# Documented dev-only defaults (docs/security.md): they only work against local fakes.
DEV_DEFAULTS = frozenset(
    {"dev-only-change-me", "dev-only-device-secret", "demo-key-secret", "demo-corp-secret"}
)
_KEY_SHAPES = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "Aliyun AccessKey id": re.compile(r"\bLTAI[0-9A-Za-z]{12,24}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "password in a URL": re.compile(
        r"\b(?:postgres(?:ql)?|redis|mqtts?|amqp|nats)://[^/\s:@]+:[^@\s/]{3,}@"
    ),
}
# A quoted literal given to a secret-named key, e.g. ACCESS_KEY_SECRET = "...".
_ASSIGNED_SECRET = re.compile(
    r"(?i)(password|passwd|secret|api_?key|access_?key|private_?key)[\w\"']*\s*[:=]\s*"
    r"(?:SecretStr\()?[\"']([^\"'\s]{8,})[\"']"
)
# Values that say they are not real: test keys, placeholders, variable references.
_OBVIOUSLY_FAKE = re.compile(
    r"(?i)test|fake|dummy|example|demo|dev-only|change-?me|forged|guess|other|hostile|secret|someone|wrong|"
    r"placeholder|\$\{|<[^>]+>|x{6,}"
)


def secret_findings(path: str, text: str) -> Iterator[tuple[int, str]]:
    """(line, what) of everything that looks like a credential."""

    def line_of(match: re.Match[str]) -> int:
        return text.count("\n", 0, match.start()) + 1

    for name, shape in _KEY_SHAPES.items():
        for match in shape.finditer(text):
            yield line_of(match), f"{path}:{line_of(match)}: {name}: {match.group(0)[:24]}…"
    for match in _ASSIGNED_SECRET.finditer(text):
        value = match.group(2)
        if value not in DEV_DEFAULTS and not _OBVIOUSLY_FAKE.search(value):
            yield line_of(match), f"{path}:{line_of(match)}: {match.group(1)} = {value[:4]}…"


def tracked_text_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [p for p in out.stdout.splitlines() if (ROOT / p).is_file()]


def test_no_credentials_are_tracked() -> None:
    files = tracked_text_files()
    env_files = [p for p in files if Path(p).name.endswith(".env") or Path(p).name == ".env"]
    assert not env_files, f"environment files with real settings are tracked: {env_files}"
    findings: list[str] = []
    for path in files:
        if path == "tests/test_hostile_security.py":
            continue  # the patterns themselves
        raw = (ROOT / path).read_bytes()
        if b"\0" in raw[:8192]:
            continue  # binary
        findings += [
            what for _, what in secret_findings(path, raw.decode("utf-8", errors="replace"))
        ]
    assert not findings, "possible credentials in tracked files:\n" + "\n".join(findings)


def test_the_secret_scan_catches_real_looking_keys() -> None:
    sample = "\n".join(
        (
            "-----BEGIN RSA PRIVATE KEY-----",
            "aliyun_access_key_id = 'LTAI5tQ1w2e3r4t5y6u7'",
            'ACCESS_KEY_SECRET = "Zx81kPq0vY3mN7bT2wQ9"',
            "database_url = 'postgresql://app:hunter2@db/cw'",
            'ack_secret = SecretStr("dev-only-change-me")',  # documented default: fine
            'secret = "test-secret-123"',  # obviously a test key: fine
        )
    )
    assert {line for line, _ in secret_findings("sample", sample)} == {1, 2, 3, 4}


# --- phone numbers masked in the logs ------------------------------------------------------

# An unmasked mainland mobile number (masked, it reads 138****5678).
MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
PHONE = "13812345678"
PARAMS = {
    "elder_name": "张桂英",
    "kind_label": "紧急呼叫",
    "address": "解放碑",
    "time": "08:00",
    "code": "Ab3_x-Yz09Qw",
}


@contextmanager
def json_log_lines() -> Iterator[io.StringIO]:
    """Everything logged in this process meanwhile, as the workers write it (JSON lines)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_phone_numbers_are_masked_in_the_logs_of_the_send_path() -> None:
    message = Message("n-1:sms:0", PHONE, "alert", {**PARAMS, "link": "http://x/ack/t"})
    with json_log_lines() as stream:
        async with (
            running_fake_providers(offline_settings()) as fake,
            httpx.AsyncClient() as client,
        ):
            sms = AliyunSmsChannel(fake.settings, client)
            assert (await sms.send(message)).ok
            await fake.fail("sms", 1, "5xx")
            assert not (await sms.send(message)).ok
            # A wrong key: Aliyun's answer echoes the string to sign, phone number included.
            wrong_key = fake.settings.model_copy(
                update={"aliyun_access_key_secret": SecretStr("wrong-key")}
            )
            refused = await AliyunSmsChannel(wrong_key, client).send(message)
            assert refused.error and "SignatureDoesNotMatch" in refused.error
            # Some organisations use the phone number as the WeCom userid.
            await WeComChannel(fake.settings, client).send(
                Message("n-1:wecom:0", PHONE, "alert", PARAMS)
            )
        # What a careless caller might hand the logger.
        log = logging.getLogger("tests.hostile")
        log.warning(
            "calling %s",
            PHONE,
            extra={
                "to": PHONE,
                "as_number": int(PHONE),
                "notification": message,
                "nested": {"contacts": [f"+86 {PHONE}", {"phone": PHONE}], PHONE: "by number"},
            },
        )
        try:
            raise RuntimeError(f"provider refused {PHONE}")
        except RuntimeError:
            log.exception("send failed")
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(r.get("logger", "").startswith("notifier.channels") for r in records)
    leaks = [line for line in lines if MOBILE.search(line)]
    assert not leaks, "unmasked phone numbers in the logs:\n" + "\n".join(leaks)
    assert "138****5678" in stream.getvalue()


# --- ack links: single use under concurrency ------------------------------------------------


async def test_concurrent_replays_of_one_link_act_once(settings: Settings) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    port = free_port()
    s = notifier_settings(settings, ack_port=port, ack_base_url=f"http://127.0.0.1:{port}")
    future = int(time.time() * 1000) + 3_600_000
    token = sign(alert_id, "grid_worker", GRID_WORKER_ID, future, s.ack_secret.get_secret_value())
    async with running_fake_providers(s) as fake, running_ack_app(fake.settings) as http:
        responses = await asyncio.gather(
            *(http.post(f"/ack/{token}", json={"action": "acknowledge"}) for _ in range(8))
        )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 7, codes
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"replay"}
    events = query(dsn, "SELECT count(*) FROM alert_events WHERE action = 'acknowledged'")
    assert events == [(1,)]
