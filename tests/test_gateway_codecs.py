"""The gateways' pure codecs: public frame examples, every TCP split point, random bytes."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateways import iw, watch3g
from gateways.platforms import (
    PushError,
    decode_ctwing,
    decode_onenet,
    onenet_body,
    onenet_signature,
    onenet_verified,
)
from gateways.translate import (
    FieldRule,
    iw_alarm_reading,
    platform_reading,
    seq_for,
    uplinks,
    watch_reading,
)

# Frames as published with open decoders' tests (Traccar's Watch and Trv decoders).
PUBLIC_3G = [
    "[3G*9031853319*004E*UD2,220322,055105,A,22.761162,N,114.360192,E,0,0,47,14,100,64,0,0,00000008,0,0]",
    "[SG*9059056143*0053*UD,251021,223408,A,41.46500,N,081.53128,W,0.926,000,0,00,70,70,0,50,00000000,0,1,,,,00]",
    "[3G*8809008845*00C0*AL,271219,094744,V,00.000000,N, 0.0000000,E,0.00,0.0,0.0,0,100,81,0,0,00010000,7,0,460,0,9336,3981,141,9336,3912,141,9336,3982,140,9765,4233,134,9765,4071,134,9765,4321,134,9336,4353,132,0,0.0]",
    "[ZJ*014111001332708*0075*0064*AL,040418,052156,A,22.536207,N,113.938673,E,0,0,0,5,100,82,1000,50,00100000,1,255,460,0,9340,3663,35]",
    "[3G*8308373902*0080*AL,230817,095346,A,47.083950,N,15.4821850,E,7.60,273.8,0.0,4,15,44,0,0,00200010,2,255,232,1,7605,42530,118,7605,58036,119,0,65.8]",
    "[3G*2104326058*000E*btemp2,1,35.29]",
    "[3G*4700609403*0013*bphrt,120,79,73,,,,]",
]


def _frames(data: bytes) -> list[watch3g.WatchFrame]:
    frames, rejects = watch3g.FrameSplitter().feed(data)
    assert rejects == []
    return [watch3g.parse_frame(f) for f in frames]


def test_public_3g_frames_decode() -> None:
    decoded = [watch3g.decode(f) for f in _frames("".join(PUBLIC_3G).encode())]
    ud2, ud_west, sos_no_fix, zj, fall, temp, bp = decoded
    assert isinstance(ud2, watch3g.Position) and ud2.valid and not ud2.alarm
    assert ud2.lat == pytest.approx(22.761162) and ud2.lon == pytest.approx(114.360192)
    assert ud2.battery == 64 and "worn" in ud2.flags
    assert isinstance(ud_west, watch3g.Position) and ud_west.lon == pytest.approx(-81.53128)
    # an SOS may come without a GPS fix: no position, the alarm still stands
    assert isinstance(sos_no_fix, watch3g.Position) and sos_no_fix.alarm
    assert sos_no_fix.flags == {"sos"} and sos_no_fix.lat is None and not sos_no_fix.valid
    assert isinstance(zj, watch3g.Position) and zj.flags == {"strap_removed"}
    assert isinstance(fall, watch3g.Position) and fall.flags == {"fall"}
    assert temp == watch3g.Vitals(temp=35.29)
    assert bp == watch3g.Vitals(hr=73, systolic=120, diastolic=79)


def test_zj_frame_keeps_its_index_in_the_answer() -> None:
    (frame,) = _frames(PUBLIC_3G[3].encode())
    assert frame.index == "0075" and frame.device_id == "014111001332708"
    assert watch3g.reply(frame, "AL") == b"[ZJ*014111001332708*0075*0002*AL]"


def test_lk_is_answered_with_lk() -> None:
    (frame,) = _frames(b"[3G*8800000015*000A*LK,50,0,95]")
    assert frame.length_ok
    assert watch3g.decode(frame) == watch3g.Link(steps=50, battery=95)
    assert watch3g.answer_for(frame) == "LK"
    assert watch3g.reply(frame, "LK") == b"[3G*8800000015*0002*LK]"


@pytest.mark.parametrize(
    ("bit", "flag"),
    [
        (0, "low_battery"),
        (1, "geofence_exit"),
        (2, "geofence_enter"),
        (3, "worn"),
        (14, "power_cut"),
        (16, "sos"),
        (17, "low_battery"),
        (18, "geofence_exit"),
        (19, "geofence_enter"),
        (20, "strap_removed"),
        (21, "fall"),
        (22, "fall"),
    ],
)
def test_every_status_bit_is_decoded(bit: int, flag: str) -> None:
    assert watch3g.status_flags(1 << bit) == {flag}


def test_every_alarm_flag_lands_in_the_device_contract() -> None:
    def kinds(flags: set[str]) -> list[tuple[str, object]]:
        reading = watch_reading(
            frozenset(flags), lat=29.5, lon=106.5, battery=5, steps=None, alarm_frame=True
        )
        out = uplinks(reading, time_ms=1_700_000_000_000, discriminator=1)
        return [
            (u.kind, getattr(u.payload, "type", getattr(u.payload, "state", None))) for u in out
        ]

    assert kinds({"sos"})[0] == ("event", "sos")
    assert kinds({"fall"})[0] == ("event", "fall")
    assert kinds({"power_cut"})[-1] == ("status", "offline")
    removed = watch_reading(
        frozenset({"strap_removed"}), lat=None, lon=None, battery=None, steps=None, alarm_frame=True
    )
    assert removed.worn is False
    fence = watch_reading(
        frozenset({"geofence_exit"}),
        lat=29.5,
        lon=106.5,
        battery=None,
        steps=None,
        alarm_frame=True,
    )
    assert (fence.lat, fence.lon) == (29.5, 106.5)  # carewatch's own zones decide
    low = watch_reading(
        frozenset({"low_battery"}), lat=None, lon=None, battery=5, steps=None, alarm_frame=True
    )
    assert low.battery == 5


def test_escaping_round_trips_and_bad_escape_is_refused() -> None:
    payload = bytes(range(256))
    frame = watch3g.build_frame("3G", "1234567890", b"TK," + payload)
    (parsed,) = _frames(frame)
    assert parsed.content == b"TK," + payload and parsed.length_ok is False  # escaped length
    with pytest.raises(watch3g.FrameError) as err:
        watch3g.parse_frame(b"3G*1234567890*0004*TK,}\x09")
    assert err.value.reason == "bad_escape"


def test_message_downlink_is_utf16be_hex() -> None:
    content = watch3g.message_content("已有人前来帮助")
    assert content == "MESSAGE,5DF267094EBA524D67655E2E52A9"
    frame = watch3g.parse_frame(watch3g.build_frame("3G", "1", content.encode())[1:-1])
    assert watch3g.decode_message_text(frame) == "已有人前来帮助"


def test_phonebook_and_sos_numbers() -> None:
    assert watch3g.sos_number_contents(["13600000001", "13600000002"]) == [
        "SOS1,13600000001",
        "SOS2,13600000002",
    ]
    (phb,) = watch3g.phonebook_contents([("13600000001", "张伟")])
    assert phb == "PHB,13600000001,5F204F1F"


def test_splitter_recovers_from_garbage_truncation_and_oversize() -> None:
    splitter = watch3g.FrameSplitter(max_frame=64)
    frames, rejects = splitter.feed(b"xx[3G*1*0002*LK][3G*1*00" + b"[3G*2*0002*LK]")
    assert frames == [b"3G*1*0002*LK", b"3G*2*0002*LK"] and rejects == ["garbage", "truncated"]
    frames, rejects = splitter.feed(b"[" + b"A" * 100)
    assert frames == [] and rejects == ["oversized"] and splitter.buffered == 0


STREAM = "".join(PUBLIC_3G).encode()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_tcp_stream_gives_the_same_frames(cuts: list[int]) -> None:
    splitter = watch3g.FrameSplitter()
    frames: list[bytes] = []
    points = sorted(set(cuts))
    for start, end in zip([0, *points], [*points, len(STREAM)], strict=True):
        got, rejects = splitter.feed(STREAM[start:end])
        assert rejects == []
        frames += got
    assert [watch3g.parse_frame(f).content for f in frames] == [f.content for f in _frames(STREAM)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_frame_errors(data: bytes) -> None:
    splitter = watch3g.FrameSplitter(max_frame=256)
    frames, _ = splitter.feed(data)
    assert splitter.buffered <= 256
    for raw in frames:
        with contextlib.suppress(watch3g.FrameError):
            watch3g.decode(watch3g.parse_frame(raw))
    iw_splitter = iw.IwSplitter(max_frame=256)
    iw_frames, _ = iw_splitter.feed(data)
    assert iw_splitter.buffered <= 257
    for raw in iw_frames:
        with contextlib.suppress(watch3g.FrameError):
            iw.decode(iw.parse_frame(raw))


# ---- IW ---------------------------------------------------------------------------

PUBLIC_IW = [
    "IWAP00353456789012345#",
    "IWAP01080524A2232.9806N11404.9355E000.1061830323.8706000908000102,460,0,9520,3671,Home|74-DE-2B-44-88-8C|97#",
    "IWAP10080524A2232.9806N11404.9355E000.1061830323.8706000908000502,460,0,9520,3671,00,zh-cn,00,HOME|74-DE-2B-44-88-8C|97#",
    "IWAP03,06000908000102,5555,30#",
    "IWAPHT,60,130,85#",
]
IW_STREAM = "".join(PUBLIC_IW).encode()


def test_public_iw_frames_decode() -> None:
    frames, rejects = iw.IwSplitter().feed(IW_STREAM)
    assert rejects == []
    login, position, alarm, beat, heart = [iw.decode(iw.parse_frame(f)) for f in frames]
    assert login == iw.Login("353456789012345")
    assert isinstance(position, iw.IwPosition) and position.valid
    assert position.lat == pytest.approx(22.54968, abs=1e-5)
    assert position.lon == pytest.approx(114.08226, abs=1e-5)
    assert position.battery == 80 and position.alarm is None
    assert isinstance(alarm, iw.IwPosition) and alarm.alarm_code == "00" and alarm.alarm == "none"
    assert beat == iw.Heartbeat(battery=80, steps=5555)
    assert heart == iw.HeartRate(hr=60, systolic=130, diastolic=85)


@pytest.mark.parametrize(
    ("code", "event"), [("01", "sos"), ("05", "fall"), ("06", "fall"), ("02", None)]
)
def test_iw_alarm_codes(code: str, event: str | None) -> None:
    body = PUBLIC_IW[2].replace(",00,zh-cn", f",{code},zh-cn").encode()[:-1]
    alarm = iw.decode(iw.parse_frame(body))
    assert isinstance(alarm, iw.IwPosition)
    reading = iw_alarm_reading(alarm.alarm, lat=alarm.lat, lon=alarm.lon, battery=alarm.battery)
    assert reading.events == ((event,) if event else ())


def test_iw_login_answer_carries_time_and_zone() -> None:
    from datetime import UTC, datetime

    frame = iw.parse_frame(b"IWAP00353456789012345")
    now = datetime(2024, 5, 24, 6, 18, 30, tzinfo=UTC)
    assert iw.reply_for(frame, now, 8) == b"IWBP00,20240524061830,8#"
    assert iw.reply_for(iw.parse_frame(b"IWAP03,06000908000102,5555,30"), now, 8) == b"IWBP03#"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(IW_STREAM)), max_size=10))
def test_any_split_of_an_iw_stream_gives_the_same_frames(cuts: list[int]) -> None:
    splitter = iw.IwSplitter()
    frames: list[bytes] = []
    points = sorted(set(cuts))
    for start, end in zip([0, *points], [*points, len(IW_STREAM)], strict=True):
        got, rejects = splitter.feed(IW_STREAM[start:end])
        assert rejects == []
        frames += got
    assert frames == [f.encode()[:-1] for f in PUBLIC_IW]


# ---- platforms ---------------------------------------------------------------------

SMOKE_RULES = {
    "smoke_state": FieldRule("smoke", frozenset({"1"})),
    "battery_value": FieldRule("battery", frozenset()),
}


def _ctwing(**overrides: object) -> bytes:
    message: dict[str, object] = {
        "messageType": "dataReport",
        "productId": "15000001",
        "deviceId": "15000001860000000000001",
        "IMEI": "860000000000001",
        "timestamp": 1_717_000_000_000,
        "upPacketSN": 17,
        "payload": {"serviceId": "smoke", "smoke_state": 1, "battery_value": 87},
    }
    message.update(overrides)
    return json.dumps(message).encode()


def test_ctwing_data_report_maps_through_the_product_fields() -> None:
    message = decode_ctwing(_ctwing())
    assert message.ids[0] == "860000000000001"
    reading, unknown = platform_reading(message.fields, SMOKE_RULES)
    assert reading.events == ("smoke",) and reading.battery == 87 and unknown == []
    out = uplinks(reading, time_ms=message.time_ms, discriminator=message.discriminator)
    again = decode_ctwing(_ctwing())
    out_again = uplinks(
        platform_reading(again.fields, SMOKE_RULES)[0],
        time_ms=again.time_ms,
        discriminator=again.discriminator,
    )
    # the same push twice gives the same seqs: ingest keeps one copy
    assert [u.payload.seq for u in out] == [u.payload.seq for u in out_again]
    other = decode_ctwing(_ctwing(upPacketSN=18))
    assert seq_for(other.time_ms, other.discriminator, 0) != out[0].payload.seq


def test_ctwing_appdata_base64_json() -> None:
    app = base64.b64encode(b'{"smoke_state": 0}').decode()
    message = decode_ctwing(_ctwing(payload={"APPdata": app}))
    assert message.fields == {"smoke_state": 0}
    assert platform_reading(message.fields, SMOKE_RULES)[0].events == ()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "malformed_json"),  # nesting (found by fuzz/)
        (_ctwing(messageType="commandResponse"), "schema_invalid"),
        (_ctwing(timestamp="yesterday"), "schema_invalid"),
        (_ctwing(upPacketSN=None), "schema_invalid"),
        (_ctwing(IMEI=None, deviceId=None), "schema_invalid"),
        (_ctwing(payload={"APPdata": "%%%"}), "schema_invalid"),
    ],
)
def test_malformed_ctwing_pushes_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PushError) as err:
        decode_ctwing(body)
    assert err.value.reason == reason


def test_onenet_signature_and_body() -> None:
    msg = '{"type":1,"dev_id":2016617,"ds_id":"smoke","at":1717000000000,"value":1}'
    signature = onenet_signature("tok", "abcd", msg)
    assert onenet_verified("tok", "abcd", msg, signature)
    assert not onenet_verified("other", "abcd", msg, signature)
    body = f'{{"msg":{msg},"msg_signature":"{signature}","nonce":"abcd"}}'.encode()
    raw, sig, nonce = onenet_body(body)
    assert raw == msg.encode() and sig == signature and nonce == "abcd"
    (point,) = decode_onenet(raw)
    with pytest.raises(PushError):
        onenet_body(b'{"msg":' + b"[" * 5000 + b"]" * 5000 + b"}")
    assert point.ids == ("2016617",) and point.fields == {"smoke": 1}


@pytest.mark.parametrize(("stream", "splitter"), [(STREAM, "3g"), (IW_STREAM, "iw")])
def test_every_single_split_point_gives_the_same_frames(stream: bytes, splitter: str) -> None:
    def split(at: int) -> list[bytes]:
        s: watch3g.FrameSplitter | iw.IwSplitter = (
            watch3g.FrameSplitter() if splitter == "3g" else iw.IwSplitter()
        )
        first, rejects_1 = s.feed(stream[:at])
        second, rejects_2 = s.feed(stream[at:])
        assert rejects_1 == rejects_2 == []
        return first + second

    whole = split(len(stream))
    assert len(whole) == (len(PUBLIC_3G) if splitter == "3g" else len(PUBLIC_IW))
    for at in range(len(stream)):
        assert split(at) == whole, at


def test_ctwing_event_and_online_reports() -> None:
    event = decode_ctwing(
        _ctwing(
            messageType="eventReport",
            eventType=1,
            eventContent={"smoke_state": 1},
            upPacketSN=None,
            payload=None,
        )
    )
    assert event.fields == {"smoke_state": 1} and event.online is None
    assert (
        decode_ctwing(
            _ctwing(
                messageType="eventReport",
                eventType=1,
                eventContent={"smoke_state": 1},
                payload=None,
            )
        ).discriminator
        == event.discriminator
    )  # a retried event push: the same seq
    online = decode_ctwing(_ctwing(messageType="deviceOnlineOfflineReport", eventType=0))
    assert online.online is False and online.fields == {}
    with pytest.raises(PushError):
        decode_ctwing(_ctwing(messageType="deviceOnlineOfflineReport", eventType=7))


def test_onenet_online_and_command_result_messages() -> None:
    msg = json.dumps(
        [
            {"type": 2, "dev_id": 2016617, "status": 1, "login_type": 7, "at": 1_717_000_000_000},
            {"type": 7, "dev_id": 2016617, "cmd_id": "c1", "at": 1_717_000_000_000},
        ]
    ).encode()
    online, result = decode_onenet(msg)
    assert online.online is True and online.kind == "online"
    assert result.kind == "command_result" and result.fields == {}
    with pytest.raises(PushError):
        decode_onenet(b'{"type": 9, "dev_id": 1, "at": 1717000000000}')
