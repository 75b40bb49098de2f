"""Hostile input to the other parsers: ledger files, ack links, provider answers.

- registry.ledger.parse_ledger on generated CSV (random cells, broken quoting, stray
  bytes) and on garbage XLSX: never raises; every error names file, line, field, reason.
- notifier.ack_links.verify on arbitrary strings and on mutated valid tokens: only
  AckLinkError with a known reason; a mutated token never verifies.
- Provider answers (Aliyun SendSms and QuerySendDetails, WeCom gettoken and
  message/send) with arbitrary status codes and bodies: a SendResult (or the adapter's
  documented query error), never an exception, and never an unmasked phone number in
  the error kept in the outbox. The adapters' full send path is driven over a real
  socket by a scripted HTTP server.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import httpx
import openpyxl
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from carewatch.clock import Clock
from carewatch.settings import Settings
from notifier.ack_links import AckLinkError, AckLinkReason, sign, verify
from notifier.channels.aliyun_sms import (
    AliyunSmsChannel,
    DeliveryQueryError,
    DeliveryReport,
    interpret_details,
    interpret_response,
)
from notifier.channels.base import Message, SendResult
from notifier.channels.wecom import WeComChannel, interpret_reply
from registry.ledger import parse_ledger
from registry.ledger_format import COLUMNS
from tests.support.hostile import RAW_VALUES, json_values

PROPERTY = hsettings(max_examples=200, deadline=None, derandomize=True)
# An unmasked mainland mobile number (the masked form is 138****5678).
MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
PHONE = "13812345678"

# --- ledger ----------------------------------------------------------------------------

PROFILES = ("高龄", "独居", "失能", "认知障碍")
PLAUSIBLE_CELLS = (
    "",
    "E1",
    "E2",
    "G1",
    "GW1",
    "W1",
    "S1",
    "O1",
    "bad id",
    "a" * 65,
    PHONE,
    "+86 138-1234-5678",
    "023-12345678",
    "12345",
    "١٣٨١٢٣٤٥٦٧٨",  # Arabic-Indic digits
    "29.55",
    "106.57",
    "nan",
    "inf",
    "1e400",
    "-91",
    "true",
    "否",
    "08:00",
    "24:00",
    "8:5",
    "community_station",
    "village_point",
    "高龄",
    "pir:P1;door:D1",
    "pir:P1；radar:R1",
    "pir",
    ":",
    ";;",
    "渝中区",
    "解放碑街道",
    "=cmd|' /C calc'!A0",  # spreadsheet formula injection, kept as text
    "\u202e\x00\x7f",
)
cells = st.sampled_from(PLAUSIBLE_CELLS) | st.text(max_size=30)


@st.composite
def ledger_csv(draw: st.DrawFn) -> bytes:
    """A ledger table: a (possibly damaged) header, rows of random cells, maybe raw damage."""
    header = list(COLUMNS[draw(st.sampled_from(tuple(COLUMNS)))])
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(("drop", "duplicate", "unknown", "upper", "blank")))
        i = draw(st.integers(0, len(header) - 1))
        if op == "drop" and len(header) > 1:
            header.pop(i)
        elif op == "duplicate":
            header.append(header[i])
        elif op == "unknown":
            header.insert(i, draw(st.text(max_size=10)))
        elif op == "upper":
            header[i] = f" {header[i].upper()} "
        else:
            header[i] = ""
    rows = draw(
        st.lists(
            st.lists(cells, min_size=0, max_size=len(header) + 2),
            max_size=6,
        )
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    raw = out.getvalue().encode()
    if draw(st.booleans()):
        raw = draw(st.sampled_from((b"\xef\xbb\xbf", b""))) + raw
    damage = draw(st.sampled_from(("none", "none", "quote", "bytes", "truncate", "huge_cell")))
    if damage == "quote":
        raw += b'\n"E9,unterminated'
    elif damage == "bytes":
        i = draw(st.integers(0, len(raw)))
        raw = raw[:i] + draw(st.binary(min_size=1, max_size=4)) + raw[i:]
    elif damage == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif damage == "huge_cell":
        raw += b'\n"' + b"x" * 140_000 + b'"'
    return raw


def check_ledger(name: str, raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        ledger = parse_ledger([path], PROFILES)
    lines = raw.count(b"\n") + raw.count(b"\r") + 1
    for error in ledger.errors:
        assert error.file == str(path)
        assert isinstance(error.line, int) and 0 <= error.line <= lines, error
        assert error.field is None or (isinstance(error.field, str) and error.field), error
        assert isinstance(error.reason, str) and error.reason.strip(), error
        assert str(error)  # printable as the import report prints it
    # No row is dropped silently: each row read became a record or has an error.
    records = len(ledger.stations) + len(ledger.officers) + len(ledger.elders)
    assert ledger.rows_read - records <= len({e.line for e in ledger.errors if e.line >= 2})


ELDERS_HEADER = ",".join(COLUMNS["elders"]).encode()


@PROPERTY
@given(ledger_csv())
@example(ELDERS_HEADER + b'\n"' + b"x" * 140_000 + b'"\n')  # over csv's 128 KiB cell limit
def test_ledger_csv_never_raises_and_errors_are_located(raw: bytes) -> None:
    check_ledger("ledger.csv", raw)


def test_a_damaged_xlsx_sheet_is_a_file_error(tmp_path: Path) -> None:
    """A valid workbook whose sheet XML is cut short fails only while rows are read."""
    good = tmp_path / "good.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(COLUMNS["elders"]))
    for n in range(50):
        sheet.append([f"E{n}", "张桂英", PHONE])
    book.save(good)
    damaged = tmp_path / "damaged.xlsx"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 2]
            dst.writestr(item, data)
    ledger = parse_ledger([damaged], PROFILES)
    assert [(e.line, e.field) for e in ledger.errors if e.line == 0] == [(0, None)]
    assert any("XLSX" in e.reason for e in ledger.errors)


@hsettings(max_examples=50, deadline=None, derandomize=True)
@given(st.binary(max_size=2000))
@example(b"PK\x03\x04" + b"\x00" * 100)
def test_garbage_xlsx_is_a_file_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.xlsx"
        path.write_bytes(raw)
        ledger = parse_ledger([path], PROFILES)
    assert [e.line for e in ledger.errors] == [0]
    assert "XLSX" in ledger.errors[0].reason


# --- ack links -------------------------------------------------------------------------

SECRET = "hostile-test-secret"
NOW = 1_764_000_000_000
REASONS = frozenset(get_args(AckLinkReason))
claims = st.tuples(
    st.text(max_size=40), st.text(max_size=20), st.text(max_size=20), st.integers(NOW + 1, 2**63)
)


def refused(token: str, secret: str = SECRET) -> AckLinkReason:
    with pytest.raises(AckLinkError) as exc:
        verify(token, NOW, secret)
    assert exc.value.reason in REASONS
    return exc.value.reason


@PROPERTY
@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_arbitrary_strings_are_refused_with_a_known_reason(token: str) -> None:
    refused(token)


@PROPERTY
@given(claims)
def test_any_claim_round_trips(claim: tuple[str, str, str, int]) -> None:
    verified = verify(sign(*claim, SECRET), NOW, SECRET)
    assert (verified.alert_id, verified.recipient_kind, verified.recipient_id) == claim[:3]
    assert verified.expires_ms == claim[3]


@st.composite
def mutated(draw: st.DrawFn, token: str) -> str:
    """A token with one edit: substitute, insert, delete, swap case, truncate, extend."""
    chars = list(token)
    i = draw(st.integers(0, len(chars) - 1))
    op = draw(st.sampled_from(("sub", "insert", "delete", "case", "truncate", "extend", "pad")))
    alphabet = st.sampled_from("ABCabc0189-_.=+/% ") | st.characters()
    if op == "sub":
        chars[i] = draw(alphabet.filter(lambda c: c != chars[i]))
    elif op == "insert":
        chars.insert(i, draw(alphabet))
    elif op == "delete":
        chars.pop(i)
    elif op == "case" and chars[i].swapcase() != chars[i]:
        chars[i] = chars[i].swapcase()
    elif op == "truncate":
        chars = chars[:i]
    elif op in ("extend", "pad"):
        chars.append("=" if op == "pad" else draw(alphabet))
    else:
        chars.insert(0, "A")
    return "".join(chars)


@PROPERTY
@given(claims.flatmap(lambda c: st.tuples(st.just(sign(*c, SECRET)), mutated(sign(*c, SECRET)))))
def test_a_mutated_token_never_verifies(pair: tuple[str, str]) -> None:
    token, forged = pair
    assert forged != token
    assert refused(forged) in ("malformed", "bad_signature")


@PROPERTY
@given(claims, st.text(min_size=1, max_size=30))
def test_a_token_of_another_key_never_verifies(
    claim: tuple[str, str, str, int], other: str
) -> None:
    if other != SECRET:
        assert refused(sign(*claim, other)) == "bad_signature"


# --- provider answers, pure --------------------------------------------------------------

status_codes = st.integers(-1, 1000) | st.sampled_from((200, 400, 403, 500, 502, 503))


def provider_json(keys: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Near-valid provider JSON: the documented keys with arbitrary or hostile values."""
    values = st.sampled_from(
        (*RAW_VALUES, '"OK"', "0", json.dumps(f"发送到 {PHONE} 失败"))
    ) | json_values.map(json.dumps)
    return st.lists(st.tuples(st.sampled_from(keys) | st.text(max_size=5), values), max_size=5).map(
        lambda fields: ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields) + "}").encode()
    )


