"""The Aliyun voice adapter against the fake voice service over real loopback HTTP, and
the pure reading of call reports and SMS replies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import SecretStr

from notifier.channels.aliyun_rpc import verify
from notifier.channels.aliyun_voice import AliyunVoiceChannel
from notifier.channels.base import Message
from notifier.receipts import (
    BadPush,
    VoiceReport,
    parse_reply,
    parse_sms_reports,
    parse_sms_up,
    parse_voice_reports,
    voice_outcome,
)
from tests.fake_provider_server import (
    RunningFakeProviders,
    offline_settings,
    running_fake_providers,
)

PARAMS = {
    "elder_name": "王秀英",
    "kind_label": "紧急呼叫",
    "address": "重庆市渝中区解放碑街道民族路12号3单元502室（靠近大坪医院东门的老小区）",
    "time": "03:12",
    "code": "Ab3_x-Yz09Qw",
    "link": "http://127.0.0.1:8081/ack/x.y",
}


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeProviders]:
    async with running_fake_providers(offline_settings(provider_timeout_s=0.5), hang_s=2) as f:
        yield f


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def test_alert_call_is_an_ivr_call_with_two_keys_and_no_link() -> None:
    settings = offline_settings(aliyun_voice_show_number="02363001234")
    channel = AliyunVoiceChannel(settings, httpx.AsyncClient())
    params = channel.request_params(Message("key-1", "13800000001", "alert", PARAMS))
    assert params["Action"] == "IvrCall" and params["CalledNumber"] == "13800000001"
    assert params["CalledShowNumber"] == "02363001234"
    assert params["OutId"] == "key-1"
    menu = json.loads(params["MenuKeyMap"])
    assert [(m["Key"], m["Code"]) for m in menu] == [
        ("1", settings.aliyun_voice_tts_key1),
        ("2", settings.aliyun_voice_tts_key2),
    ]
    spoken = json.loads(params["StartTtsParams"])
    assert set(spoken) == {"elder_name", "address", "kind_label", "time"}  # no link, no code
    assert all(len(v) <= 35 for v in spoken.values())
    assert spoken["address"].endswith("老小区）")  # the end of an address finds the door
    assert verify("POST", params, settings.aliyun_access_key_secret.get_secret_value())
    update = channel.request_params(Message("key-2", "13800000001", "handled", PARAMS))
    assert update["Action"] == "SingleCallByTts"
    assert json.loads(update["TtsParam"])["handler"] == "工作人员"


async def test_calls_are_placed_and_failures_classified(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    voice = AliyunVoiceChannel(fake.settings, client)
    placed = await voice.send(Message("k1", "13800000001", "alert", PARAMS))
    assert placed.ok and placed.provider_message_id
    bad = await voice.send(Message("k2", "12345", "alert", PARAMS))
    assert not bad.ok and not bad.retryable  # a bad number stays bad
    await fake.fail("voice", count=1, mode="5xx")
    down = await voice.send(Message("k3", "13800000001", "alert", PARAMS))
    assert not down.ok and down.retryable and not down.ambiguous
    await fake.fail("voice", count=1, mode="timeout")
    hung = await voice.send(Message("k4", "13800000001", "alert", PARAMS))
    assert not hung.ok and hung.retryable and hung.ambiguous
    forged = fake.settings.model_copy(update={"aliyun_access_key_secret": SecretStr("wrong")})
    refused = await AliyunVoiceChannel(forged, client).send(
        Message("k5", "13800000001", "alert", PARAMS)
    )
    assert not refused.ok and (refused.error or "").startswith("SignatureDoesNotMatch")
    outcomes = [r["outcome"] for r in await fake.records("voice")]
    assert outcomes == ["delivered", "rejected", "failed", "failed", "rejected"]


@pytest.mark.parametrize(
    ("status_code", "dtmf", "outcome"),
    [
        ("200000", "1", "key1"),
        ("200000", "2", "key2"),
        ("200008", "", "answered"),  # picked up, no key in time
        ("200001", "", "answered"),
        ("200000", "", "answered"),
        ("200002", "", "unanswered"),  # busy
        ("200003", "", "unanswered"),  # rang, nobody answered
        ("200010", "", "unanswered"),  # switched off
        ("200000", "9", "answered"),  # a key we did not offer
    ],
)
def test_call_report_outcomes(status_code: str, dtmf: str, outcome: str) -> None:
    report = VoiceReport(call_id="1^2", status_code=status_code, dtmf=dtmf)
    assert voice_outcome(report) == outcome


def test_replies_and_bad_pushes() -> None:
    assert parse_reply("1") == ("acknowledge", "") == parse_reply(" １。")
    assert parse_reply("2") == ("false_alarm", "") == parse_reply("２。")
    # a false alarm's reason, however it is written after the 2
    for reply in (
        "2 老人误按",
        "2老人误按",
        "２　老人误按",
        "2+老人误按",
        "2：老人误按。",
        "2＋老人误按",
    ):
        assert parse_reply(reply) == ("false_alarm", "老人误按"), reply
    assert parse_reply("2 老人  误按") == ("false_alarm", "老人 误按")
    for other in ("12", "21", "1 好的", "好的", ""):
        assert parse_reply(other) is None, other
    with pytest.raises(BadPush):
        parse_sms_reports(b'{"not": "an array"}')
    with pytest.raises(BadPush):
        parse_voice_reports(b'[{"call_id": 1}]')
    with pytest.raises(BadPush):
        parse_sms_reports(b"[" * 100_000)
    [report] = parse_sms_reports(
        b'[{"phone_number":"1381111","success":false,"biz_id":"9^0","err_code":"MK:0001",'
        b'"extra":"ignored"}]'
    )
    assert (report.success, report.err_code, report.key) == (False, "MK:0001", "9^0:")


@hsettings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=2000),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=5)
                | st.dictionaries(st.text(max_size=12), inner, max_size=5)
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_push_parsers_take_anything_and_refuse_it_cleanly(body: bytes) -> None:
    """Whatever is posted to a callback URL is either the provider's format or a BadPush
    (a 400 kept in dead_letters), never another exception (a 500 the provider retries)."""
    for parse in (parse_sms_reports, parse_voice_reports, parse_sms_up):
        try:
            items = parse(body)
        except BadPush:
            continue
        assert isinstance(items, list)
