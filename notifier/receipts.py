"""What became of a notification after the provider took it, and what that changes.

Aliyun pushes its reports to us (notifier.provider_callbacks): the SMS delivery report
(SmsReport: delivered, or failed with the carrier's code) and the voice call report
(VoiceReport: answered, busy, no answer, the key pressed). Each report is recorded on its
notification (`receipt`, `receipt_code`, `receipt_at`) and in the alert's timeline, once:
a push repeated by the provider is recognised by its identity (`provider_receipts`).

For an alert message of an open critical alert a bad report moves the escalation on at
once instead of waiting out the step (`move_on`):

- an SMS not delivered (or, found by `ReceiptWatcher`, not reported delivered within
  voice_sms_confirm_s): the same person is called (a voice notification);
- a call nobody answers is dialled again, voice_max_calls times in all; then, or when the
  person presses 2 (转给下一位), the next step is due now;
- key 1 (我来处理) acknowledges the alert: the caller (provider_callbacks) carries it out
  through the ack link's own transaction (`notifier.ack_app.apply_action`).

Parsing is pure; the recording functions run inside the caller's transaction. Lock order
is the ack path's: the alert row first, then its notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import msgspec
from psycopg.types.json import Jsonb

from carewatch.alert_lifecycle import Action
from carewatch.alerts import Alert
from carewatch.settings import Settings
from notifier import outbox, sql, targets, timeline
from notifier.channels.aliyun_sms import PROVIDER_TZ
from notifier.channels.aliyun_voice import DTMF_ACKNOWLEDGE, DTMF_NEXT
from notifier.content import handled_by_text, handled_since, message_params
from notifier.escalation import handler_display, load_alert
from notifier.loop import NotifierLoop
from notifier.outbox import Claimed, NewNotification
from notifier.sql import Conn

log = logging.getLogger(__name__)

ReceiptKind = Literal["sms_report", "voice_report", "sms_up"]
VoiceOutcome = Literal["key1", "key2", "answered", "unanswered"]

# VoiceReport status_code values of a call that was picked up: 200000 heard it to the end,
# 200001 hung up early, 200008 answered but no key within the timeout. Everything else
# (200002 busy, 200003 not answered, 200005 unreachable/refused, 200007 out of service
# area, 200010 switched off, 200011 suspended, ...) counts as not answered.
ANSWERED_CODES = frozenset({"200000", "200001", "200008"})


class BadPush(ValueError):
    """A push whose body is not what the provider sends (kept in dead_letters)."""


# --- the pushes, as the provider sends them (HTTP batch push: a JSON array) ---------------


class SmsReport(msgspec.Struct, frozen=True):
    """One SmsReport item."""

    phone_number: str
    success: bool
    biz_id: str
    send_time: str = ""
    report_time: str = ""
    err_code: str = ""
    err_msg: str = ""
    sms_size: str = ""
    out_id: str = ""

    @property
    def key(self) -> str:
        return f"{self.biz_id}:{self.out_id}"


class VoiceReport(msgspec.Struct, frozen=True):
    """One VoiceReport item (the call record after the call ended)."""

    call_id: str
    status_code: str
    out_id: str = ""
    dtmf: str = ""
    callee: str = ""
    start_time: str = ""
    end_time: str = ""
    duration: str = ""
    status_msg: str = ""

    @property
    def key(self) -> str:
        return self.call_id


class SmsUp(msgspec.Struct, frozen=True):
    """One SmsUp item: a reply someone sent to our number."""

    phone_number: str
    content: str
    sequence_id: str | int
    send_time: str = ""
    dest_code: str = ""
    sign_name: str = ""

    @property
    def key(self) -> str:
        return f"{self.phone_number}:{self.sequence_id}"


_MAX_ITEMS = 1000
_T = TypeVar("_T")


def _decode(body: bytes, item: type[_T]) -> list[_T]:
    try:
        items: list[_T] = msgspec.json.decode(body, type=list[item])  # type: ignore[valid-type]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadPush(str(exc)[:200]) from None
    if len(items) > _MAX_ITEMS:
        raise BadPush(f"more than {_MAX_ITEMS} items")
    return list(items)


def parse_sms_reports(body: bytes) -> list[SmsReport]:
    return _decode(body, SmsReport)


def parse_voice_reports(body: bytes) -> list[VoiceReport]:
    return _decode(body, VoiceReport)


def parse_sms_up(body: bytes) -> list[SmsUp]:
    return _decode(body, SmsUp)


def voice_outcome(report: VoiceReport) -> VoiceOutcome:
    """What a call report means for the escalation (pure): a key pressed wins; a call
    picked up is answered; anything else nobody answered."""
    keys = report.dtmf.strip()
    if keys[:1] == DTMF_ACKNOWLEDGE:
        return "key1"
    if keys[:1] == DTMF_NEXT:
        return "key2"
    if report.status_code in ANSWERED_CODES:
        return "answered"
    return "unanswered"


def provider_time_ms(value: str) -> int | None:
    """Epoch ms of a report time ("yyyy-MM-dd HH:mm:ss", Beijing time); None if absent."""
    try:
        parsed = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return int(parsed.replace(tzinfo=PROVIDER_TZ).timestamp() * 1000)


# --- recording ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Act:
    """An action on an alert a person took by phone (key 1, an SMS reply), to be carried
    out by the ack link's own transaction (notifier.ack_app.apply_action)."""

    alert_id: str
    recipient_kind: str
    recipient_id: str
    action: Action
    token_id: str  # in ack_uses: this call / this reply acts once
    details: dict[str, object] | None = None  # a false alarm's reason


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one push did, for the caller: rows to send now, an action to carry out, and
    an SMS answer to send (to a reply)."""

    outcome: str  # duplicate | unmatched | recorded | redial | moved_on | acknowledge ...
    queued: list[Claimed]
    act: Act | None = None
    answer: tuple[str, str] | None = None  # (phone, text) of the answer to a reply


async def claim(conn: Conn, kind: ReceiptKind, key: str, payload: object) -> bool:
    """Remember a push by its identity; False if it was seen before (a provider retry)."""
    cur = await conn.execute(
        "INSERT INTO provider_receipts (kind, receipt_key, outcome, payload)"
        " VALUES (%s, %s, 'received', %s) ON CONFLICT DO NOTHING RETURNING kind",
        (kind, key[:300], Jsonb(msgspec.to_builtins(payload))),
    )
    return await cur.fetchone() is not None


async def settle(conn: Conn, kind: ReceiptKind, key: str, outcome: str) -> None:
    await conn.execute(
        "UPDATE provider_receipts SET outcome = %s WHERE kind = %s AND receipt_key = %s",
        (outcome, kind, key[:300]),
    )


_FIND = (
    "SELECT id, alert_id::text AS alert_id, idempotency_key, step, purpose, channel,"
    " recipient_kind, recipient_id, address, status, calls_unanswered FROM notifications"
    " WHERE channel = %s AND (out_id = %s OR provider_message_id = %s)"
    " ORDER BY id DESC LIMIT 1"
)


async def _find(conn: Conn, channel: str, out_id: str, provider_id: str) -> dict[str, Any] | None:
    """The notification a report is about, by the OutId we sent (known from the start)
    or the provider's id (known once the sender recorded it)."""
    return await sql.one(conn, _FIND, (channel, out_id or None, provider_id or None))


