"""WeCom card buttons end to end over real sockets: the notifier sends the alert as a
template card, the fake WeCom pushes a button press (encrypted and signed) to the callback
app, which acknowledges and updates every card to "已由XX处理"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import pytest

from carewatch import wecom_crypto
from carewatch.settings import Settings
from harness.services import await_until
from notifier.channels.wecom import card_handled_text
from notifier.metrics import PROVIDER_CALLBACKS
from notifier.wecom_callback import parse_event
from tests.fake_provider_server import RunningFakeProviders, running_fake_providers
from tests.support.notifier import (
    GRID_WORKER_ID,
    change,
    insert_alert,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)
from tests.support.provider_callbacks import receipt_settings, running_callbacks

HANDLER = "张三（网格员）"  # the seeded grid worker, WeCom userid zhangsan


def _forbidden() -> float:
    return PROVIDER_CALLBACKS.labels("wecom_card", "forbidden")._value.get()


def _cards(dsn: str, alert_id: str) -> list[str]:
    """The WeCom users an alert card was sent to (WeCom answered a response_code)."""
    rows = query(
        dsn,
        "SELECT address FROM notifications WHERE alert_id = %s AND channel = 'wecom'"
        " AND purpose = 'alert' AND card_response_code IS NOT NULL ORDER BY id",
        alert_id,
    )
    return [str(r[0]) for r in rows]


@contextlib.asynccontextmanager
async def alert_with_cards(
    settings: Settings,
) -> AsyncIterator[tuple[RunningFakeProviders, str, list[str]]]:
    """An SOS alert sent as WeCom cards to (at least) two users, with the notifier and
    the callbacks app running: (the fake providers, the alert id, the card users)."""
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    async with running_fake_providers(receipt_settings(settings)) as fake:
        s = fake.settings
        async with running_callbacks(s), running_notifier(s):
            await publish_changes(s, change(alert_id))

            async def two_cards() -> bool:
                return len(_cards(dsn, alert_id)) >= 2

            await await_until(two_cards, 15, "alert cards sent to two WeCom users")
            yield fake, alert_id, _cards(dsn, alert_id)


async def test_button_press_acknowledges_once_and_every_card_says_who(
    settings: Settings,
) -> None:
    dsn = settings.database_url
    async with alert_with_cards(settings) as (fake, alert_id, users):
        assert "zhangsan" in users
        other = next(u for u in users if u != "zhangsan")

        # a push with a wrong signature is refused, counted, and changes nothing
        before = _forbidden()
        assert await fake.wecom_press("zhangsan", "acknowledge", forge=True) == [403]
        assert _forbidden() == before + 1
        assert query(dsn, "SELECT status FROM alerts") == [("open",)]
        # a validly signed push from an hour ago (a replay) is refused and counted too
        stale = PROVIDER_CALLBACKS.labels("wecom_card", "stale")._value.get()
        assert await fake.wecom_press("zhangsan", "acknowledge", age_s=3600) == [403]
        assert PROVIDER_CALLBACKS.labels("wecom_card", "stale")._value.get() == stale + 1
        assert query(dsn, "SELECT status FROM alerts") == [("open",)]

        # the press, pushed twice (WeCom retries): one acknowledgement
        assert await fake.wecom_press("zhangsan", "acknowledge", twice=True) == [200, 200]
        assert query(dsn, "SELECT status, acknowledged_by FROM alerts") == [
            ("acknowledged", f"grid_worker:{GRID_WORKER_ID}")
        ]
        acks = query(
            dsn,
            "SELECT count(*) FROM alert_events WHERE alert_id = %s AND action = 'acknowledged'",
            alert_id,
        )
        assert acks == [(1,)]
        assert query(dsn, "SELECT count(*) FROM ack_uses WHERE token_id LIKE 'wecom:%%'") == [(1,)]

        def updates(user: str) -> list[str]:
            return [
                str(r.text)
                for r in fake.state.book.select(provider="wecom")
                if r.template_code == "update_template_card"
                and r.outcome == "delivered"
                and r.address == user
            ]

        async def all_updated() -> bool:
            return all(updates(u) for u in users)

        await await_until(all_updated, 15, "every card updated")
        for user in users:
            assert updates(user) == [card_handled_text(HANDLER)], user

        # someone else presses later: nothing changes, their card says who has it
        assert await fake.wecom_press(other, "acknowledge") == [200]

        async def other_told() -> bool:
            return len(updates(other)) == 2

        await await_until(other_told, 15, "the later presser's card updated")
        assert updates(other)[-1] == "已由张三（网格员）处理"
        assert query(dsn, "SELECT status, acknowledged_by FROM alerts") == [
            ("acknowledged", f"grid_worker:{GRID_WORKER_ID}")
        ]
        assert query(
            dsn,
            "SELECT outcome, count(*) FROM provider_receipts WHERE kind = 'wecom_card'"
            " GROUP BY outcome ORDER BY outcome",
        ) == [("acknowledge", 1), ("beaten", 1)]
        # each response_code was spent once: no refused update
        refused = [
            r
            for r in fake.state.book.select(provider="wecom")
            if r.template_code == "update_template_card" and r.outcome != "delivered"
        ]
        assert refused == []


async def test_cards_of_an_alert_acknowledged_elsewhere_are_updated_once(
    settings: Settings,
) -> None:
    """Acknowledged another way (here straight in the table: the page, an SMS reply, key 1
    and the operator all end the same): the callbacks app's sweep updates every card."""
    dsn = settings.database_url
    async with alert_with_cards(settings) as (fake, alert_id, users):

        def acknowledge() -> None:
            with psycopg.connect(dsn) as conn:
                conn.execute(
                    "UPDATE alerts SET status = 'acknowledged', acknowledged_by = %s WHERE id = %s",
                    (f"grid_worker:{GRID_WORKER_ID}", alert_id),
                )

        await asyncio.to_thread(acknowledge)

        def updates() -> list[tuple[str | None, str | None]]:
            return [
                (r.address, r.text)
                for r in fake.state.book.select(provider="wecom")
                if r.template_code == "update_template_card"
            ]

        async def all_updated() -> bool:
            return {a for a, _ in updates()} >= set(users)

        await await_until(all_updated, 15, "the sweep to update every card")
        assert sorted(updates()) == sorted((u, card_handled_text(HANDLER)) for u in users)
        pending = query(
            dsn,
            "SELECT count(*) FROM notifications WHERE alert_id = %s"
            " AND card_response_code IS NOT NULL AND card_updated_at IS NULL",
            alert_id,
        )
        assert pending == [(0,)]


