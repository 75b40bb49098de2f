"""WeCom's pushes to our callback URL: a press of the alert card's 我来处理 button.

Register in the WeCom app's 接收消息 settings the URL `{public base}/callbacks/wecom/event`
with the Token (`wecom_callback_token`) and EncodingAESKey (`wecom_encoding_aes_key`).
WeCom checks the URL with a GET (echostr, answered decrypted) and POSTs each event as XML
whose Encrypt field is AES-encrypted and signed (`carewatch.wecom_crypto`). A push whose
msg_signature is not ours is refused (HTTP 403) and counted
(carewatch_provider_callbacks_total{kind="wecom_card", outcome="forbidden"}); so is a
validly signed one whose timestamp is more than wecom_crypto.PUSH_MAX_AGE_S from now
(outcome="stale": a replay).

A template_card_event of our alert card (found by its TaskId, pressed by the user it went
to) carries out the button's action through the ack link's own transaction
(`notifier.ack_app.apply_action`, one ack_uses token per card), so the first
acknowledgement wins as on the page. Each push is recorded once (`provider_receipts`, kind
wecom_card), so WeCom's retries of a push act once. Then every card of the alert is turned
into "已由XX处理" (message/update_template_card, once per card; the pressed card with the
response_code of the press, so a later press shows its presser who has the alert).
`CardUpdater.run` (started by the provider-callbacks app) does the same for alerts
acknowledged any other way, and turns the cards of an alert closed unacknowledged into
"警报已结束".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import cast

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from carewatch import wecom_crypto
from carewatch.clock import Clock
from carewatch.messages import CLOSED_STATUSES, AlertChange
from carewatch.settings import Settings
from notifier import receipts, sql, timeline
from notifier.ack_app import act_for_recipient
from notifier.channels.wecom import CARD_ACTIONS, WeComChannel, card_handled_text
from notifier.escalation import handler_display, load_alert
from notifier.metrics import PROVIDER_CALLBACKS
from notifier.outbox import Claimed
from notifier.sql import Conn
from notifier.worker import NotifierParts

log = logging.getLogger(__name__)

PATH = "/callbacks/wecom/event"
KIND = cast(receipts.ReceiptKind, "wecom_card")
# An event is a few hundred bytes of XML.
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class CardEvent:
    userid: str
    key: str
    task_id: str
    response_code: str
    create_time: str

    @property
    def receipt_key(self) -> str:
        return f"{self.task_id}:{self.userid}:{self.key}:{self.create_time}"


class BadEvent(ValueError):
    """Not WeCom's XML."""


def _xml(data: bytes) -> ET.Element:
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise BadEvent("DTDs are not accepted")
    try:
        # no DTD (checked above): no entity expansion; expat refuses external entities
        return ET.fromstring(data)  # noqa: S314
    except ET.ParseError as exc:
        raise BadEvent(f"not XML: {exc}") from exc


def _text(root: ET.Element, tag: str) -> str:
    return (root.findtext(tag) or "").strip()


def parse_event(plain: bytes) -> CardEvent | None:
    """The card event in a decrypted push; None for any other event."""
    root = _xml(plain)
    if _text(root, "MsgType") != "event" or _text(root, "Event") != "template_card_event":
        return None
    event = CardEvent(
        _text(root, "FromUserName"),
        _text(root, "EventKey"),
        _text(root, "TaskId"),
        _text(root, "ResponseCode"),
        _text(root, "CreateTime"),
    )
    if not (event.userid and event.task_id):
        raise BadEvent("a card event without FromUserName or TaskId")
    return event


_CARD = (
    "SELECT id, alert_id::text AS alert_id, recipient_kind, recipient_id, address"
    " FROM notifications WHERE card_task_id = %s AND channel = 'wecom'"
)


