"""Fuzz targets: one function per parser, `fuzz_one(data: bytes) -> None`.

A target raises only when it finds a bug: an exception the parser must not let out, or
a result that breaks its contract (the same contracts tests/test_hostile_*.py check).
`python -m fuzz.run TARGET --seconds N` runs one (see docs/security.md).
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import httpx
from starlette.requests import Request

from carewatch import topics
from carewatch.db.registry import DeviceInfo
from carewatch.messages import decode_event, encode
from gateways import iw, watch3g
from gateways.platforms import PushError, decode_ctwing, decode_onenet, onenet_body
from ingest.validate import Accepted, Rejection, RejectReason, validate
from notifier import ack_app
from notifier.ack_links import AckLinkError, AckLinkReason, sign, verify
from notifier.channels.aliyun_sms import (
    DeliveryQueryError,
    DeliveryReport,
    interpret_details,
    interpret_response,
)
from notifier.channels.base import SendResult
from notifier.channels.wecom import errcode_of, interpret_reply
from registry.ledger import parse_ledger

Target = Callable[[bytes], None]
MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
NOW_MS = 1_764_000_000_000

# --- ingest.validate -------------------------------------------------------------------

_REGISTRY = {"W1": DeviceInfo("W1", "E1", "wristband"), "D1": DeviceInfo("D1", "E1", "door")}
_TOPICS = [topics.topic(d, k) for d in ("W1", "D1", "X9") for k in (*topics.UPLINK_KINDS, "cmd")]
_REASONS = frozenset(get_args(RejectReason))


def fuzz_validate(data: bytes) -> None:
    """First byte picks a topic (or, past the list, the rest is split into topic + payload)."""
    if not data:
        return
    pick, rest = data[0], data[1:]
    if pick < len(_TOPICS):
        topic_name, payload = _TOPICS[pick], rest
    else:
        head, _, payload = rest.partition(b"\n")
        topic_name = head.decode("utf-8", errors="replace")
    result = validate(topic_name, payload, _REGISTRY, received_ms=NOW_MS, max_payload_bytes=65536)
    if isinstance(result, Rejection):
        assert result.reason in _REASONS and result.detail, result
        return
    assert isinstance(result, Accepted)
    assert decode_event(encode(result.event)) == result.event
    if result.row is not None:
        json.loads(result.row.data, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> object:
    raise AssertionError(f"stored JSON holds {name}")


# --- registry.ledger -----------------------------------------------------------------------

_LEDGER_DIR = Path(tempfile.mkdtemp(prefix="cw-fuzz-ledger-"))
_ELDER_HEADER = (
    b"elder_id,name,phone,district,street,address,lat,lon,grid_id,grid_name,grid_worker_id,"
    b"grid_worker_name,grid_worker_phone,grid_worker_wecom,care_profile,lives_alone,"
    b"wristband_id,sensors,contact1_name,contact1_relation,contact1_phone,contact1_wecom\n"
)


def fuzz_ledger(data: bytes) -> None:
    """First byte: 0 CSV as is, 1 CSV under the elders' header, 2 XLSX bytes."""
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    path = _LEDGER_DIR / ("ledger.xlsx" if mode == 2 else "ledger.csv")
    path.write_bytes(_ELDER_HEADER + rest if mode == 1 else rest)
    ledger = parse_ledger([path], ("高龄", "独居"))
    for error in ledger.errors:
        assert error.line >= 0 and error.reason.strip(), error
        assert error.field is None or error.field, error


# --- notifier.ack_links ---------------------------------------------------------------------

_SECRET = "fuzz-secret"  # noqa: S105 - a throwaway key, only for signing fuzz input
_LINK_REASONS = frozenset(get_args(AckLinkReason))
_GOOD = sign("8a6e0804-2bd0-4672-b79d-d97027f9c1c4", "grid_worker", "GW1", NOW_MS + 1, _SECRET)


def fuzz_ack_link(data: bytes) -> None:
    """Arbitrary tokens, and the valid token with the input spliced in."""
    token = data.decode("utf-8", errors="replace")
    if data[:1] == b"\x00" and len(data) > 2:  # splice into the good token
        at = data[1] % len(_GOOD)
        token = _GOOD[:at] + data[2:].decode("latin-1") + _GOOD[at:]
    try:
        claim = verify(token, NOW_MS, _SECRET)
    except AckLinkError as exc:
        assert exc.reason in _LINK_REASONS
    else:
        assert token == _GOOD, f"a token other than the signed one verified: {token!r} ({claim})"


