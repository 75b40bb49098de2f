"""The fake providers themselves: protocol checks, inspection/control API, CLI runner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from carewatch.settings import Settings
from harness.services import await_until, free_port
from notifier.channels.aliyun_rpc import sign
from notifier.channels.aliyun_sms import AliyunSmsChannel
from notifier.channels.base import Message
from notifier.channels.templates import sms_template_bodies
from simulators.fake_providers.aliyun import approvable
from simulators.fake_providers.server import run
from tests.fake_provider_server import (
    RunningFakeProviders,
    offline_settings,
    running_fake_providers,
)

PARAMS = {
    "elder_name": "王秀英",
    "kind_label": "跌倒",
    "address": "民族路12号",
    "time": "08:15",
    "link": "http://127.0.0.1:8081/ack/payload.signature",
    "code": "Ab3_x-Yz09Qw",
}


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[RunningFakeProviders]:
    settings = offline_settings()
    async with running_fake_providers(
        settings, record_file=tmp_path / "records.jsonl", wecom_users=["liming", "wangfang"]
    ) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def sms_params(fake: RunningFakeProviders, client: httpx.AsyncClient) -> dict[str, str]:
    """Correctly signed SendSms parameters, as the adapter would send them."""
    channel = AliyunSmsChannel(fake.settings, client)
    return channel.request_params(Message("k1", "13800138000", "alert", PARAMS))


def resigned(
    fake: RunningFakeProviders, params: dict[str, str], method: str = "POST"
) -> dict[str, str]:
    unsigned = {k: v for k, v in params.items() if k != "Signature"}
    secret = fake.settings.aliyun_access_key_secret.get_secret_value()
    return {**unsigned, "Signature": sign(method, unsigned, secret)}


async def post_sms(
    client: httpx.AsyncClient, fake: RunningFakeProviders, params: dict[str, str]
) -> tuple[int, dict[str, str]]:
    response = await client.post(fake.settings.aliyun_sms_endpoint, data=params)
    return response.status_code, response.json()


async def test_replayed_nonce_is_refused(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    params = sms_params(fake, client)
    assert (await post_sms(client, fake, params))[1]["Code"] == "OK"
    status, body = await post_sms(client, fake, params)
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")


async def test_signature_error_shows_the_server_string_to_sign(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    params = {**sms_params(fake, client), "PhoneNumbers": "13900139000"}  # changed after signing
    status, body = await post_sms(client, fake, params)
    assert (status, body["Code"]) == (400, "SignatureDoesNotMatch")
    assert "PhoneNumbers%3D13900139000" in body["Message"]
    assert body["HostId"] == "dysmsapi.aliyuncs.com" and body["RequestId"]


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"PhoneNumbers": ""}, 400, "MissingPhoneNumbers"),
        ({"AccessKeyId": "someone-else"}, 404, "InvalidAccessKeyId.NotFound"),
        ({"Action": "SendBatchSms"}, 404, "InvalidAction.NotFound"),
        ({"Timestamp": "2025/11/24 16:00"}, 400, "InvalidTimeStamp.Format"),
        ({"SignName": "别的签名"}, 200, "isv.SMS_SIGNATURE_ILLEGAL"),
        ({"TemplateCode": "SMS_000000"}, 200, "isv.SMS_TEMPLATE_ILLEGAL"),
        ({"TemplateParam": "not json"}, 200, "isv.INVALID_JSON_PARAM"),
        ({"TemplateParam": '{"elder_name":"王秀英"}'}, 200, "isv.TEMPLATE_MISSING_PARAMETERS"),
        ({"PhoneNumbers": "13800138000,0231234567"}, 200, "isv.MOBILE_NUMBER_ILLEGAL"),
    ],
)
async def test_invalid_sendsms_requests_get_aliyun_errors(
    fake: RunningFakeProviders,
    client: httpx.AsyncClient,
    change: dict[str, str],
    status: int,
    code: str,
) -> None:
    params = resigned(fake, {**sms_params(fake, client), **change})
    reply_status, body = await post_sms(client, fake, params)
    assert (reply_status, body["Code"]) == (status, code)
    [record] = await fake.records("sms")
    assert record["outcome"] == "rejected" and record["error"] == code


def with_variables(params: dict[str, str], **variables: str) -> dict[str, str]:
    """SendSms parameters with some template variables replaced, bypassing the fitting."""
    current = json.loads(params["TemplateParam"])
    return {**params, "TemplateParam": json.dumps({**current, **variables}, ensure_ascii=False)}


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"address": "字" * 35}, "OK"),  # 35 characters, 105 bytes: characters count
        ({"address": "a" * 35, "elder_name": "名" * 35}, "OK"),
        ({"address": "字" * 36}, "isv.PARAM_LENGTH_LIMIT"),
        ({"elder_name": "b" * 36}, "isv.PARAM_LENGTH_LIMIT"),
        ({"code": "https://ack.example.cn/ack/x.y"}, "isv.PARAM_NOT_SUPPORT_URL"),
        ({"address": "见www.example.cn"}, "isv.PARAM_NOT_SUPPORT_URL"),
        ({"elder_name": "王秀英evil.com"}, "isv.PARAM_NOT_SUPPORT_URL"),  # a bare domain
    ],
)
async def test_template_variables_within_aliyun_limits(
    fake: RunningFakeProviders,
    client: httpx.AsyncClient,
    variables: dict[str, str],
    code: str,
) -> None:
    params = resigned(fake, with_variables(sms_params(fake, client), **variables))
    status, body = await post_sms(client, fake, params)
    assert (status, body["Code"]) == (200, code)
    if code == "isv.PARAM_LENGTH_LIMIT":
        assert body["Message"] == "参数超出长度限制" and "RequestId" in body
    [record] = await fake.records("sms")
    assert record["outcome"] == ("delivered" if code == "OK" else "rejected")


def test_template_review_wants_a_fixed_link_domain_and_500_characters() -> None:
    assert approvable(sms_template_bodies("https://ack.example.cn")["alert"], "智慧养老")
    assert not approvable("请查看：https://${host}/a/${code}", "智慧养老")
    assert not approvable("内容" * 200 + "${a}${b}${c}", "智慧养老")
    assert approvable("内容" * 200 + "${a}", "智慧养老")


async def test_an_unapproved_template_code_is_illegal(client: httpx.AsyncClient) -> None:
    """A body the review refuses is not registered: its code is unknown to the account."""
    settings = offline_settings(ack_base_url="https://${host}")
    async with running_fake_providers(settings) as fake:
        status, body = await post_sms(client, fake, sms_params(fake, client))
    assert (status, body["Code"]) == (200, "isv.SMS_TEMPLATE_ILLEGAL")


async def test_get_requests_signed_for_get_are_accepted(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    params = resigned(fake, sms_params(fake, client), method="GET")
    response = await client.get(fake.settings.aliyun_sms_endpoint, params=params)
    assert response.json()["Code"] == "OK"


async def test_international_prefix_and_several_numbers_are_legal(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    params = resigned(
        fake, {**sms_params(fake, client), "PhoneNumbers": "+8613800138000,13900139000"}
    )
    assert (await post_sms(client, fake, params))[1]["Code"] == "OK"


async def test_wecom_protocol_errors(fake: RunningFakeProviders, client: httpx.AsyncClient) -> None:
    base = fake.settings.wecom_base_url
    token_reply = await client.get(
        f"{base}/cgi-bin/gettoken",
        params={"corpid": fake.settings.wecom_corp_id, "corpsecret": "demo-corp-secret"},
    )
    token = token_reply.json()["access_token"]
    assert token_reply.json()["expires_in"] == 7200
    again = await client.get(
        f"{base}/cgi-bin/gettoken",
        params={"corpid": fake.settings.wecom_corp_id, "corpsecret": "demo-corp-secret"},
    )
    assert again.json()["access_token"] == token  # same token while it is valid
    wrong_corp = await client.get(
        f"{base}/cgi-bin/gettoken", params={"corpid": "x", "corpsecret": "demo-corp-secret"}
    )
    assert wrong_corp.json()["errcode"] == 40013

    send = f"{base}/cgi-bin/message/send"
    text = {"touser": "liming", "msgtype": "text", "agentid": 1000002, "text": {"content": "你好"}}

    async def errcode(body: object, access_token: str | None = token) -> int:
        params = {"access_token": access_token} if access_token else {}
        reply = await client.post(send, params=params, json=body)
        return int(reply.json()["errcode"])

    assert await errcode(text, access_token=None) == 41001
    assert await errcode(text, access_token="forged") == 40014
    assert await errcode({**text, "agentid": 1}) == 40056
    assert await errcode({**text, "msgtype": "mpnews"}) == 40008
    assert await errcode({**text, "text": {"content": ""}}) == 44004
    assert await errcode({**text, "text": {"content": "长" * 1000}}) == 45002
    assert await errcode([1, 2]) == 47001
    assert await errcode({**text, "touser": "nobody|ghost"}) == 81013
    partly = await client.post(
        send, params={"access_token": token}, json={**text, "touser": "liming|ghost"}
    )
    assert partly.json()["errcode"] == 0 and partly.json()["invaliduser"] == "ghost"


async def test_records_stats_reset_and_record_file(
    fake: RunningFakeProviders, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    channel = AliyunSmsChannel(fake.settings, client)
    for key in ("a", "a", "b"):
        assert (await channel.send(Message(key, "13800138000", "alert", PARAMS))).ok

    assert [r["index"] for r in await fake.records(since=1)] == [1, 2]
    assert await fake.records("wecom") == []
    stats = await fake.stats()
    assert stats["sms"] == {
        "requests": 3,
        "delivered": 3,  # Aliyun sends a repeated OutId again...
        "duplicates": 0,
        "delivered_again": 1,  # ...and the fake counts it
        "rejected": 0,
        "failed": 0,
    }
    lines = (tmp_path / "records.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["out_id"] for line in lines] == ["a", "a", "b"]
    assert json.loads(lines[0])["text"].startswith("【智慧养老】紧急：王秀英")

    await fake.fail("sms", count=2, mode="throttle")
    assert (await fake.stats())["pending_failures"] == {
        "sms": 2,
        "wecom": 0,
        "voice": 0,
        "sms_tencent": 0,
    }
    await fake.recover("sms")  # an outage ends
    assert (await fake.stats())["pending_failures"] == {
        "sms": 0,
        "wecom": 0,
        "voice": 0,
        "sms_tencent": 0,
    }
    await fake.fail("sms", count=2, mode="throttle")
    await fake.reset()
    assert await fake.records() == []
    assert (await fake.stats())["pending_failures"] == {
        "sms": 0,
        "wecom": 0,
        "voice": 0,
        "sms_tencent": 0,
    }
    # After a reset the OutId of earlier messages is new again.
    assert (await channel.send(Message("a", "13800138000", "alert", PARAMS))).ok
    assert [r["duplicate_of"] for r in await fake.records()] == [None]


async def test_bad_control_requests_are_rejected(fake: RunningFakeProviders) -> None:
    for body in (
        {"provider": "fax", "count": 1, "mode": "5xx"},
        {"provider": "sms", "count": 0, "mode": "5xx"},
        {"provider": "sms", "count": 1, "mode": "explode"},
    ):
        assert (await fake.http.post("/_control/fail", json=body)).status_code == 422
    assert (await fake.stats())["pending_failures"] == {
        "sms": 0,
        "wecom": 0,
        "voice": 0,
        "sms_tencent": 0,
    }


async def test_run_serves_on_the_configured_port_until_stopped(
    client: httpx.AsyncClient,
) -> None:
    port = free_port()
    settings: Settings = offline_settings(
        aliyun_sms_endpoint=f"http://127.0.0.1:{port}/aliyun-sms/",
        wecom_base_url=f"http://127.0.0.1:{port}/wecom",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))

    async def serving() -> bool:
        try:
            return (await client.get(f"http://127.0.0.1:{port}/_stats")).status_code == 200
        except httpx.TransportError:
            return False

    await await_until(serving, timeout=10, what="fake providers to listen")
    sms = AliyunSmsChannel(settings, client)
    assert (await sms.send(Message("k", "13800138000", "alert", PARAMS))).ok
    stop.set()
    await asyncio.wait_for(task, 10)
    assert not await serving()


def test_listening_socket_is_tcp_so_asyncio_disables_nagle() -> None:
    """asyncio sets TCP_NODELAY only on connections whose socket has proto IPPROTO_TCP;
    with proto 0 every response of the fakes waited ~40 ms for a delayed ACK."""
    import socket

    from simulators.fake_providers.server import bind

    with bind("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