def add_routes(
    app: FastAPI,
    settings: Settings,
    clock: Clock,
    parts: Callable[[], NotifierParts],
    publish: Callable[[AlertChange], Awaitable[None]],
    background: set[asyncio.Task[None]],
) -> None:
    """The callback URL's routes; card updates run in `background` (awaited at shutdown)."""
    token = settings.wecom_callback_token.get_secret_value()
    aes_key = settings.wecom_encoding_aes_key.get_secret_value()
    wecom_crypto.aes_key(aes_key)  # a malformed EncodingAESKey stops the app at start
    corp_id = settings.wecom_corp_id

    def verified(request: Request, encrypted: str) -> bytes | None:
        q = request.query_params
        if not wecom_crypto.verify(
            token, q.get("timestamp", ""), q.get("nonce", ""), encrypted, q.get("msg_signature", "")
        ):
            PROVIDER_CALLBACKS.labels(KIND, "forbidden").inc()
            log.warning("wecom push refused: wrong signature")
            return None
        if not wecom_crypto.fresh(q.get("timestamp", ""), clock.now_ms() / 1000):
            PROVIDER_CALLBACKS.labels(KIND, "stale").inc()
            log.warning("wecom push refused: timestamp %r too far from now", q.get("timestamp"))
            return None
        try:
            return wecom_crypto.decrypt(aes_key, corp_id, encrypted)
        except wecom_crypto.WeComCryptoError as exc:
            PROVIDER_CALLBACKS.labels(KIND, "forbidden").inc()
            log.warning("wecom push refused: %s", exc)
            return None

    @app.get(PATH)
    async def verify_url(request: Request) -> PlainTextResponse:
        """WeCom's check of the URL: the decrypted echostr proves we hold the keys."""
        plain = verified(request, request.query_params.get("echostr", ""))
        if plain is None:
            return PlainTextResponse("forbidden", status_code=403)
        return PlainTextResponse(plain.decode())

    @app.post(PATH)
    async def event(request: Request) -> PlainTextResponse:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            PROVIDER_CALLBACKS.labels(KIND, "too_large").inc()
            return PlainTextResponse("too large", status_code=413)
        try:
            encrypted = _text(_xml(body), "Encrypt")
        except BadEvent:
            PROVIDER_CALLBACKS.labels(KIND, "bad_push").inc()
            return PlainTextResponse("bad request", status_code=400)
        plain = verified(request, encrypted)
        if plain is None:
            return PlainTextResponse("forbidden", status_code=403)
        try:
            card_event = parse_event(plain)
        except BadEvent as exc:
            PROVIDER_CALLBACKS.labels(KIND, "bad_push").inc()
            log.warning("wecom push rejected", extra={"detail": str(exc)})
            return PlainTextResponse("bad request", status_code=400)
        if card_event is None:
            PROVIDER_CALLBACKS.labels(KIND, "ignored").inc()
            return PlainTextResponse("")
        await _record(card_event)
        return PlainTextResponse("")  # WeCom wants an answer within 5 s; no passive reply

    async def _record(ev: CardEvent) -> None:
        sender = parts().sender
        now = clock.now_ms()
        change: AlertChange | None = None
        queued: list[Claimed] = []
        alert_id: str | None = None
        async with parts().pool.connection() as conn, conn.transaction():
            if not await receipts.claim(conn, KIND, ev.receipt_key, asdict(ev)):
                outcome = "duplicate"
            else:
                outcome, alert_id, change, queued = await _act(conn, ev, now)
                await receipts.settle(conn, KIND, ev.receipt_key, outcome)
        PROVIDER_CALLBACKS.labels(KIND, outcome).inc()
        sender.send_leased(queued)
        if change is not None:
            try:  # committed with its outbox row: the rules workers' sweep retries it
                await publish(change)
            except Exception:
                log.warning("alert change left in the outbox for the sweep", exc_info=True)
        if alert_id is not None:
            task = asyncio.create_task(_update_cards(alert_id, ev))
            background.add(task)
            task.add_done_callback(background.discard)
        log.info("wecom card event", extra={"outcome": outcome, "task_id": ev.task_id})

    async def _update_cards(alert_id: str, ev: CardEvent) -> None:
        await CardUpdater(parts).update_alert(alert_id, ev)

    async def _act(
        conn: Conn, ev: CardEvent, now_ms: int
    ) -> tuple[str, str | None, AlertChange | None, list[Claimed]]:
        row = await sql.one(conn, _CARD, (ev.task_id,))
        if row is None or row["address"] != ev.userid:
            return "unmatched", None, None, []
        # this card is updated with the press's own response_code (CardUpdater below),
        # never by the sweep with its send's
        await conn.execute(
            "UPDATE notifications SET card_updated_at = %s WHERE id = %s",
            (timeline.from_ms(now_ms), row["id"]),
        )
        action = CARD_ACTIONS.get(ev.key)
        if action is None:
            return "unrecognised", row["alert_id"], None, []
        result = await act_for_recipient(
            conn,
            settings,
            row["alert_id"],
            row["recipient_kind"],
            row["recipient_id"],
            f"wecom:{ev.task_id}",
            action,
            now_ms,
            parts().sender.lease_until_ms(),
        )
        if isinstance(result, str):  # "replay" or "closed"
            return result, row["alert_id"], None, []
        await timeline.append(
            conn,
            row["alert_id"],
            "wecom_button",
            {
                "recipient": f"{row['recipient_kind']}:{row['recipient_id']}",
                "key": ev.key,
                "beaten": result.beaten,
            },
            at_ms=now_ms,
        )
        outcome = "beaten" if result.beaten else action
        return outcome, row["alert_id"], result.change, result.notifications


