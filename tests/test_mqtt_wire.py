"""ingest.mqtt_wire, the MQTT v5 codec of ingest's subscriber: pure, no server.

Server-to-client packets are built here byte by byte from the spec (OASIS MQTT 5.0),
not with the codec's own encoders, so a mistake shared by encoder and decoder shows.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.mqtt_wire import (
    MALFORMED_PACKET,
    PINGREQ_PACKET,
    PROTOCOL_ERROR,
    QOS_NOT_SUPPORTED,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    SERVER_KEEP_ALIVE,
    USER_PROPERTY,
    ConnAck,
    Decoder,
    Disconnect,
    Packet,
    PingResp,
    ProtocolError,
    PubAck,
    Publish,
    SubAck,
    UnsubAck,
    decode_varint,
    encode_connect,
    encode_disconnect,
    encode_puback,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
    encode_varint,
)

# --- byte builders (from the spec, independent of the encoders) -------------------


def vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def s(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def props(*items: bytes) -> bytes:
    body = b"".join(items)
    return vbi(len(body)) + body


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + vbi(len(body)) + body


def publish(
    topic: str, payload: bytes, qos: int = 1, pid: int = 7, properties: bytes = b"\x00"
) -> bytes:
    body = s(topic) + (pid.to_bytes(2, "big") if qos else b"") + properties + payload
    return packet(0x30 | qos << 1, body)


CONNACK = packet(
    0x20,
    b"\x01\x00"
    + props(
        b"\x21" + (20).to_bytes(2, "big"),  # receive maximum
        b"\x13" + (45).to_bytes(2, "big"),  # server keep alive
        b"\x26" + s("k") + s("v"),  # user property
        b"\x26" + s("k2") + s("v2"),
        b"\x1f" + s("welcome"),  # reason string
        b"\x24\x01",  # maximum QoS
        b"\x27" + (1 << 20).to_bytes(4, "big"),  # maximum packet size
    ),
)
SUBACK = packet(0x90, b"\x00\x01" + props() + b"\x01\x87\x00")
UNSUBACK = packet(0xB0, b"\x00\x02" + props(b"\x1f" + s("gone")) + b"\x00\x11")
PUBACK = packet(0x40, b"\x00\x09")
PINGRESP = bytes((0xD0, 0))
DISCONNECT = packet(0xE0, b"\x8b" + props(b"\x1f" + s("bye")))
PUBLISH_PROPS = publish(
    "cw/v1/dev/W1/telemetry",
    b'{"hr":70}',
    properties=props(
        b"\x01\x01",  # payload format indicator
        b"\x02" + (60).to_bytes(4, "big"),  # message expiry
        b"\x03" + s("application/json"),
        b"\x08" + s("reply/here"),
        b"\x09" + s("corr"),  # correlation data (binary, same framing)
        b"\x0b" + vbi(300),  # subscription identifier (2-byte VBI)
        b"\x26" + s("name") + s("value"),
    ),
)
PUBLISH_QOS0 = publish("cw/v1/dev/W2/event", b"", qos=0)
STREAM = [CONNACK, SUBACK, UNSUBACK, PUBLISH_PROPS, PUBLISH_QOS0, PUBACK, PINGRESP, DISCONNECT]

EXPECTED: list[Packet] = [
    ConnAck(
        True,
        0,
        {
            RECEIVE_MAXIMUM: 20,
            SERVER_KEEP_ALIVE: 45,
            USER_PROPERTY: [("k", "v"), ("k2", "v2")],
            REASON_STRING: "welcome",
            0x24: 1,
            0x27: 1 << 20,
        },
    ),
    SubAck(1, [0x01, 0x87, 0x00]),
    UnsubAck(2, [0x00, 0x11], {REASON_STRING: "gone"}),
    Publish("cw/v1/dev/W1/telemetry", b'{"hr":70}', 1, 7),
    Publish("cw/v1/dev/W2/event", b"", 0, 0),
    PubAck(9, 0),
    PingResp(),
    Disconnect(0x8B, {REASON_STRING: "bye"}),
]


def feed_all(chunks: list[bytes]) -> list[Packet]:
    decoder = Decoder()
    out: list[Packet] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    assert decoder.buffered == 0
    return out


def error_of(data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        Decoder().feed(data)
    return caught.value


# --- decoding ---------------------------------------------------------------------


def test_several_packets_in_one_chunk() -> None:
    assert feed_all([b"".join(STREAM)]) == EXPECTED


def test_packets_split_at_every_byte_boundary() -> None:
    stream = b"".join(STREAM)
    for cut in range(len(stream) + 1):
        assert feed_all([stream[:cut], stream[cut:]]) == EXPECTED, cut


def test_packets_fed_one_byte_at_a_time() -> None:
    stream = b"".join(STREAM)
    assert feed_all([stream[i : i + 1] for i in range(len(stream))]) == EXPECTED


def test_large_publish_in_many_chunks() -> None:
    payload = bytes(range(256)) * 4000  # 1 MB: a 3-byte remaining length
    data = publish("t/big", payload, pid=65535)
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    assert feed_all(chunks) == [Publish("t/big", payload, 1, 65535)]


def test_publish_flags() -> None:
    dup_retain = packet(0x3B, s("a/b") + b"\x00\x05\x00x")  # DUP, QoS 1, RETAIN
    assert feed_all([dup_retain]) == [Publish("a/b", b"x", 1, 5, dup=True, retain=True)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x30\xff\xff\xff\xff\x01", MALFORMED_PACKET),  # remaining length of 5 bytes
        (b"\x30\x80\x00", MALFORMED_PACKET),  # 0 in two bytes: not minimal
        (publish("t", b"x", properties=props(b"\x7f\x00")), MALFORMED_PACKET),  # unknown id
        (publish("t", b"x", properties=props(b"\x11" + bytes(4))), PROTOCOL_ERROR),  # CONNECT's
        (publish("t", b"x", properties=props(b"\x23\x00\x01")), PROTOCOL_ERROR),  # topic alias
        (publish("t", b"x", properties=props(b"\x01\x01\x01\x00")), PROTOCOL_ERROR),  # twice
        (publish("t", b"x", properties=props(b"\x02\x00")), MALFORMED_PACKET),  # truncated
        (publish("t", b"x", properties=b"\x05\x01\x00"), MALFORMED_PACKET),  # past the packet
        (publish("t", b"x", qos=2), QOS_NOT_SUPPORTED),
        (publish("t", b"x", qos=3), MALFORMED_PACKET),
        (publish("t", b"x", pid=0), PROTOCOL_ERROR),
        (publish("", b"x"), PROTOCOL_ERROR),  # empty topic without an alias
        (packet(0x30, b"\x00\x02\xff\xfe\x00"), MALFORMED_PACKET),  # topic not UTF-8
        (packet(0x30, b"\x00\x09ab"), MALFORMED_PACKET),  # topic runs past the packet
        (packet(0x30, s("t")), MALFORMED_PACKET),  # no property length
        (packet(0x38, s("t") + b"\x00"), MALFORMED_PACKET),  # QoS 0 with DUP
        (packet(0x82, b"\x00\x01\x00" + s("t") + b"\x01"), PROTOCOL_ERROR),  # SUBSCRIBE
        (packet(0x50, b"\x00\x01"), PROTOCOL_ERROR),  # PUBREC: no QoS 2 here
        (bytes((0x00, 0)), PROTOCOL_ERROR),  # reserved type 0
        (bytes((0xD1, 0)), MALFORMED_PACKET),  # PINGRESP with flags
        (bytes((0xD0, 1, 0)), MALFORMED_PACKET),  # PINGRESP with a body
        (packet(0x20, b"\x02\x00\x00"), MALFORMED_PACKET),  # CONNACK reserved flag
        (packet(0x20, b"\x00\x00"), MALFORMED_PACKET),  # CONNACK without properties
        (packet(0x90, b"\x00\x01\x00"), MALFORMED_PACKET),  # SUBACK without codes
        (packet(0x40, b"\x00\x00"), PROTOCOL_ERROR),  # PUBACK id 0
        (packet(0x40, b"\x00\x01\x00\x00\x00"), MALFORMED_PACKET),  # bytes past properties
    ],
)
def test_malformed_or_unsupported_packets_are_refused(data: bytes, reason: int) -> None:
    assert error_of(data).reason_code == reason


def test_qos2_error_says_why() -> None:
    assert "QoS 2" in str(error_of(publish("t", b"x", qos=2)))


def test_unknown_property_names_the_identifier() -> None:
    assert "0x7f" in str(error_of(publish("t", b"x", properties=props(b"\x7f\x00"))))


def test_incomplete_header_waits_for_more() -> None:
    decoder = Decoder()
    data = publish("t", b"y" * 200)  # two-byte remaining length
    assert decoder.feed(data[:2]) == []
    assert decoder.feed(data[2:3]) == []
    assert decoder.feed(data[3:]) == [Publish("t", b"y" * 200, 1, 7)]


# --- encoding ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455])
def test_varint_round_trip(n: int) -> None:
    raw = encode_varint(n)
    assert raw == vbi(n)
    assert decode_varint(raw, 0, len(raw)) == (n, len(raw))
    assert decode_varint(raw, 0, len(raw) - 1) == (-1, 0)  # incomplete: not an error


def test_varint_out_of_range() -> None:
    with pytest.raises(ValueError):
        encode_varint(268435456)


def test_connect_bytes() -> None:
    raw = encode_connect(
        "ingest-1",
        clean_start=False,
        keepalive_s=30,
        username="ingest",
        password="pw",
        session_expiry_s=3600,
        receive_maximum=4000,
    )
    body = (
        s("MQTT")
        + b"\x05"
        + bytes((0x80 | 0x40,))  # user name, password, no clean start
        + (30).to_bytes(2, "big")
        + props(b"\x11" + (3600).to_bytes(4, "big"), b"\x21" + (4000).to_bytes(2, "big"))
        + s("ingest-1")
        + s("ingest")
        + s("pw")
    )
    assert raw == packet(0x10, body)


def test_connect_clean_start_anonymous() -> None:
    raw = encode_connect("c", clean_start=True, keepalive_s=0)
    assert raw == packet(0x10, s("MQTT") + b"\x05\x02\x00\x00\x00" + s("c"))


def test_subscribe_bytes() -> None:
    raw = encode_subscribe(3, [("$share/g/a/+", 1), ("b/#", 0)])
    assert raw == packet(0x82, b"\x00\x03\x00" + s("$share/g/a/+") + b"\x01" + s("b/#") + b"\x00")


def test_unsubscribe_bytes() -> None:
    raw = encode_unsubscribe(4, ["$share/g/a/+", "b/#"])
    assert raw == packet(0xA2, b"\x00\x04\x00" + s("$share/g/a/+") + s("b/#"))


def test_short_packets() -> None:
    assert encode_puback(0x1234) == b"\x40\x02\x12\x34"
    assert encode_pubacks([1, 2, 65535]) == b"".join(map(encode_puback, [1, 2, 65535]))
    assert encode_pubacks([]) == b""
    assert PINGREQ_PACKET == b"\xc0\x00"
    assert encode_disconnect() == b"\xe0\x00"
    assert encode_disconnect(0x81) == b"\xe0\x01\x81"


def test_publish_encoding_matches_the_spec() -> None:
    assert encode_publish("t", b"x", 1, 7) == publish("t", b"x")
    assert encode_publish("t", b"", 0) == publish("t", b"", qos=0)
    with pytest.raises(ValueError):
        encode_publish("t", b"x", 2, 1)
    with pytest.raises(ValueError):
        encode_publish("t", b"x", 1, 0)


# --- properties of the decoder ----------------------------------------------------


@given(
    topic=st.text(min_size=1, max_size=80).filter(lambda t: "\x00" not in t),
    payload=st.binary(max_size=3000),
    qos=st.sampled_from([0, 1]),
    packet_id=st.integers(1, 65535),
    retain=st.booleans(),
    cut=st.integers(0, 4000),
)
def test_publish_round_trip(
    topic: str, payload: bytes, qos: int, packet_id: int, retain: bool, cut: int
) -> None:
    raw = encode_publish(topic, payload, qos, packet_id if qos else 0, retain=retain)
    expected = Publish(topic, payload, qos, packet_id if qos else 0, retain=retain)
    cut = min(cut, len(raw))
    assert feed_all([raw[:cut], raw[cut:]]) == [expected]


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        Decoder().feed(data)


@given(st.lists(st.binary(max_size=60), max_size=8))
def test_random_chunks_raise_only_protocol_errors(chunks: list[bytes]) -> None:
    decoder = Decoder()
    try:
        for chunk in chunks:
            decoder.feed(chunk)
    except ProtocolError:
        pass


@given(st.binary(max_size=200), st.sampled_from([0x20, 0x30, 0x32, 0x40, 0x90, 0xE0]))
def test_random_bodies_behind_valid_headers_raise_only_protocol_errors(
    body: bytes, first: int
) -> None:
    with contextlib.suppress(ProtocolError):
        Decoder().feed(packet(first, body))
