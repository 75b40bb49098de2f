"""Codecs of the operators' IoT platform pushes (CTWing, OneNET), pure.

CTWing (China Telecom AEP) subscription push: an HTTP POST with one JSON message::

    {"messageType": "dataReport", "tenantId": "...", "productId": "15000001",
     "deviceId": "150000018600000000001", "IMEI": "860000000000001",
     "timestamp": 1717000000000, "upPacketSN": 17,
     "payload": {"serviceId": "smoke_alarm", "smoke_state": 1, "battery_value": 87}}
    payload may instead be {"APPdata": "<base64 of the device's bytes>"} (JSON inside)
    {"messageType": "eventReport", ..., "eventType": 1, "eventContent": {...}}
    {"messageType": "deviceOnlineOfflineReport", ..., "eventType": 1}   (1 on, 0 off)

OneNET (China Mobile) HTTP push: URL verification GET ?msg=&nonce=&signature= answered
by echoing msg when signature == Base64(MD5(token + nonce + msg)); data POST::

    {"msg": {"type": 1, "dev_id": 2016617, "ds_id": "smoke", "at": 1717000000000,
             "value": 1},
     "msg_signature": "<Base64(MD5(token + nonce + msg as sent))>", "nonce": "abcdefgh"}

`msg` may be one object or a list; type 1 is a datapoint, 2 a device going on/offline,
7 a command result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import msgspec

from gateways.translate import text_discriminator


class PushError(ValueError):
    """A push that cannot be used; `reason` is the counted label (and dead-letter reason)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class PlatformMessage:
    """What a push says about one device, before the product's field mapping."""

    ids: tuple[str, ...]  # ids to look the device up by, best first (IMEI, platform id)
    time_ms: int
    discriminator: int  # with time_ms, the same for a retried push (translate.seq_for)
    fields: dict[str, object]  # field -> value, mapped through gateways.products
    online: bool | None = None  # set by on/offline reports
    kind: str = ""  # counted label: dataReport, eventReport, datapoint, ...


_any = msgspec.json.Decoder(dict[str, Any])


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        return _any.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PushError("malformed_json", str(exc)[:200]) from None


def _ms(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PushError("schema_invalid", f"{what} is not a number: {value!r}"[:200])
    ms = int(value)
    if not 1_000_000_000_000 <= ms <= 10_000_000_000_000:
        raise PushError("schema_invalid", f"{what} {ms} is not epoch milliseconds")
    return ms


def _ids(message: dict[str, Any], *names: str) -> tuple[str, ...]:
    found = tuple(str(message[n]) for n in names if message.get(n) not in (None, ""))
    if not found:
        raise PushError("schema_invalid", f"none of {', '.join(names)} given")
    return found


def _ctwing_fields(payload: object) -> dict[str, object]:
    if not isinstance(payload, dict):
        raise PushError("schema_invalid", "payload is not an object")
    if "APPdata" in payload:
        try:
            inner = base64.b64decode(str(payload["APPdata"]), validate=True)
        except (binascii.Error, ValueError):
            raise PushError("schema_invalid", "APPdata is not base64") from None
        try:
            decoded = msgspec.json.decode(inner)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise PushError(
                "schema_invalid", f"APPdata of {len(inner)} bytes is not JSON"
            ) from None
        if not isinstance(decoded, dict):
            raise PushError("schema_invalid", "APPdata JSON is not an object")
        payload = decoded
    return {str(k): v for k, v in payload.items() if k != "serviceId"}


def decode_ctwing(raw: bytes) -> PlatformMessage:
    message = _json_object(raw)
    kind = message.get("messageType")
    ids = _ids(message, "IMEI", "deviceId")
    time_ms = _ms(message.get("timestamp"), "timestamp")
    if kind == "dataReport":
        sn = message.get("upPacketSN")
        if isinstance(sn, bool) or not isinstance(sn, int) or sn < 0:
            raise PushError("schema_invalid", f"upPacketSN {sn!r} is not a packet number")
        return PlatformMessage(ids, time_ms, sn, _ctwing_fields(message.get("payload")), kind=kind)
    if kind == "eventReport":
        content = message.get("eventContent")
        if not isinstance(content, dict):
            raise PushError("schema_invalid", "eventContent is not an object")
        discriminator = text_discriminator(f"{message.get('eventType')}:{sorted(content.items())}")
        return PlatformMessage(
            ids, time_ms, discriminator, {str(k): v for k, v in content.items()}, kind=kind
        )
    if kind == "deviceOnlineOfflineReport":
        state = message.get("eventType")
        if state not in (0, 1):
            raise PushError("schema_invalid", f"eventType {state!r} is neither 0 nor 1")
        return PlatformMessage(ids, time_ms, 249, {}, online=state == 1, kind=kind)
    raise PushError("schema_invalid", f"messageType {str(kind)[:40]!r} is not handled")


# ---------------------------------------------------------------------------------
# OneNET
# ---------------------------------------------------------------------------------


def onenet_signature(token: str, nonce: str, msg: str | bytes) -> str:
    """Base64(MD5(token + nonce + msg))."""
    data = token.encode() + nonce.encode() + (msg if isinstance(msg, bytes) else msg.encode())
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def onenet_verified(token: str, nonce: str, msg: str | bytes, signature: str) -> bool:
    return hmac.compare_digest(onenet_signature(token, nonce, msg), signature)


class _OneNetBody(msgspec.Struct):
    msg: msgspec.Raw
    msg_signature: str = ""
    nonce: str = ""


_body = msgspec.json.Decoder(_OneNetBody)


def onenet_body(raw: bytes) -> tuple[bytes, str, str]:
    """(msg exactly as sent, msg_signature, nonce) of a data POST; raises PushError."""
    try:
        body = _body.decode(raw)
    except msgspec.ValidationError as exc:
        raise PushError("schema_invalid", str(exc)[:200]) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PushError("malformed_json", str(exc)[:200]) from None
    return bytes(body.msg), body.msg_signature, body.nonce


def decode_onenet(msg: bytes) -> list[PlatformMessage]:
    """The messages of one (verified) `msg`: an object or a list of them."""
    try:
        value = msgspec.json.decode(msg)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise PushError("malformed_json", str(exc)[:200]) from None
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise PushError("schema_invalid", "msg item is not an object")
        kind = item.get("type")
        ids = _ids(item, "imei", "dev_id")
        time_ms = _ms(item.get("at"), "at")
        if kind == 1:
            ds_id = item.get("ds_id")
            if not isinstance(ds_id, str) or not ds_id:
                raise PushError("schema_invalid", "datapoint without ds_id")
            out.append(
                PlatformMessage(
                    ids,
                    time_ms,
                    text_discriminator(ds_id),
                    {ds_id: item.get("value")},
                    kind="datapoint",
                )
            )
        elif kind == 2:
            status = item.get("status")
            if status not in (0, 1):
                raise PushError("schema_invalid", f"status {status!r} is neither 0 nor 1")
            out.append(PlatformMessage(ids, time_ms, 249, {}, online=status == 1, kind="online"))
        elif kind == 7:
            out.append(PlatformMessage(ids, time_ms, 0, {}, kind="command_result"))
        else:
            raise PushError("schema_invalid", f"type {str(kind)[:20]!r} is not handled")
    return out