# Alerts someone has (or that are over) with a card not yet updated, sent within the 72
# hours a response_code lasts.
_DUE = """
SELECT DISTINCT n.alert_id::text AS alert_id
FROM notifications n JOIN alerts a ON a.id = n.alert_id
WHERE n.channel = 'wecom' AND n.card_response_code IS NOT NULL AND n.card_updated_at IS NULL
  AND (a.acknowledged_by IS NOT NULL OR a.status IN ('resolved', 'cancelled', 'false_alarm'))
  AND n.sent_at > now() - interval '71 hours'
LIMIT %s
"""
_CLAIM = """
UPDATE notifications SET card_updated_at = now()
WHERE alert_id = %s AND channel = 'wecom' AND card_task_id IS NOT NULL
  AND card_task_id <> %s AND card_updated_at IS NULL AND card_response_code IS NOT NULL
RETURNING id, address, card_response_code
"""
CLOSED_CARD_TEXT = "警报已结束"


class CardUpdater:
    """Turns every card of an alert someone has into "已由XX处理" (of an alert that ended
    unacknowledged: "警报已结束"), each card once: right after a press, and by `run` for
    acknowledgements made any other way (page, SMS reply, key 1, the operator)."""

    def __init__(self, parts: Callable[[], NotifierParts], poll_s: float = 2.0) -> None:
        self._parts = parts
        self._poll_s = poll_s

    async def update_alert(self, alert_id: str, pressed: CardEvent | None = None) -> int:
        """Update the alert's cards; the pressed card with the press's own response_code
        (its send's may be spent). Returns how many were updated; never raises."""
        try:
            return await self._update(alert_id, pressed)
        except Exception:
            log.exception("wecom cards not updated", extra={"alert_id": alert_id})
            return 0

    async def _update(self, alert_id: str, pressed: CardEvent | None) -> int:
        parts = self._parts()
        channel = parts.channels.get("wecom")
        if not isinstance(channel, WeComChannel):
            return 0
        async with parts.pool.connection() as conn:
            alert = await load_alert(conn, alert_id)
            if alert is None:
                return 0
            if alert.acknowledged_by is not None:
                text = card_handled_text(await handler_display(conn, alert.acknowledged_by))
            elif alert.status in CLOSED_STATUSES:
                text = CLOSED_CARD_TEXT
            else:
                return 0
            pressed_task = pressed.task_id if pressed else ""
            # claimed before the calls: each card once (a pressed one with the press)
            cards = await sql.rows(conn, _CLAIM, (alert_id, pressed_task))
            jobs = [(None, pressed.userid, pressed.response_code)] if pressed else []
            jobs += [(c["id"], c["address"], c["card_response_code"]) for c in cards]
            updated = 0
            for notification_id, userid, code in jobs:
                if not code:
                    continue
                result = await channel.update_card(userid, code, text)
                updated += result == "updated"
                if notification_id is None:
                    continue
                if result == "refused":  # that code will not work again
                    await conn.execute(
                        "UPDATE notifications SET card_response_code = NULL WHERE id = %s",
                        (notification_id,),
                    )
                elif result == "unreachable":  # the next sweep tries again
                    await conn.execute(
                        "UPDATE notifications SET card_updated_at = NULL WHERE id = %s",
                        (notification_id,),
                    )
            return updated

    async def run_due(self, limit: int = 50) -> int:
        async with self._parts().pool.connection() as conn:
            due = await sql.rows(conn, _DUE, (limit,))
        return sum([await self.update_alert(row["alert_id"]) for row in due])

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every poll_s until `stop`."""
        while not stop.is_set():
            try:
                await self.run_due()
            except Exception:
                log.exception("wecom card sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_s)