async def record_sms_report(
    conn: Conn, settings: Settings, report: SmsReport, now_ms: int, lease_until_ms: int
) -> Recorded:
    if not await claim(conn, "sms_report", report.key, report):
        return Recorded("duplicate", [])
    row = await _find(conn, "sms", report.out_id, report.biz_id)
    if row is None:
        await settle(conn, "sms_report", report.key, "unmatched")
        return Recorded("unmatched", [])
    alert = await load_alert(conn, row["alert_id"], for_update=True)  # lock order: alert first
    receipt = "delivered" if report.success else "failed"
    at_ms = provider_time_ms(report.report_time) or now_ms
    await conn.execute(
        "UPDATE notifications SET receipt = %s, receipt_code = %s, receipt_at = %s,"
        " status = CASE WHEN %s AND status = 'sent' THEN 'delivered' ELSE status END,"
        " delivered_at = CASE WHEN %s THEN %s ELSE delivered_at END WHERE id = %s",
        (
            receipt,
            report.err_code[:100] or None,
            timeline.from_ms(at_ms),
            report.success,
            report.success,
            timeline.from_ms(at_ms),
            row["id"],
        ),
    )
    await _timeline_receipt(conn, row, receipt, report.err_code, at_ms, now_ms)
    queued: list[Claimed] = []
    outcome = "recorded"
    if not report.success and alert is not None and _moves_on(alert.status, alert.severity, row):
        queued = await move_on(conn, settings, row, "sms_undelivered", now_ms, lease_until_ms)
        outcome = "moved_on"
    await settle(conn, "sms_report", report.key, outcome)
    return Recorded(outcome, queued)