ALIYUN_KEYS = ("Code", "Message", "BizId", "RequestId", "SmsSendDetailDTOs")
WECOM_KEYS = ("errcode", "errmsg", "msgid", "invaliduser", "access_token", "expires_in")
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    provider_json(ALIYUN_KEYS),
    provider_json(WECOM_KEYS),
    st.sampled_from(RAW_VALUES).map(str.encode),
)


def loads_or_none(raw: bytes) -> object:
    """The decoded reply, as the adapter's HTTP layer would hand it on (None: not JSON)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def check_result(result: SendResult) -> None:
    assert isinstance(result, SendResult)
    assert isinstance(result.ok, bool) and isinstance(result.retryable, bool)
    assert result.ok or result.error, result
    if result.error is not None:
        assert not MOBILE.search(result.error), result.error


@PROPERTY
@given(status_codes, bodies)
@example(200, b'{"Code": "13812345678", "Message": "x"}')
@example(200, b"[" * 100_000)
def test_sms_send_answers_map_to_a_send_result(status: int, body: bytes) -> None:
    check_result(interpret_response(status, body))


@PROPERTY
@given(status_codes, bodies)
@example(200, b'{"Code":"OK","SmsSendDetailDTOs":{"SmsSendDetailDTO":[{"SendStatus":"x"}]}}')
@example(200, b'{"Code":"OK","SmsSendDetailDTOs":[1]}')
def test_sms_receipts_map_to_a_report_or_a_query_error(status: int, body: bytes) -> None:
    try:
        report = interpret_details(status, body)
    except DeliveryQueryError as exc:
        assert str(exc)
    else:
        assert report is None or isinstance(report, DeliveryReport)


@PROPERTY
@given(json_values | provider_json(WECOM_KEYS).map(loads_or_none), st.text(max_size=20))
@example({"errcode": [1]}, "u1")
@example({"errcode": 0, "invaliduser": {"a": 1}}, "u1")
@example({"errcode": 40003, "errmsg": f"invalid userid {PHONE}"}, PHONE)
def test_wecom_replies_map_to_a_send_result(reply: object, touser: str) -> None:
    if isinstance(reply, dict):
        check_result(interpret_reply(reply, touser))


# --- provider answers over a real socket ---------------------------------------------------


@dataclass
class ScriptedHttp:
    """A real HTTP/1.1 server that answers each request with the next scripted reply."""

    replies: list[tuple[int, bytes]] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            status, body = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
            writer.write(
                b"HTTP/1.1 %d Scripted\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body), body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _FixedClock(Clock):
    def now_ms(self) -> int:
        return NOW


@contextmanager
def scripted_server() -> Iterator[tuple[asyncio.AbstractEventLoop, ScriptedHttp]]:
    loop = asyncio.new_event_loop()
    script = ScriptedHttp()
    server = loop.run_until_complete(asyncio.start_server(script.handle, "127.0.0.1", 0))
    script.port = server.sockets[0].getsockname()[1]
    try:
        yield loop, script
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


# Status codes an HTTP/1.1 client can be handed as a final answer.
http_statuses = st.integers(200, 599) | st.sampled_from((200, 200, 500))
http_replies = st.tuples(http_statuses, bodies)
MESSAGE = Message(
    "n-1:sms:0",
    PHONE,
    "alert",
    {
        "elder_name": "张桂英",
        "kind_label": "紧急呼叫",
        "address": "解放碑",
        "time": "08:00",
        "link": "http://x/ack/t",
        "code": "Ab3_x-Yz09Qw",
    },
)


def test_channels_turn_any_provider_answer_into_a_send_result() -> None:
    with scripted_server() as (loop, script):
        base = f"http://127.0.0.1:{script.port}"
        settings = Settings(
            aliyun_sms_endpoint=f"{base}/sms/",
            wecom_base_url=f"{base}/wecom",
            provider_timeout_s=5.0,
        )

        async def send_both(token: tuple[int, bytes], answer: tuple[int, bytes]) -> None:
            async with httpx.AsyncClient() as client:
                script.replies = [answer]
                check_result(await AliyunSmsChannel(settings, client, _FixedClock()).send(MESSAGE))
                script.replies = [token, answer, answer]  # gettoken, send (and a retry)
                wecom = WeComChannel(settings, client, _FixedClock())
                check_result(await wecom.send(Message("k", "u1", "alert", MESSAGE.params)))

        @hsettings(
            max_examples=100,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            st.one_of(http_replies, provider_json(WECOM_KEYS).map(lambda b: (200, b))), http_replies
        )
        @example((200, b'{"errcode":0,"access_token":"t","expires_in":"x"}'), (200, b"{}"))
        @example((200, b'{"errcode":0,"access_token":"t"}'), (200, b'{"errcode":[1]}'))
        @example((200, b'{"errcode":0,"access_token":"t"}'), (200, b"[" * 50_000))
        def check(token: tuple[int, bytes], answer: tuple[int, bytes]) -> None:
            loop.run_until_complete(send_both(token, answer))

        check()