# --- notifier.ack_app request body ------------------------------------------------------------

_CONTENT_TYPES = (
    b"application/json",
    b"application/x-www-form-urlencoded",
    b"text/plain",
    b"multipart/form-data; boundary=x",
)


def fuzz_ack_body(data: bytes) -> None:
    """The POST body parser of the ack page: any body gives a dict of string fields."""
    if not data:
        return
    content_type = _CONTENT_TYPES[data[0] % len(_CONTENT_TYPES)]
    body = data[1:]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/ack/x",
        "headers": [(b"content-type", content_type)],
        "query_string": b"",
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    fields = asyncio.run(ack_app._read_form(Request(scope, receive)))
    assert isinstance(fields, dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


# --- provider answers ------------------------------------------------------------------------


def _check_result(result: SendResult) -> None:
    assert isinstance(result, SendResult)
    assert result.ok or result.error
    assert result.error is None or not MOBILE.search(result.error), result.error


def _status_and_body(data: bytes) -> tuple[int, bytes]:
    if len(data) < 2:
        return 200, data
    return int.from_bytes(data[:2], "big") % 1000, data[2:]


def fuzz_sms_response(data: bytes) -> None:
    status, body = _status_and_body(data)
    _check_result(interpret_response(status, body))
    try:
        report = interpret_details(status, body)
    except DeliveryQueryError:
        return
    assert report is None or isinstance(report, DeliveryReport)


def fuzz_wecom_reply(data: bytes) -> None:
    status, body = _status_and_body(data)
    response = httpx.Response(max(status, 100), content=body)
    try:
        reply = response.json()
    except (ValueError, RecursionError):
        return  # the adapter turns these into a retryable error before interpreting
    if isinstance(reply, dict):
        errcode_of(reply)
        _check_result(interpret_reply(reply, "u1"))


# --- gateways: watch frames and platform pushes -----------------------------------------

_GATEWAY_REASONS = frozenset(
    {"bad_escape", "bad_header", "bad_keyword", "bad_position", "not_ascii", "bad_login",
     "bad_heartbeat"}
)  # fmt: skip


def fuzz_watch_frames(data: bytes) -> None:
    """A TCP stream of the 3G watch protocol, cut where the first byte says."""
    cut = data[0] if data else 0
    splitter = watch3g.FrameSplitter(max_frame=1024)
    frames: list[bytes] = []
    for chunk in (data[1 : 1 + cut], data[1 + cut :]):
        got, rejects = splitter.feed(chunk)
        assert set(rejects) <= {"garbage", "truncated", "oversized"}, rejects
        frames += got
    assert splitter.buffered <= 1024
    for raw in frames:
        try:
            frame = watch3g.parse_frame(raw)
            watch3g.decode(frame)
        except watch3g.FrameError as exc:
            assert exc.reason in _GATEWAY_REASONS, exc
            continue
        reply = watch3g.reply(frame, "LK")
        assert watch3g.parse_frame(reply[1:-1]).keyword == "LK"


def fuzz_iw_frames(data: bytes) -> None:
    splitter = iw.IwSplitter(max_frame=1024)
    frames, rejects = splitter.feed(data)
    assert set(rejects) <= {"garbage", "truncated", "oversized"}, rejects
    for raw in frames:
        try:
            iw.decode(iw.parse_frame(raw))
        except watch3g.FrameError as exc:
            assert exc.reason in _GATEWAY_REASONS, exc


def fuzz_platform_push(data: bytes) -> None:
    """First byte even: a CTWing push body; odd: a OneNET push body."""
    if not data:
        return
    try:
        if data[0] % 2 == 0:
            decode_ctwing(data[1:])
        else:
            msg, _, _ = onenet_body(data[1:])
            decode_onenet(msg)
    except PushError as exc:
        assert exc.reason in {"malformed_json", "schema_invalid"} and exc.detail, exc


TARGETS: dict[str, Target] = {
    "watch_frames": fuzz_watch_frames,
    "iw_frames": fuzz_iw_frames,
    "platform_push": fuzz_platform_push,
    "validate": fuzz_validate,
    "ledger": fuzz_ledger,
    "ack_link": fuzz_ack_link,
    "ack_body": fuzz_ack_body,
    "sms_response": fuzz_sms_response,
    "wecom_reply": fuzz_wecom_reply,
}

# Valid inputs to start mutating from (libFuzzer and the plain runner both use them).
SEEDS: dict[str, list[bytes]] = {
    "watch_frames": [
        b"\x10[3G*8800000001*000A*LK,50,0,95][3G*8800000001*0002*LK]",
        b"\x20[3G*8809008845*00C0*AL,271219,094744,V,00.000000,N,0.0000000,E,0.00,0.0,0.0,0,"
        b"100,81,0,0,00010000,7,0,460,0,9336,3981,141]",
        b"\x05[ZJ*014111001332708*0075*0007*BLOOD,109,68][3G*1*0006*TK,}\x01}\x05]",
    ],
    "iw_frames": [
        b"IWAP00353456789012345#IWAP03,06000908000102,5555,30#IWAPHT,60,130,85#",
        b"IWAP10080524A2232.9806N11404.9355E000.1061830323.8706000908000502,460,0,9520,3671,"
        b"01,zh-cn,00#",
    ],
    "platform_push": [
        b"\x00" + b'{"messageType":"dataReport","IMEI":"860000000000001","timestamp":1717000000000,'
        b'"upPacketSN":17,"payload":{"smoke_state":1}}',
        b"\x00"
        + b'{"messageType":"deviceOnlineOfflineReport","deviceId":"d1","timestamp":1717000000000,'
        b'"eventType":1}',
        b"\x01"
        + b'{"msg":{"type":1,"dev_id":2016617,"ds_id":"smoke","at":1717000000000,"value":1},'
        b'"msg_signature":"x","nonce":"abcd"}',
    ],
    "validate": [
        bytes([0]) + b'{"v":1,"seq":1,"ts":1764000000000,"hr":72,"battery":80}',
        bytes([0])
        + b'{"v":1,"seq":2,"ts":1764000000000,"accel":{"hz":50,"x":[0.1],"y":[0],"z":[1]}}',
        bytes([1]) + b'{"v":1,"seq":3,"ts":1764000000000,"type":"sos"}',
        bytes([2]) + b'{"v":1,"state":"online","seq":4,"ts":1764000000000,"battery":90}',
        bytes([200])
        + b"cw/v1/dev/W1/event\n"
        + b'{"v":1,"seq":5,"ts":1764000000000,"type":"fall"}',
    ],
    "ledger": [
        b"\x01E1,\xe5\xbc\xa0\xe6\xa1\x82\xe8\x8b\xb1,13812345678,\xe6\xb8\x9d\xe4\xb8\xad\xe5\x8c\xba,"
        b"\xe8\xa7\xa3\xe6\x94\xbe\xe7\xa2\x91,x,29.55,106.57,G1,g,GW1,w,13912345678,gw1,"
        b"\xe9\xab\x98\xe9\xbe\x84,true,W1,pir:P1;door:D1,a,\xe5\xad\x90,13700000000,\n",
        b"\x00station_id,name,kind,district,street,lat,lon,phone,wecom_userid,staffed,duty_start,"
        b"duty_end\nS1,s,community_station,d,s,29.5,106.5,023-12345678,,true,08:00,20:00\n",
        b"\x02PK\x03\x04",
    ],
    "ack_link": [_GOOD.encode(), b"\x00\x05x", b"a.b"],
    "ack_body": [b"\x00" + b'{"action":"acknowledge"}', b"\x01action=arrive", b"\x02"],
    "sms_response": [
        b"\x00\xc8" + b'{"Code":"OK","BizId":"1","Message":"OK"}',
        b"\x00\xc8" + b'{"Code":"OK","SmsSendDetailDTOs":{"SmsSendDetailDTO":[{"SendStatus":3}]}}',
        b"\x01\x90" + b'{"Code":"isv.MOBILE_NUMBER_ILLEGAL","Message":"x"}',
    ],
    "wecom_reply": [
        b"\x00\xc8" + b'{"errcode":0,"errmsg":"ok","msgid":"m"}',
        b"\x00\xc8" + b'{"errcode":0,"invaliduser":"u1"}',
        b"\x00\xc8" + b'{"errcode":40014,"errmsg":"invalid access_token"}',
    ],
}