async def record_voice_report(
    conn: Conn, settings: Settings, report: VoiceReport, now_ms: int, lease_until_ms: int
) -> Recorded:
    if not await claim(conn, "voice_report", report.key, report):
        return Recorded("duplicate", [])
    row = await _find(conn, "voice", report.out_id, report.call_id)
    if row is None:
        await settle(conn, "voice_report", report.key, "unmatched")
        return Recorded("unmatched", [])
    alert = await load_alert(conn, row["alert_id"], for_update=True)
    outcome: VoiceOutcome = voice_outcome(report)
    at_ms = provider_time_ms(report.end_time) or now_ms
    unanswered = int(row["calls_unanswered"]) + (outcome == "unanswered")
    await conn.execute(
        "UPDATE notifications SET receipt = %s, receipt_code = %s, receipt_at = %s,"
        " calls_unanswered = %s,"
        " status = CASE WHEN %s AND status = 'sent' THEN 'delivered' ELSE status END,"
        " delivered_at = CASE WHEN %s THEN %s ELSE delivered_at END WHERE id = %s",
        (
            outcome,
            report.status_code[:100] or None,
            timeline.from_ms(at_ms),
            unanswered,
            outcome != "unanswered",
            outcome != "unanswered",
            timeline.from_ms(at_ms),
            row["id"],
        ),
    )
    await _timeline_receipt(
        conn, row, outcome, report.status_code, at_ms, now_ms, calls_unanswered=unanswered
    )
    result = Recorded("recorded", [])
    if alert is not None and alert.status == "open" and row["purpose"] == "alert":
        if outcome == "key1":
            act = Act(
                alert.id,
                row["recipient_kind"],
                row["recipient_id"],
                "acknowledge",
                f"voice:{report.call_id}",
            )
            result = Recorded("acknowledge", [], act)
        elif outcome == "key2":
            queued = await move_on(conn, settings, row, "passed_on_by_key2", now_ms, lease_until_ms)
            result = Recorded("moved_on", queued)
        elif outcome == "unanswered" and unanswered < settings.voice_max_calls:
            await _redial(conn, settings, row, unanswered, now_ms)
            result = Recorded("redial", [])
        elif outcome == "unanswered":
            queued = await move_on(conn, settings, row, "call_not_answered", now_ms, lease_until_ms)
            result = Recorded("moved_on", queued)
    await settle(conn, "voice_report", report.key, result.outcome)
    return result


def _moves_on(status: str, severity: str, row: dict[str, Any]) -> bool:
    return status == "open" and severity == "critical" and row["purpose"] == "alert"


async def _timeline_receipt(
    conn: Conn,
    row: dict[str, Any],
    receipt: str,
    code: str,
    at_ms: int,
    now_ms: int,
    **extra: object,
) -> None:
    await timeline.append(
        conn,
        row["alert_id"],
        "receipt",
        {
            "notification_id": row["id"],
            "channel": row["channel"],
            "recipient": f"{row['recipient_kind']}:{row['recipient_id']}",
            "step": row["step"],
            "receipt": receipt,
            "code": code[:100] or None,
            "reported_at_ms": at_ms,
            **extra,
        },
        at_ms=now_ms,
    )


