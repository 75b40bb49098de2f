"""The WeCom adapter against the fake provider over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from notifier.channels.base import Message
from notifier.channels.wecom import (
    CARD_TEXT_MAX_CHARS,
    CARD_TITLE_MAX_CHARS,
    DESCRIPTION_MAX_BYTES,
    TITLE_MAX_BYTES,
    WeComChannel,
    build_payload,
    interpret_reply,
    reference_of,
    task_id_of,
)
from tests.fake_provider_server import (
    RunningFakeProviders,
    offline_settings,
    running_fake_providers,
)

USERS = ("liming", "wangfang")
PARAMS = {
    "elder_name": "王秀英",
    "kind_label": "跌倒",
    "address": "民族路12号",
    "time": "08:15",
    "link": "http://127.0.0.1:8081/a/tok",
    "handler": "李明",
}


def alert(key: str = "alert-1:wecom:0", touser: str = "liming") -> Message:
    return Message(idempotency_key=key, address=touser, purpose="alert", params=PARAMS)


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeProviders]:
    settings = offline_settings(provider_timeout_s=0.5)
    async with running_fake_providers(settings, wecom_users=USERS) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


async def test_token_is_fetched_once_and_reused(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = WeComChannel(fake.settings, client)
    first = await channel.send(alert("k1", "liming"))
    second = await channel.send(alert("k2", "wangfang"))

    assert first.ok and second.ok, (first.error, second.error)
    assert first.provider_message_id != second.provider_message_id
    assert (await fake.stats())["wecom"]["gettoken_calls"] == 1
    card = (await fake.records("wecom"))[0]
    assert card["outcome"] == "delivered" and card["template_code"] == "template_card"
    assert card["address"] == "liming"
    assert card["params"]["agentid"] == fake.settings.wecom_agent_id
    template = card["params"]["template_card"]
    assert template["card_type"] == "button_interaction"
    assert template["task_id"] == task_id_of("k1") == first.card_task_id
    assert template["card_action"] == {"type": 1, "url": PARAMS["link"]}
    # 我来处理 is pressed in WeCom (a callback); 误报 opens the page (confirmation, reason)
    assert [(b["text"], b.get("key"), b.get("url")) for b in template["button_list"]] == [
        ("我来处理", "acknowledge", None),
        ("误报", None, PARAMS["link"]),
    ]
    assert first.card_response_code  # from the answer: updates the card once
    assert card["text"].startswith("跌倒警报：王秀英\n王秀英（民族路12号）于08:15检测到跌倒")


async def test_expired_token_is_refreshed_transparently(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = WeComChannel(fake.settings, client)
    assert (await channel.send(alert("k1"))).ok
    await fake.expire_tokens()

    result = await channel.send(alert("k2"))

    assert result.ok, result.error
    records = await fake.records("wecom")
    assert [(r["outcome"], r["error"]) for r in records] == [
        ("delivered", None),
        ("rejected", "42001"),
        ("delivered", None),
    ]
    assert (await fake.stats())["wecom"]["gettoken_calls"] == 2


async def test_token_unknown_to_the_provider_is_replaced(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = WeComChannel(fake.settings, client)
    assert (await channel.send(alert("k1"))).ok
    await fake.reset()  # the provider forgets every token it issued

    assert (await channel.send(alert("k2"))).ok
    assert [r["error"] for r in await fake.records("wecom")] == ["40014", None]


async def test_a_card_update_refreshes_an_expired_token_as_a_send_does(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = WeComChannel(fake.settings, client)
    sent = await channel.send(alert("k1"))
    assert sent.ok and sent.card_response_code, sent.error
    await fake.expire_tokens()

    result = await channel.update_card("liming", sent.card_response_code, "已由李明处理")

    assert result == "updated"
    updates = [r for r in await fake.records("wecom") if r["template_code"] != "template_card"]
    assert [(r["template_code"], r["outcome"], r["error"], r["text"]) for r in updates] == [
        ("update_template_card", "rejected", "42001", None),
        ("update_template_card", "delivered", None, "已由李明处理"),
    ]
    assert (await fake.stats())["wecom"]["gettoken_calls"] == 2


async def test_invalid_user_is_permanent(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    result = await WeComChannel(fake.settings, client).send(alert(touser="nobody"))
    assert not result.ok and not result.retryable
    assert result.error is not None and "81013" in result.error


async def test_a_user_without_a_license_gets_nothing_and_it_is_not_sent(
    client: httpx.AsyncClient,
) -> None:
    settings = offline_settings(provider_timeout_s=0.5)
    async with running_fake_providers(
        settings, wecom_users=USERS, wecom_unlicensed={"liming"}
    ) as fake:
        result = await WeComChannel(fake.settings, client).send(alert(touser="liming"))
        records = await fake.records("wecom")
    assert not result.ok and not result.retryable
    assert result.error == "unlicensed user: liming"
    assert [(r["outcome"], r["error"]) for r in records] == [("rejected", "unlicenseduser")]


@pytest.mark.parametrize("touser", ["@all", "@ALL", "liming|wangfang", "", "张 三"])
async def test_anything_but_one_user_is_refused_without_a_request(
    fake: RunningFakeProviders, client: httpx.AsyncClient, touser: str
) -> None:
    """'@all' would send the alert and its ack link to the whole enterprise (issue 14,
    item 9): the adapter sends to one user or to nobody."""
    result = await WeComChannel(fake.settings, client).send(alert(touser=touser))
    assert not result.ok and not result.retryable
    assert (result.error or "").startswith("not one user")
    assert await fake.records("wecom") == []


async def test_wrong_corp_secret_is_retryable(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    wrong = fake.settings.model_copy(update={"wecom_corp_secret": SecretStr("nope")})
    result = await WeComChannel(wrong, client).send(alert())
    assert not result.ok and result.retryable
    assert result.error is not None and "40001" in result.error
    assert await fake.records("wecom") == []


async def test_message_without_link_is_plain_text(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    params = {k: v for k, v in PARAMS.items() if k != "link"}
    message = Message("closed-1", "liming", "closed", params)
    assert (await WeComChannel(fake.settings, client).send(message)).ok
    [record] = await fake.records("wecom")
    assert record["template_code"] == "text"
    assert record["text"] == (
        f"王秀英的跌倒警报已于08:15结束。感谢您的关注。\n通知编号：{reference_of('closed-1')}"
    )


async def test_retry_is_suppressed_but_a_new_notification_is_delivered(
    fake: RunningFakeProviders, client: httpx.AsyncClient
) -> None:
    channel = WeComChannel(fake.settings, client)
    first = await channel.send(alert("same"))
    retry = await channel.send(alert("same"))
    reminder = await channel.send(alert("reminder"))

    assert first.ok and retry.ok and reminder.ok
    assert retry.provider_message_id == first.provider_message_id
    assert [r["outcome"] for r in await fake.records("wecom")] == [
        "delivered",
        "duplicate",
        "delivered",
    ]


@pytest.mark.parametrize(
    ("mode", "error"), [("5xx", "http 502"), ("throttle", "errcode 45009"), ("timeout", "timeout")]
)
async def test_transient_failures_are_retryable(
    fake: RunningFakeProviders, client: httpx.AsyncClient, mode: str, error: str
) -> None:
    channel = WeComChannel(fake.settings, client)
    await fake.fail("wecom", mode=mode)
    failed = await channel.send(alert())
    assert not failed.ok and failed.retryable
    assert failed.error is not None and failed.error.startswith(error)
    assert (await channel.send(alert())).ok
    assert (await fake.stats())["wecom"]["delivered"] == 1


def test_card_fits_wecom_size_limits() -> None:
    long_params = {
        **PARAMS,
        "address": "重庆市渝中区解放碑街道" * 30,
        "elder_name": "<王&秀英>" * 10,
    }
    payload = build_payload(Message("k", "liming", "handled", long_params), 1000002)
    card = payload["textcard"]
    assert len(card["title"].encode()) <= TITLE_MAX_BYTES
    assert len(card["description"].encode()) <= DESCRIPTION_MAX_BYTES
    assert "<王" not in card["description"]  # user text is escaped inside the HTML
    assert card["description"].endswith(f'<div class="gray">通知编号 {reference_of("k")}</div>')
    assert payload["enable_duplicate_check"] == 1
    assert payload["duplicate_check_interval"] == 1800


def test_alert_card_fits_wecom_limits() -> None:
    long_params = {**PARAMS, "address": "重庆市渝中区解放碑街道" * 30, "elder_name": "王" * 50}
    payload = build_payload(Message("k", "liming", "alert", long_params), 1000002)
    card = payload["template_card"]
    assert len(card["main_title"]["title"]) <= CARD_TITLE_MAX_CHARS
    assert len(card["sub_title_text"]) <= CARD_TEXT_MAX_CHARS
    assert card["sub_title_text"].endswith("…")
    assert card["main_title"]["desc"] == f"通知编号 {reference_of('k')}"
    assert payload["enable_duplicate_check"] == 1


def test_partly_invalid_recipients_still_count_as_sent() -> None:
    reply = {"errcode": 0, "errmsg": "ok", "invaliduser": "b", "msgid": "m"}
    assert interpret_reply(reply, "a|b").ok
    assert not interpret_reply(reply, "b").ok
    assert not interpret_reply(reply, "b").retryable


def test_errcode_0_to_nobody_licensed_is_not_sent() -> None:
    """errcode 0 with the recipient in unlicenseduser: WeCom delivered nothing (issue 14,
    item 9)."""
    reply = {"errcode": 0, "errmsg": "ok", "unlicenseduser": "b", "msgid": "m"}
    result = interpret_reply(reply, "b")
    assert not result.ok and not result.retryable
    assert result.error == "unlicensed user: b"
    assert interpret_reply(reply, "a|b").ok
    mixed = {"errcode": 0, "invaliduser": "a", "unlicenseduser": "b", "msgid": "m"}
    assert not interpret_reply(mixed, "a|b").ok
    assert interpret_reply({"errcode": 0, "unlicenseduser": ["b"], "msgid": "m"}, "b").ok
