"""MQTT v5 wire format for ingest's subscriber and the benchmark publisher (no I/O).

Only what a QoS 0/1 client needs (OASIS MQTT 5.0):
- encode: CONNECT, SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PUBACK, PINGREQ, DISCONNECT;
- decode (what a server sends to such a client): CONNACK, PUBLISH, PUBACK, SUBACK,
  UNSUBACK, PINGRESP, DISCONNECT.

`Decoder.feed` takes the bytes as they come off the socket and returns every complete
packet in them; an incomplete packet is kept until the rest has arrived (its chunks are
joined once, when enough bytes are there, so a large packet split in many reads costs
linear time). Anything malformed, unexpected from a server, or unsupported (QoS 2: we
only ever subscribe at QoS 1, so a QoS 2 PUBLISH means a broken server) raises
`ProtocolError`: the caller closes the connection, as the spec asks (4.13). No other
exception escapes the decoder (tests/test_mqtt_wire.py checks this on random bytes).

PUBLISH is the hot path: its decoding is inlined in the feed loop and reads the topic,
packet id and payload by index and slice, without per-packet property objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Control packet types (fixed header, high nibble).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

# Reason codes used when we close a connection ourselves.
NORMAL_DISCONNECTION = 0x00
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
QOS_NOT_SUPPORTED = 0x9B

MAX_REMAINING_LENGTH = 268_435_455  # 4-byte variable byte integer

REASON_NAMES: dict[int, str] = {
    0x00: "success",
    0x01: "granted QoS 1",
    0x02: "granted QoS 2",
    0x04: "disconnect with will message",
    0x10: "no matching subscribers",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def reason_name(code: int) -> str:
    return REASON_NAMES.get(code, f"reason code 0x{code:02x}")


class ProtocolError(Exception):
    """The peer sent something we cannot or must not accept: close the connection.

    `reason_code` is what to put in our DISCONNECT (malformed packet, protocol error,
    QoS not supported).
    """

    def __init__(self, message: str, reason_code: int = MALFORMED_PACKET) -> None:
        super().__init__(message)
        self.reason_code = reason_code


# --- properties (MQTT 5.0, 2.2.2.2) -------------------------------------------------

# Property identifiers we read by name.
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

# Value encodings.
_BYTE, _TWO, _FOUR, _VARINT, _UTF8, _BINARY, _PAIR = range(7)

PROPERTY_TYPES: dict[int, int] = {
    PAYLOAD_FORMAT_INDICATOR: _BYTE,
    MESSAGE_EXPIRY_INTERVAL: _FOUR,
    CONTENT_TYPE: _UTF8,
    RESPONSE_TOPIC: _UTF8,
    CORRELATION_DATA: _BINARY,
    SUBSCRIPTION_IDENTIFIER: _VARINT,
    SESSION_EXPIRY_INTERVAL: _FOUR,
    ASSIGNED_CLIENT_IDENTIFIER: _UTF8,
    SERVER_KEEP_ALIVE: _TWO,
    AUTHENTICATION_METHOD: _UTF8,
    AUTHENTICATION_DATA: _BINARY,
    REQUEST_PROBLEM_INFORMATION: _BYTE,
    WILL_DELAY_INTERVAL: _FOUR,
    REQUEST_RESPONSE_INFORMATION: _BYTE,
    RESPONSE_INFORMATION: _UTF8,
    SERVER_REFERENCE: _UTF8,
    REASON_STRING: _UTF8,
    RECEIVE_MAXIMUM: _TWO,
    TOPIC_ALIAS_MAXIMUM: _TWO,
    TOPIC_ALIAS: _TWO,
    MAXIMUM_QOS: _BYTE,
    RETAIN_AVAILABLE: _BYTE,
    USER_PROPERTY: _PAIR,
    MAXIMUM_PACKET_SIZE: _FOUR,
    WILDCARD_SUBSCRIPTION_AVAILABLE: _BYTE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE: _BYTE,
    SHARED_SUBSCRIPTION_AVAILABLE: _BYTE,
}

# Which properties a server may send in each packet (spec table 2-4). Topic Alias is
# left out of PUBLISH on purpose: we never send a Topic Alias Maximum, so the server
# must not use aliases (3.1.2.11.5); one arriving is a protocol error.
_ALLOWED: dict[int, frozenset[int]] = {
    CONNACK: frozenset(
        {
            SESSION_EXPIRY_INTERVAL,
            ASSIGNED_CLIENT_IDENTIFIER,
            SERVER_KEEP_ALIVE,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            RESPONSE_INFORMATION,
            SERVER_REFERENCE,
            REASON_STRING,
            RECEIVE_MAXIMUM,
            TOPIC_ALIAS_MAXIMUM,
            MAXIMUM_QOS,
            RETAIN_AVAILABLE,
            USER_PROPERTY,
            MAXIMUM_PACKET_SIZE,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            SHARED_SUBSCRIPTION_AVAILABLE,
        }
    ),
    PUBLISH: frozenset(
        {
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            SUBSCRIPTION_IDENTIFIER,
            USER_PROPERTY,
        }
    ),
    PUBACK: frozenset({REASON_STRING, USER_PROPERTY}),
    SUBACK: frozenset({REASON_STRING, USER_PROPERTY}),
    UNSUBACK: frozenset({REASON_STRING, USER_PROPERTY}),
    DISCONNECT: frozenset(
        {SESSION_EXPIRY_INTERVAL, SERVER_REFERENCE, REASON_STRING, USER_PROPERTY}
    ),
}
# Properties that may appear more than once in a packet (all others at most once).
_REPEATABLE = frozenset({USER_PROPERTY, SUBSCRIPTION_IDENTIFIER})

PropertyValue = int | str | bytes | list[int] | list[tuple[str, str]]
Properties = dict[int, PropertyValue]

_PACKET_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}


def packet_name(kind: int) -> str:
    return _PACKET_NAMES.get(kind, f"reserved packet type {kind}")


# --- decoded packets --------------------------------------------------------------


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int  # 0 for QoS 0
    dup: bool = False
    retain: bool = False


@dataclass(slots=True)
class ConnAck:
    session_present: bool
    reason_code: int
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class SubAck:
    packet_id: int
    reason_codes: list[int]
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class UnsubAck:
    packet_id: int
    reason_codes: list[int]  # 0x00 removed, 0x11 there was no such subscription
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class PubAck:
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class PingResp:
    pass


@dataclass(slots=True)
class Disconnect:
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


Packet = Publish | ConnAck | SubAck | UnsubAck | PubAck | PingResp | Disconnect


# --- primitives -------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, position after it). Returns (-1, pos) if `end` comes first (more bytes
    may still arrive); raises ProtocolError for a 5th byte or a non-minimal encoding."""
    value = 0
    shift = 0
    start = pos
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and pos - start > 1:
                raise ProtocolError("variable byte integer not minimally encoded")
            return value, pos
        shift += 7
        if shift == 28:
            raise ProtocolError("variable byte integer longer than 4 bytes")
    return -1, start