async def _redial(
    conn: Conn, settings: Settings, row: dict[str, Any], unanswered: int, now_ms: int
) -> None:
    """The same voice notification is sent again (a new call) after voice_redial_s.

    The report may overtake the sender's own record of the call (still 'pending', in
    flight): the call certainly happened, so the attempt is no longer in flight, and the
    sender then leaves the row pending for the redial (notifier.outbox)."""
    due_ms = now_ms + int(settings.voice_redial_s * 1000)
    await conn.execute(
        "UPDATE notifications SET status = 'pending', next_attempt_at = %s, last_error = NULL,"
        " attempt_started_at = NULL WHERE id = %s AND status IN ('sent', 'delivered', 'pending')",
        (timeline.from_ms(due_ms), row["id"]),
    )
    await timeline.append(
        conn,
        row["alert_id"],
        "voice_redial",
        {
            "notification_id": row["id"],
            "recipient": f"{row['recipient_kind']}:{row['recipient_id']}",
            "calls_unanswered": unanswered,
            "max_calls": settings.voice_max_calls,
            "due_ms": due_ms,
        },
        at_ms=now_ms,
    )


def _round_of(idempotency_key: str) -> int:
    """The escalation round in a notification's key ('{alert}:r{n}:{step}:...')."""
    part = idempotency_key.split(":", 2)[1]
    return int(part[1:]) if part.startswith("r") and part[1:].isdigit() else 0


async def move_on(
    conn: Conn,
    settings: Settings,
    row: dict[str, Any],
    reason: str,
    now_ms: int,
    lease_until_ms: int,
) -> list[Claimed]:
    """An alert message that did not reach its recipient: call them if not yet called
    (another channel), else make the escalation's next step due now."""
    alert = await load_alert(conn, row["alert_id"])
    if alert is None or alert.status != "open":
        return []
    if row["channel"] != "voice" and settings.voice_enabled:
        queued = await _call_instead(conn, settings, row, reason, now_ms, lease_until_ms)
        if queued is not None:
            return queued
    await hasten(conn, row["alert_id"], int(row["step"]), reason, now_ms, row["id"])
    return []


async def _call_instead(
    conn: Conn,
    settings: Settings,
    row: dict[str, Any],
    reason: str,
    now_ms: int,
    lease_until_ms: int,
) -> list[Claimed] | None:
    """Queue a call to the recipient of `row`; None when a call cannot help (no phone, or
    their call for this step already ended unanswered), [] when one is already going."""
    alert = await load_alert(conn, row["alert_id"])
    recipient = await targets.load_recipient(conn, row["recipient_kind"], row["recipient_id"])
    elder = await targets.load_elder(conn, alert.elder_id) if alert else None
    if alert is None or recipient is None or elder is None:
        return None
    phone = recipient.address("voice")
    if phone is None:
        return None
    item = NewNotification(
        alert.id,
        int(row["step"]),
        "alert",
        "voice",
        recipient,
        phone,
        message_params(settings, alert, elder, recipient, "alert", now_ms),
        _round_of(row["idempotency_key"]),
    )
    queued = await outbox.enqueue_leased(conn, alert, [item], lease_until_ms, now_ms=now_ms)
    if queued:
        await timeline.append(
            conn,
            alert.id,
            "voice_queued",
            {
                "reason": reason,
                "notification_id": queued[0].id,
                "after_notification_id": row["id"],
                "recipient": f"{recipient.kind}:{recipient.id}",
                "step": int(row["step"]),
            },
            at_ms=now_ms,
        )
        return queued
    existing = await sql.one(
        conn,
        "SELECT status, receipt, calls_unanswered FROM notifications WHERE idempotency_key = %s",
        (item.idempotency_key,),
    )
    if existing is None:
        return None
    finished = existing["status"] in ("failed", "cancelled") or (
        existing["receipt"] == "unanswered"
        and int(existing["calls_unanswered"]) >= settings.voice_max_calls
    )
    return None if finished else []


