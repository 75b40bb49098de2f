"""The Aliyun SMS adapter against the fake provider over real loopback HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from carewatch.clock import ManualClock, SystemClock
from notifier.channels import aliyun_sms
from notifier.channels.aliyun_sms import AliyunSmsChannel, DeliveryQueryError
from notifier.channels.base import Message
from notifier.channels.templates import template_for
from tests.fake_provider_server import (
    RunningFakeProviders,
    offline_settings,
    running_fake_providers,
)

PHONE = "13800138000"
PARAMS = {
    "elder_name": "王秀英",
    "kind_label": "紧急呼叫",
    "address": "民族路12号",
    "time": "08:15",
    "link": "http://127.0.0.1:8081/ack/payload.signature",
    "code": "Ab3_x-Yz09Qw",
    "handler": "李明",
}


def alert(key: str = "alert-1:sms:0", address: str = PHONE) -> Message:
    return Message(idempotency_key=key, address=address, purpose="alert", params=PARAMS)


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeProviders]:
    async with running_fake_providers(offline_settings(provider_timeout_s=0.5)) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


async def test_signed_request_is_accepted_and_recorded(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    before = REGISTRY.get_sample_value(
        "carewatch_notifications_total", {"channel": "sms", "outcome": "ok"}
    )
    result = await AliyunSmsChannel(fake.settings, client).send(alert())

    assert result.ok, result.error
    assert result.provider_message_id and result.provider_message_id.endswith("^0")
    [record] = await fake.records("sms")
    assert record["outcome"] == "delivered"
    assert record["address"] == PHONE
    assert record["template_code"] == fake.settings.aliyun_sms_template_alert
    assert record["params"] == {
        **{k: PARAMS[k] for k in ("elder_name", "address", "time", "code")},
        "kind_event": "发出紧急呼叫",
    }
    assert record["out_id"] == "alert-1:sms:0"
    assert record["message_id"] == result.provider_message_id
    assert record["text"] == (
        "【智慧养老】紧急：王秀英（民族路12号）于08:15发出紧急呼叫，请立即查看并处理"
        "（回复1由我处理，回复2误报）："
        f"{fake.settings.ack_base_url}/a/Ab3_x-Yz09Qw"
    )
    after = REGISTRY.get_sample_value(
        "carewatch_notifications_total", {"channel": "sms", "outcome": "ok"}
    )
    assert after == (before or 0) + 1


async def test_handled_and_closed_use_the_update_template(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = AliyunSmsChannel(fake.settings, client)
    for purpose in ("handled", "closed"):
        message = Message(f"a1:{purpose}", PHONE, purpose, PARAMS)
        assert (await channel.send(message)).ok
    handled, closed = await fake.records("sms")
    assert (
        handled["template_code"]
        == closed["template_code"]
        == fake.settings.aliyun_sms_template_handled
    )
    assert (
        handled["text"] == "【智慧养老】王秀英的紧急呼叫警报已由李明于08:15接手处理。您无需前往。"
    )
    assert closed["text"] == "【智慧养老】王秀英的紧急呼叫警报已于08:15结束。感谢您的关注。"


async def test_wrong_secret_is_refused_with_signature_does_not_match(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    tampered = fake.settings.model_copy(
        update={"aliyun_access_key_secret": SecretStr("not-the-secret")}
    )
    result = await AliyunSmsChannel(tampered, client).send(alert())

    assert not result.ok
    assert result.error is not None and result.error.startswith("SignatureDoesNotMatch")
    assert PHONE not in result.error  # the echoed string to sign is masked
    [record] = await fake.records("sms")
    assert record["outcome"] == "rejected" and record["error"] == "SignatureDoesNotMatch"
    assert (await fake.stats())["sms"]["delivered"] == 0


async def test_stale_timestamp_is_refused(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    clock = ManualClock(start_ms=1_600_000_000_000)  # years ago
    result = await AliyunSmsChannel(fake.settings, client, clock).send(alert())
    assert not result.ok and result.retryable
    assert result.error is not None and result.error.startswith("InvalidTimeStamp.Expired")


async def test_illegal_number_is_permanent(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    result = await AliyunSmsChannel(fake.settings, client).send(alert(address="12345"))
    assert not result.ok and not result.retryable
    assert result.error is not None and result.error.startswith("isv.MOBILE_NUMBER_ILLEGAL")


async def test_a_long_address_is_shortened_to_what_aliyun_accepts(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    address = "重庆市渝中区解放碑街道民族路社区民族路188号国泰广场3栋2单元17-3"
    message = Message("k", PHONE, "alert", {**PARAMS, "address": address})
    assert (await AliyunSmsChannel(fake.settings, client).send(message)).ok
    [record] = await fake.records("sms")
    assert record["params"]["address"] == "…" + address[-34:]
    assert "（…" in record["text"] and "3栋2单元17-3）" in record["text"]


@pytest.mark.parametrize(
    ("name", "address"),
    [
        ("王秀英http://t.cn/abc", "民族路12号"),
        ("王秀英", "www.example.cn 民族路12号"),
        ("王秀英 evil.com/x", "民族路12号 HTTPS://A.B.CN:8080/p?q=1"),
    ],
)
async def test_a_link_in_a_name_or_address_is_taken_out_and_the_sms_sent(
    fake: RunningFakeProviders, client: httpx.AsyncClient, name: str, address: str
) -> None:
    """Aliyun refuses any message with a link in a variable, permanently (issue 14, item
    9): a URL typed into the ledger must not block every SMS about that elder."""
    message = Message("k", PHONE, "alert", {**PARAMS, "elder_name": name, "address": address})
    result = await AliyunSmsChannel(fake.settings, client).send(message)
    assert result.ok, result.error
    [record] = await fake.records("sms")
    assert (record["params"]["elder_name"], record["params"]["address"]) == ("王秀英", "民族路12号")
    handled = Message("h", PHONE, "handled", {**PARAMS, "elder_name": name, "address": address})
    assert (await AliyunSmsChannel(fake.settings, client).send(handled)).ok


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"address": "字" * 36}, "isv.PARAM_LENGTH_LIMIT"),
        ({"code": "https://ack.example.cn/ack/x.y"}, "isv.PARAM_NOT_SUPPORT_URL"),
    ],
)
async def test_variables_aliyun_refuses_are_permanent_failures(
    fake: RunningFakeProviders,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    variables: dict[str, str],
    code: str,
) -> None:
    """Were a variable ever to escape the fitting, Aliyun's refusal ends the attempts on
    this message: the same request would be refused again."""
    _, fitted = template_for("alert", PARAMS)

    def unfitted(purpose: str, params: dict[str, str]) -> tuple[str, dict[str, str]]:
        return "alert", {**fitted, **variables}

    monkeypatch.setattr(aliyun_sms, "template_for", unfitted)
    result = await AliyunSmsChannel(fake.settings, client).send(alert())
    assert not result.ok and not result.retryable
    assert result.error is not None and result.error.startswith(code)
    [record] = await fake.records("sms")
    assert (record["outcome"], record["error"]) == ("rejected", code)


async def test_missing_template_parameters_fail_without_a_request(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    message = Message("k", PHONE, "alert", {"elder_name": "王秀英"})
    result = await AliyunSmsChannel(fake.settings, client).send(message)
    assert not result.ok and not result.retryable
    assert await fake.records("sms") == []


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("5xx", "ServiceUnavailable"),
        ("throttle", "isv.BUSINESS_LIMIT_CONTROL"),
        ("timeout", "timeout"),
    ],
)
async def test_transient_failures_are_retryable_and_a_retry_delivers(
    fake: RunningFakeProviders, client: httpx.AsyncClient, mode: str, error: str
) -> None:
    channel = AliyunSmsChannel(fake.settings, client)
    await fake.fail("sms", count=1, mode=mode)

    first = await channel.send(alert())
    assert not first.ok and first.retryable
    assert first.error is not None and first.error.startswith(error)
    retry = await channel.send(alert())
    assert retry.ok, retry.error

    stats = (await fake.stats())["sms"]
    assert (stats["failed"], stats["delivered"]) == (1, 1)


async def test_same_out_id_twice_is_sent_twice_as_aliyun_does(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    """SendSms is not idempotent: the fake sends a repeated OutId again and counts it."""
    channel = AliyunSmsChannel(fake.settings, client)
    first = await channel.send(alert("same-key"))
    second = await channel.send(alert("same-key"))
    other = await channel.send(alert("other-key"))

    assert first.ok and second.ok and other.ok
    assert second.provider_message_id != first.provider_message_id
    records = await fake.records("sms")
    assert [r["outcome"] for r in records] == ["delivered", "delivered", "delivered"]
    assert [r["duplicate_of"] for r in records] == [None, records[0]["index"], None]
    stats = (await fake.stats())["sms"]
    assert (stats["delivered"], stats["delivered_again"]) == (3, 1)


def unsure(message: Message, since_ms: int) -> Message:
    return dataclasses.replace(message, unsure_since_ms=since_ms)


async def test_timeout_after_acceptance_then_resend_is_found_and_not_sent_again(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = AliyunSmsChannel(fake.settings, client)
    await fake.fail("sms", mode="timeout_after_send")
    started = SystemClock().now_ms()

    lost = await channel.send(alert("ambiguous"))
    assert not lost.ok and lost.retryable and lost.error == "timeout"
    assert lost.ambiguous  # the request went out: it may have been accepted
    retry = await channel.send(unsure(alert("ambiguous"), started))
    assert retry.ok and retry.already_sent

    assert [r["outcome"] for r in await fake.records("sms")] == ["delivered"]
    assert (await fake.stats())["sms"]["delivered_again"] == 0


async def test_unsure_resend_of_a_message_never_accepted_is_sent(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = AliyunSmsChannel(fake.settings, client)
    await fake.fail("sms", mode="timeout")  # refused before acceptance, reply never came
    started = SystemClock().now_ms()
    lost = await channel.send(alert("never-accepted"))
    assert not lost.ok and lost.ambiguous
    assert (await channel.send(alert("other-key"))).ok  # the phone's other sends that day
    retry = await channel.send(unsure(alert("never-accepted"), started))
    assert retry.ok and not retry.already_sent
    delivered = [r["out_id"] for r in await fake.records("sms") if r["outcome"] == "delivered"]
    assert delivered == ["other-key", "never-accepted"]


async def test_lookup_pages_through_a_busy_day(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = AliyunSmsChannel(fake.settings, client)
    started = SystemClock().now_ms()
    for i in range(aliyun_sms.LOOKUP_PAGE_SIZE + 3):  # the wanted one is on page 2
        assert (await channel.send(alert(f"busy-{i}"))).ok
    assert await channel.find_out_id(PHONE, f"busy-{aliyun_sms.LOOKUP_PAGE_SIZE + 1}", started)
    assert not await channel.find_out_id(PHONE, "busy-x", started)
    assert not await channel.find_out_id("13900139000", "busy-1", started)


async def test_lookup_failure_defers_the_resend_and_a_lookup_it_may_not_make_resends(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    # a transient lookup failure: not sent now (it might be a duplicate), retried later
    down = fake.settings.model_copy(update={"aliyun_sms_endpoint": "http://127.0.0.1:9/"})
    failed_before = REGISTRY.get_sample_value(
        "carewatch_sms_resend_lookups_total", {"result": "failed"}
    )
    deferred = await AliyunSmsChannel(down, client).send(unsure(alert("k"), 1_764_000_000_000))
    assert not deferred.ok and deferred.retryable and (deferred.error or "").startswith("lookup")
    assert (
        REGISTRY.get_sample_value("carewatch_sms_resend_lookups_total", {"result": "failed"})
        == (failed_before or 0) + 1
    )
    assert await fake.records("sms") == []
    # an answer that will not change (here a key the gateway refuses): send anyway
    with pytest.raises(DeliveryQueryError) as refused:
        wrong = fake.settings.model_copy(update={"aliyun_access_key_secret": SecretStr("x")})
        await AliyunSmsChannel(wrong, client).find_out_id(PHONE, "k", SystemClock().now_ms())
    assert not refused.value.retryable


async def test_unreachable_provider_is_retryable(client: httpx.AsyncClient) -> None:
    async with running_fake_providers(offline_settings()) as running:
        settings = running.settings
    result = await AliyunSmsChannel(settings, client).send(alert())  # server is gone
    assert not result.ok and result.retryable
    assert result.error is not None and result.error.startswith("network")


async def test_delivery_receipt_of_a_sent_message(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = AliyunSmsChannel(fake.settings, client)
    sent = await channel.send(alert())
    assert sent.ok and sent.provider_message_id
    sent_ms = (await fake.records("sms"))[0]["received_ms"]

    report = await channel.query_delivery(PHONE, sent.provider_message_id, sent_ms)
    assert report is not None
    assert (report.status, report.error_code) == ("delivered", "DELIVERED")
    assert report.received_at
    assert await channel.query_delivery(PHONE, "000000000000000000^0", sent_ms) is None
    assert await channel.query_delivery("13900139000", sent.provider_message_id, sent_ms) is None
    # Lookups are not messages: the record list holds only the one SMS.
    assert len(await fake.records("sms")) == 1


async def test_delivery_query_errors_are_raised(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    wrong = fake.settings.model_copy(update={"aliyun_access_key_secret": SecretStr("nope")})
    with pytest.raises(DeliveryQueryError, match="SignatureDoesNotMatch"):
        await AliyunSmsChannel(wrong, client).query_delivery(PHONE, "1^0", 1_764_000_000_000)
