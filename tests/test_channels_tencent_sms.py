"""The Tencent Cloud SMS adapter and the Aliyun -> Tencent failover, against the fake
providers over real loopback HTTP (the Tencent fake verifies TC3-HMAC-SHA256)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from notifier.channels.aliyun_sms import AliyunSmsChannel
from notifier.channels.base import Message
from notifier.channels.failover import FailoverSmsChannel
from notifier.channels.registry import build_channels
from notifier.channels.tencent_sms import TencentSmsChannel, e164, tc3_signature
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
    "code": "Ab3_x-Yz09Qw",
}


def alert(key: str = "alert-1:0:alert:grid_worker:GW1:sms") -> Message:
    return Message(idempotency_key=key, address=PHONE, purpose="alert", params=PARAMS)


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeProviders]:
    settings = offline_settings(
        provider_timeout_s=0.5, tencent_secret_key=SecretStr("tc-secret"), sms_failover_unsure_s=0
    )
    async with running_fake_providers(settings, hang_s=2.0) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def failovers(result: str) -> float:
    value = REGISTRY.get_sample_value("carewatch_sms_failovers_total", {"result": result})
    return value or 0.0


def test_tc3_signature_is_keyed_by_secret_date_and_body() -> None:
    body = b'{"PhoneNumberSet":["+8613800138000"]}'
    one = tc3_signature("k", "sms.tencentcloudapi.com", body, 1551113065, "sms")
    assert len(one) == 64 and one == tc3_signature(
        "k", "sms.tencentcloudapi.com", body, 1551113065, "sms"
    )
    assert one != tc3_signature("k2", "sms.tencentcloudapi.com", body, 1551113065, "sms")
    assert one != tc3_signature("k", "sms.tencentcloudapi.com", body + b" ", 1551113065, "sms")
    # the timestamp is signed: a second later, another signature
    assert one != tc3_signature("k", "sms.tencentcloudapi.com", body, 1551113066, "sms")
    assert e164("13800138000") == "+8613800138000" == e164("008613800138000")


async def test_signed_request_is_accepted_and_a_wrong_key_refused(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    result = await TencentSmsChannel(fake.settings, client).send(alert())
    assert result.ok and (result.provider_message_id or "").startswith("tencent:2433:")
    [record] = await fake.records("sms_tencent")
    assert record["address"] == "+8613800138000"
    assert record["text"] == (
        "【智慧养老】紧急：王秀英（民族路12号）于08:15发出紧急呼叫，请立即查看并处理"
        f"（回复1由我处理，回复2误报）：{fake.settings.ack_base_url}/a/Ab3_x-Yz09Qw"
    )
    forged = fake.settings.model_copy(update={"tencent_secret_key": SecretStr("wrong")})
    refused = await TencentSmsChannel(forged, client).send(alert("k2"))
    assert not refused.ok and (refused.error or "").startswith("AuthFailure.SignatureFailure")
    assert [r["outcome"] for r in await fake.records("sms_tencent")] == ["delivered", "rejected"]


async def test_aliyun_5xx_goes_by_tencent_exactly_once(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channels = build_channels(fake.settings, client)
    assert isinstance(channels["sms"], FailoverSmsChannel)
    before = failovers("sent")
    await fake.fail("sms", count=1, mode="5xx")
    result = await channels["sms"].send(alert())
    assert result.ok and (result.provider_message_id or "").startswith("tencent:")
    assert [r["outcome"] for r in await fake.records("sms")] == ["failed"]
    assert [r["outcome"] for r in await fake.records("sms_tencent")] == ["delivered"]
    assert failovers("sent") == before + 1


async def test_aliyun_timeout_is_looked_up_before_failing_over(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    """Aliyun hangs before sending: not found at Aliyun, Tencent sends it once. Aliyun
    hangs after sending: found at Aliyun, Tencent is not asked (never twice)."""
    sms = build_channels(fake.settings, client)["sms"]
    await fake.fail("sms", count=1, mode="timeout")
    first = await sms.send(alert("key-a"))
    assert first.ok and (first.provider_message_id or "").startswith("tencent:")
    assert len(await fake.records("sms_tencent")) == 1

    await fake.fail("sms", count=1, mode="timeout_after_send")
    second = await sms.send(alert("key-b"))
    assert second.ok and second.already_sent
    delivered = [r for r in await fake.records("sms") if r["outcome"] == "delivered"]
    assert [r["out_id"] for r in delivered] == ["key-b"]
    assert len(await fake.records("sms_tencent")) == 1  # not sent a second time


async def test_unsure_message_is_not_failed_over_blindly(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    """A retry of an unsure attempt whose lookup fails waits (sms_failover_unsure_s), and
    goes by Tencent only after that."""
    settings = fake.settings.model_copy(update={"sms_failover_unsure_s": 3600.0})
    # an Aliyun endpoint that does not answer at all: every lookup fails for now
    dead = settings.model_copy(update={"aliyun_sms_endpoint": "http://127.0.0.1:9/aliyun-sms/"})
    sms = FailoverSmsChannel(dead, AliyunSmsChannel(dead, client), TencentSmsChannel(dead, client))
    unsure = Message("key-u", PHONE, "alert", PARAMS, unsure_since_ms=time.time_ns() // 10**6)
    waiting = await sms.send(unsure)
    assert not waiting.ok and waiting.retryable and "waiting" in (waiting.error or "")
    assert await fake.records("sms_tencent") == []
    # past the wait: sent by Tencent (an emergency message maybe twice, never lost)
    later = FailoverSmsChannel(
        dead.model_copy(update={"sms_failover_unsure_s": 0.0}),
        AliyunSmsChannel(dead, client),
        TencentSmsChannel(dead, client),
    )
    assert (await later.send(unsure)).ok
    assert len(await fake.records("sms_tencent")) == 1


async def test_both_down_is_a_retryable_failure(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    sms = build_channels(fake.settings, client)["sms"]
    await fake.fail("sms", count=1, mode="5xx")
    await fake.fail("sms_tencent", count=1, mode="5xx")
    result = await sms.send(alert())
    assert not result.ok and result.retryable and not result.ambiguous
    assert "aliyun:" in (result.error or "") and "tencent: http 502" in (result.error or "")