async def hasten(
    conn: Conn, alert_id: str, step: int, reason: str, now_ms: int, notification_id: int
) -> bool:
    """Make the escalation's next step due now, if it is still at `step` and waiting."""
    now = timeline.from_ms(now_ms)
    cur = await conn.execute(
        "UPDATE escalations SET next_step_at = %s WHERE alert_id = %s AND stopped_at IS NULL"
        " AND step = %s AND next_step_at > %s",
        (now, alert_id, step, now),
    )
    if cur.rowcount <= 0:
        return False
    await timeline.append(
        conn,
        alert_id,
        "escalation_hastened",
        {"reason": reason, "step": step, "notification_id": notification_id},
        at_ms=now_ms,
    )
    return True


# --- SMS replies (SmsUp): 回复1由我处理，回复2误报 ----------------------------------------

REPLY_ACTIONS: dict[str, Action] = {"1": "acknowledge", "2": "false_alarm"}
# The answers to a reply (the "reply" SMS template's `result`, at most 35 characters).
REPLY_TEXTS = {
    "acknowledge": "已确认由您处理，请尽快前往",
    "false_alarm": "已按误报结束该警报",
    "reason_required": "如确认误报，请回复“2+原因”，例如：2 老人误按",
    "closed": "该警报已结束，无需处理，谢谢",
    "unknown": "未找到需要您处理的警报，谢谢",
    "unrecognised": "请回复1由我处理，或回复2误报",
}
_FULL_WIDTH = str.maketrans("０１２３４５６７８９＋", "0123456789+")
_TRAILING = "。.！!，, "
# between the 2 and its reason: "2 老人误按", "2+老人误按", "2：老人误按", "２　老人误按"
_REASON_LEAD = "+:：,，、.。 -—"
REASON_MAX_CHARS = 100


def parse_reply(content: str) -> tuple[Action, str] | None:
    """The action an SMS reply asks for and the reason given with it (pure): "1", or "2"
    followed by a false alarm's reason ("2 老人误按", "2老人误按"; "" when none was
    given); full-width digits, any white space and trailing punctuation allowed. None
    for anything else (a "1" with words after it, "12")."""
    text = " ".join(content.translate(_FULL_WIDTH).split()).rstrip(_TRAILING)
    action = REPLY_ACTIONS.get(text[:1])
    if action is None:
        return None
    rest = text[1:].lstrip(_REASON_LEAD).strip()
    if (action == "acknowledge" and rest) or text[1:2].isdigit():  # "1 好的", "12", "21"
        return None
    return action, rest[:REASON_MAX_CHARS]


async def taken_text(conn: Conn, settings: Settings, alert: Alert) -> str:
    """The answer to a reply about an alert someone else has, as the ack page says it:
    已由张三（网格员）处理（03:12）."""
    handler = await handler_display(conn, alert.acknowledged_by)
    return handled_by_text(handler, handled_since(alert, settings.timezone))


# The sender's alert SMS: the most recent one of an open alert, else the most recent.
_REPLIED_TO = """
SELECT n.alert_id::text AS alert_id, n.recipient_kind, n.recipient_id, a.status,
       a.acknowledged_by
FROM notifications n JOIN alerts a ON a.id = n.alert_id
WHERE n.channel = 'sms' AND n.purpose = 'alert' AND right(n.address, 11) = right(%s, 11)
  AND n.status IN ('sent', 'delivered', 'cancelled') AND n.sent_at IS NOT NULL
ORDER BY a.status = 'open' DESC, n.id DESC
LIMIT 1
"""