def _utf8(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT string longer than 65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


def _binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("MQTT binary data longer than 65535 bytes")
    return len(value).to_bytes(2, "big") + value


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def _read_string(data: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    raw, pos = _read_binary(data, pos, end, what)
    try:
        return raw.decode(), pos
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not valid UTF-8") from None


def _read_binary(data: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    if pos + 2 > end:
        raise ProtocolError(f"{what}: length runs past the packet")
    stop = pos + 2 + (data[pos] << 8 | data[pos + 1])
    if stop > end:
        raise ProtocolError(f"{what} runs past the packet")
    return data[pos + 2 : stop], stop


def _read_properties(data: bytes, pos: int, end: int, kind: int) -> tuple[Properties, int]:
    """Decode a property list; every known property is checked and skipped by its type."""
    length, pos = decode_varint(data, pos, end)
    if length < 0:
        raise ProtocolError(f"{packet_name(kind)}: property length runs past the packet")
    stop = pos + length
    if stop > end:
        raise ProtocolError(f"{packet_name(kind)}: properties run past the packet")
    allowed = _ALLOWED[kind]
    props: Properties = {}
    while pos < stop:
        ident, pos = decode_varint(data, pos, stop)
        if ident < 0:
            raise ProtocolError(f"{packet_name(kind)}: truncated property identifier")
        kind_of_value = PROPERTY_TYPES.get(ident)
        if kind_of_value is None:
            raise ProtocolError(f"{packet_name(kind)}: unknown property identifier 0x{ident:02x}")
        if ident not in allowed:
            raise ProtocolError(
                f"{packet_name(kind)}: property 0x{ident:02x} not allowed in this packet",
                PROTOCOL_ERROR,
            )
        value: int | str | bytes | tuple[str, str]
        if kind_of_value == _BYTE:
            if pos + 1 > stop:
                raise ProtocolError(f"property 0x{ident:02x} runs past the properties")
            value = data[pos]
            pos += 1
        elif kind_of_value == _TWO:
            if pos + 2 > stop:
                raise ProtocolError(f"property 0x{ident:02x} runs past the properties")
            value = data[pos] << 8 | data[pos + 1]
            pos += 2
        elif kind_of_value == _FOUR:
            if pos + 4 > stop:
                raise ProtocolError(f"property 0x{ident:02x} runs past the properties")
            value = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
        elif kind_of_value == _VARINT:
            value, pos = decode_varint(data, pos, stop)
            if value < 0:
                raise ProtocolError(f"property 0x{ident:02x} runs past the properties")
        elif kind_of_value == _UTF8:
            value, pos = _read_string(data, pos, stop, f"property 0x{ident:02x}")
        elif kind_of_value == _BINARY:
            value, pos = _read_binary(data, pos, stop, f"property 0x{ident:02x}")
        else:
            name, pos = _read_string(data, pos, stop, "user property name")
            text, pos = _read_string(data, pos, stop, "user property value")
            value = (name, text)
        if ident in _REPEATABLE:
            props.setdefault(ident, []).append(value)  # type: ignore[union-attr, arg-type]
        elif ident in props:
            raise ProtocolError(
                f"{packet_name(kind)}: property 0x{ident:02x} appears twice", PROTOCOL_ERROR
            )
        else:
            props[ident] = value  # type: ignore[assignment]
    return props, stop


# --- encoders ---------------------------------------------------------------------


def _properties(props: list[tuple[int, int]]) -> bytes:
    """Encode integer-valued properties (all a client of ours sends)."""
    body = bytearray()
    for ident, value in props:
        body += encode_varint(ident)
        size = {_BYTE: 1, _TWO: 2, _FOUR: 4}[PROPERTY_TYPES[ident]]
        body += value.to_bytes(size, "big")
    return encode_varint(len(body)) + bytes(body)


def encode_connect(
    client_id: str,
    *,
    clean_start: bool,
    keepalive_s: int,
    username: str | None = None,
    password: str | None = None,
    session_expiry_s: int | None = None,
    receive_maximum: int | None = None,
) -> bytes:
    flags = 0x02 if clean_start else 0
    payload = _utf8(client_id)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
    if password is not None:
        flags |= 0x40
        payload += _binary(password.encode())
    props: list[tuple[int, int]] = []
    if session_expiry_s is not None:
        props.append((SESSION_EXPIRY_INTERVAL, session_expiry_s))
    if receive_maximum is not None:
        if not 1 <= receive_maximum <= 0xFFFF:
            raise ValueError(f"receive maximum out of range: {receive_maximum}")
        props.append((RECEIVE_MAXIMUM, receive_maximum))
    header = b"\x00\x04MQTT\x05" + bytes((flags,)) + keepalive_s.to_bytes(2, "big")
    return _packet(CONNECT << 4, header + _properties(props) + payload)


def encode_subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE with default options (no-local off, retain-as-published off, send retained)."""
    if not 1 <= packet_id <= 0xFFFF or not filters:
        raise ValueError("SUBSCRIBE needs a packet id in 1..65535 and at least one filter")
    body = packet_id.to_bytes(2, "big") + b"\x00"
    for topic_filter, qos in filters:
        body += _utf8(topic_filter) + bytes((qos & 0x03,))
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def encode_unsubscribe(packet_id: int, filters: list[str]) -> bytes:
    if not 1 <= packet_id <= 0xFFFF or not filters:
        raise ValueError("UNSUBSCRIBE needs a packet id in 1..65535 and at least one filter")
    body = packet_id.to_bytes(2, "big") + b"\x00"
    for topic_filter in filters:
        body += _utf8(topic_filter)
    return _packet(UNSUBSCRIBE << 4 | 0x02, body)


def encode_publish(
    topic: str, payload: bytes, qos: int = 0, packet_id: int = 0, *, retain: bool = False
) -> bytes:
    if qos not in (0, 1):
        raise ValueError("only QoS 0 and 1 are supported")
    body = _utf8(topic)
    if qos:
        if not 1 <= packet_id <= 0xFFFF:
            raise ValueError("a QoS 1 PUBLISH needs a packet id in 1..65535")
        body += packet_id.to_bytes(2, "big")
    body += b"\x00" + payload
    return _packet(PUBLISH << 4 | qos << 1 | int(retain), body)


_PUBACK = struct.Struct(">BBH")


def encode_puback(packet_id: int) -> bytes:
    # Remaining length 2: reason code 0x00 (success) and no properties may be omitted (3.4.2.1).
    return _PUBACK.pack(PUBACK << 4, 2, packet_id)


def encode_pubacks(packet_ids: list[int]) -> bytes:
    """Several PUBACKs as one buffer, for a single transport write."""
    return struct.pack(">" + "BBH" * len(packet_ids), *_interleave(packet_ids))


def _interleave(packet_ids: list[int]) -> list[int]:
    out = [PUBACK << 4, 2, 0] * len(packet_ids)
    out[2::3] = packet_ids
    return out


PINGREQ_PACKET = bytes((PINGREQ << 4, 0))


def encode_disconnect(reason_code: int = NORMAL_DISCONNECTION) -> bytes:
    if reason_code == NORMAL_DISCONNECTION:
        return bytes((DISCONNECT << 4, 0))  # reason 0x00 and no properties may be omitted
    return bytes((DISCONNECT << 4, 1, reason_code))


# --- decoder ----------------------------------------------------------------------


_FROM_SERVER = frozenset({CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP, DISCONNECT})


def _decode_other(kind: int, flags: int, data: bytes, pos: int, end: int) -> Packet:
    """Every packet but PUBLISH; `pos`..`end` is the variable header and payload."""
    if kind not in _FROM_SERVER:
        raise ProtocolError(
            f"{packet_name(kind)} is not a packet a server sends to this client", PROTOCOL_ERROR
        )
    if flags:
        raise ProtocolError(f"{packet_name(kind)}: reserved fixed-header flags set")
    props: Properties = {}
    if kind == PUBACK:
        if end - pos < 2:
            raise ProtocolError("PUBACK shorter than its packet identifier")
        packet_id = data[pos] << 8 | data[pos + 1]
        if packet_id == 0:
            raise ProtocolError("PUBACK with packet identifier 0", PROTOCOL_ERROR)
        reason, pos = 0, pos + 2
        if pos < end:
            reason = data[pos]
            pos += 1
            if pos < end:
                props, pos = _read_properties(data, pos, end, PUBACK)
        packet: Packet = PubAck(packet_id, reason, props)
    elif kind == CONNACK:
        if end - pos < 3:
            raise ProtocolError("CONNACK too short")
        ack_flags = data[pos]
        if ack_flags & 0xFE:
            raise ProtocolError("CONNACK: reserved acknowledge flags set")
        reason = data[pos + 1]
        props, pos = _read_properties(data, pos + 2, end, CONNACK)
        packet = ConnAck(bool(ack_flags & 1), reason, props)
    elif kind in (SUBACK, UNSUBACK):
        name = packet_name(kind)
        if end - pos < 3:
            raise ProtocolError(f"{name} too short")
        packet_id = data[pos] << 8 | data[pos + 1]
        props, pos = _read_properties(data, pos + 2, end, kind)
        if pos == end:
            raise ProtocolError(f"{name} without reason codes")
        codes = list(data[pos:end])
        packet = (SubAck if kind == SUBACK else UnsubAck)(packet_id, codes, props)
        pos = end
    elif kind == PINGRESP:
        packet = PingResp()
    elif kind == DISCONNECT:
        reason = 0
        if pos < end:
            reason = data[pos]
            pos += 1
            if pos < end:
                props, pos = _read_properties(data, pos, end, DISCONNECT)
        packet = Disconnect(reason, props)
    else:
        raise ProtocolError(
            f"{packet_name(kind)} is not a packet a server sends to this client", PROTOCOL_ERROR
        )
    if pos != end:
        raise ProtocolError(f"{packet_name(kind)}: {end - pos} bytes past its contents")
    return packet


class Decoder:
    """Split a byte stream into packets. Keep one per connection; after a ProtocolError
    the stream cannot be resynchronised: drop the decoder with the connection."""

    __slots__ = ("_chunks", "_have", "_need")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []  # bytes of a packet not yet complete
        self._have = 0
        self._need = 0  # bytes the incomplete packet needs (2 while the header is unknown)

    @property
    def buffered(self) -> int:
        return self._have

    def feed(self, chunk: bytes) -> list[Packet]:
        if self._chunks:
            self._chunks.append(chunk)
            self._have += len(chunk)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
        else:
            data = chunk
        packets: list[Packet] = []
        append = packets.append
        pos, end = 0, len(data)
        need = 0
        while True:
            if end - pos < 2:
                need = 2
                break
            first = data[pos]
            length = data[pos + 1]
            start = pos + 2
            if length >= 0x80:
                # Two bytes cover 128..16383: a telemetry PUBLISH is ~150 B, so this is
                # the common case, kept out of a function call.
                if end - pos > 2 and 0 < data[pos + 2] < 0x80:
                    length = (length & 0x7F) | data[pos + 2] << 7
                    start = pos + 3
                else:
                    length, start = decode_varint(data, pos + 1, end)
                    if length < 0:
                        need = end - pos + 1  # at least one more header byte
                        break
            stop = start + length
            if stop > end:
                need = stop - pos
                break
            kind = first >> 4
            if kind == PUBLISH:
                # Inlined: this is the only packet on the hot path.
                qos = (first >> 1) & 0x03
                if start + 2 > stop:
                    raise ProtocolError("PUBLISH shorter than its topic length")
                p = start + 2 + (data[start] << 8 | data[start + 1])
                if p > stop:
                    raise ProtocolError("PUBLISH topic runs past the packet")
                if p == start + 2:
                    raise ProtocolError(
                        "PUBLISH with an empty topic (topic aliases are not enabled)",
                        PROTOCOL_ERROR,
                    )
                try:
                    topic = data[start + 2 : p].decode()
                except UnicodeDecodeError:
                    raise ProtocolError("PUBLISH topic is not valid UTF-8") from None
                packet_id = 0
                if qos:
                    if qos == 3:
                        raise ProtocolError("PUBLISH with QoS 3")
                    if qos == 2:
                        raise ProtocolError(
                            "PUBLISH with QoS 2: this client subscribes at QoS 1 and does"
                            " not implement QoS 2",
                            QOS_NOT_SUPPORTED,
                        )
                    if p + 2 > stop:
                        raise ProtocolError("PUBLISH shorter than its packet identifier")
                    packet_id = data[p] << 8 | data[p + 1]
                    if packet_id == 0:
                        raise ProtocolError("PUBLISH with packet identifier 0", PROTOCOL_ERROR)
                    p += 2
                elif first & 0x08:
                    raise ProtocolError("QoS 0 PUBLISH with the DUP flag set")
                if p >= stop:
                    raise ProtocolError("PUBLISH without a property length")
                if data[p] == 0:
                    p += 1
                else:
                    _, p = _read_properties(data, p, stop, PUBLISH)
                append(
                    Publish(
                        topic, data[p:stop], qos, packet_id, bool(first & 0x08), bool(first & 1)
                    )
                )
            else:
                append(_decode_other(kind, first & 0x0F, data, start, stop))
            pos = stop
        if pos < end:
            rest = data[pos:]
            self._chunks = [rest]
            self._have = len(rest)
            self._need = need
        else:
            self._have = 0
        return packets