async def test_a_card_pressed_again_or_of_an_alert_that_is_over_changes_nothing(
    settings: Settings,
) -> None:
    """The same card pressed again (a new push, not WeCom's retry) is a replay of its
    ack token; a press on an alert that has ended is "closed". Neither writes a timeline
    entry or changes the alert."""
    dsn = settings.database_url
    async with alert_with_cards(settings) as (fake, alert_id, users):
        other = next(u for u in users if u != "zhangsan")
        assert await fake.wecom_press("zhangsan", "acknowledge") == [200]
        await asyncio.sleep(1.1)  # a later CreateTime: not the same push again
        assert await fake.wecom_press("zhangsan", "acknowledge") == [200]

        def resolve() -> None:
            with psycopg.connect(dsn) as conn:
                conn.execute("UPDATE alerts SET status = 'resolved' WHERE id = %s", (alert_id,))

        await asyncio.to_thread(resolve)
        before = query(dsn, "SELECT status, version, acknowledged_by FROM alerts")
        assert await fake.wecom_press(other, "acknowledge") == [200]

        assert query(dsn, "SELECT status, version, acknowledged_by FROM alerts") == before
        assert before == [("resolved", before[0][1], f"grid_worker:{GRID_WORKER_ID}")]
        assert query(
            dsn,
            "SELECT outcome, count(*) FROM provider_receipts WHERE kind = 'wecom_card'"
            " GROUP BY outcome ORDER BY outcome",
        ) == [("acknowledge", 1), ("closed", 1), ("replay", 1)]
        presses = query(
            dsn,
            "SELECT details FROM alert_events WHERE alert_id = %s AND action = 'wecom_button'",
            alert_id,
        )
        assert presses == [
            ({"recipient": f"grid_worker:{GRID_WORKER_ID}", "key": "acknowledge", "beaten": False},)
        ]


@pytest.mark.unit
def test_a_push_is_fresh_within_five_minutes_either_way() -> None:
    now = 1_796_000_000.0
    assert wecom_crypto.fresh(str(int(now)), now)
    assert wecom_crypto.fresh(str(int(now) - 300), now)
    assert wecom_crypto.fresh(str(int(now) + 300), now)
    assert not wecom_crypto.fresh(str(int(now) - 301), now)
    assert not wecom_crypto.fresh(str(int(now) + 301), now)
    assert not wecom_crypto.fresh("", now)
    assert not wecom_crypto.fresh("1e9", now)


def test_crypto_round_trip_and_refusals() -> None:
    key = "ZGVtby1vbmx5LWVuY29kaW5nLWFlcy1rZXktMzJieXQ"
    # FIPS-197 C.3: AES-256
    round_keys = wecom_crypto._expand_key(bytes(range(32)))
    block = wecom_crypto.encrypt_block(
        round_keys, bytes.fromhex("00112233445566778899aabbccddeeff")
    )
    assert block.hex() == "8ea2b7ca516745bfeafc49904b496089"
    encrypted = wecom_crypto.encrypt(key, "corp", "<xml>按钮</xml>".encode())
    assert wecom_crypto.decrypt(key, "corp", encrypted) == "<xml>按钮</xml>".encode()
    with pytest.raises(wecom_crypto.WeComCryptoError):
        wecom_crypto.decrypt(key, "another-corp", encrypted)
    sig = wecom_crypto.signature("tok", "1", "n", encrypted)
    assert wecom_crypto.verify("tok", "1", "n", encrypted, sig)
    assert not wecom_crypto.verify("tok", "2", "n", encrypted, sig)


@pytest.mark.unit
def test_only_card_events_are_taken_and_dtds_are_refused() -> None:
    event = (
        b"<xml><MsgType>event</MsgType><Event>template_card_event</Event>"
        b"<FromUserName>u</FromUserName><EventKey>acknowledge</EventKey>"
        b"<TaskId>cw-1</TaskId><ResponseCode>rc</ResponseCode><CreateTime>1</CreateTime></xml>"
    )
    parsed = parse_event(event)
    assert parsed is not None and (parsed.userid, parsed.task_id) == ("u", "cw-1")
    assert parse_event(b"<xml><MsgType>event</MsgType><Event>enter_agent</Event></xml>") is None
    with pytest.raises(ValueError, match="DTD"):
        parse_event(b'<!DOCTYPE x [<!ENTITY a "b">]><xml>&a;</xml>')