async def record_sms_up(
    conn: Conn, settings: Settings, up: SmsUp, now_ms: int, lease_until_ms: int
) -> Recorded:
    """A reply to an alert SMS: "1" acknowledges the sender's most recent open alert, "2"
    followed by a reason closes it as a false alarm with that reason (a bare "2" is asked
    for the reason and changes nothing); anything else, or a reply about an alert that is over or
    unknown, gets a short polite answer and changes nothing."""
    if not await claim(conn, "sms_up", up.key, up):
        return Recorded("duplicate", [])
    reply = parse_reply(up.content)
    row = await sql.one(conn, _REPLIED_TO, (up.phone_number,))
    if row is None:
        outcome, text = "unknown", REPLY_TEXTS["unknown"]
    elif reply is None:
        outcome, text = "unrecognised", REPLY_TEXTS["unrecognised"]
    elif row["status"] == "open" and reply == ("false_alarm", ""):
        # 误报 closes an alert: only when confirmed with a reason, as on the ack page
        outcome, text = "reason_required", REPLY_TEXTS["reason_required"]
    elif row["status"] == "open":
        action, reason = reply
        act = Act(
            row["alert_id"],
            row["recipient_kind"],
            row["recipient_id"],
            action,
            f"sms:{up.key}",
            {"reason": reason} if action == "false_alarm" else None,
        )
        await settle(conn, "sms_up", up.key, action)
        return Recorded(action, [], act, (up.phone_number, REPLY_TEXTS[action]))
    elif row["status"] == "acknowledged" and (alert := await load_alert(conn, row["alert_id"])):
        outcome, text = "taken", await taken_text(conn, settings, alert)
    else:
        outcome, text = "closed", REPLY_TEXTS["closed"]
    if row is not None:
        await timeline.append(
            conn,
            row["alert_id"],
            "sms_reply",
            {
                "recipient": f"{row['recipient_kind']}:{row['recipient_id']}",
                "content": up.content[:20],
                "outcome": outcome,
            },
            at_ms=now_ms,
        )
    await settle(conn, "sms_up", up.key, outcome)
    return Recorded(outcome, [], answer=(up.phone_number, text))


# --- SMS not confirmed in time: call -----------------------------------------------------

_UNCONFIRMED = """
SELECT n.id, n.alert_id::text AS alert_id, n.idempotency_key, n.step, n.purpose, n.channel,
       n.recipient_kind, n.recipient_id, n.address, n.status, n.calls_unanswered
FROM notifications n JOIN alerts a ON a.id = n.alert_id
WHERE n.channel = 'sms' AND n.purpose = 'alert' AND n.status = 'sent' AND n.receipt IS NULL
  AND n.sent_at <= %(before)s AND a.status = 'open' AND a.severity = 'critical'
  AND NOT EXISTS (
      SELECT 1 FROM notifications v
      WHERE v.alert_id = n.alert_id AND v.channel = 'voice' AND v.purpose = 'alert'
        AND v.step = n.step AND v.recipient_kind = n.recipient_kind
        AND v.recipient_id = n.recipient_id)
ORDER BY n.sent_at
LIMIT %(limit)s
FOR UPDATE OF a SKIP LOCKED
"""


RECEIPT_POLL_MAX_S = 5.0


class ReceiptWatcher(NotifierLoop):
    """Calls the recipient of every critical alert SMS not reported delivered within
    voice_sms_confirm_s (the carrier's report may never come: a phone switched off)."""

    async def run_due(self) -> int:
        if not self.settings.voice_enabled:
            return 0
        now = self.clock.now_ms()
        before = now - int(self.settings.voice_sms_confirm_s * 1000)
        queued: list[Claimed] = []
        async with self.pool.connection() as conn, conn.transaction():
            rows = await sql.rows(
                conn,
                _UNCONFIRMED,
                {"before": timeline.from_ms(before), "limit": self.batch_size},
            )
            for row in rows:
                queued += await move_on(
                    conn,
                    self.settings,
                    row,
                    "sms_unconfirmed",
                    now,
                    self.sender.lease_until_ms(),
                )
        self.sender.send_leased(queued)
        return len(rows)

    @staticmethod
    def poll_interval_s(settings: Settings) -> float:
        """How often to look: a tenth of voice_sms_confirm_s (a call at most that much
        later than due), at most every RECEIPT_POLL_MAX_S and at least as often as the
        outbox polls. Each look is a query joining the notifications with their alerts:
        five times a second, as the outbox polls, for a wait of two minutes, it took the
        notifier's database connections and event loop from alert changes for nothing."""
        floor_s = max(settings.outbox_poll_ms / 1000, 0.05)
        return max(floor_s, min(settings.voice_sms_confirm_s / 10, RECEIPT_POLL_MAX_S))

    async def run(self, stop: asyncio.Event) -> None:
        poll_s = self.poll_interval_s(self.settings)
        while not stop.is_set():
            await self.priority.pause()  # alert changes first
            try:
                await self.run_due()
            except Exception:
                log.exception("receipt watch poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
