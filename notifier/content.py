"""What a notification says: the template parameters every adapter renders in Chinese."""

from __future__ import annotations

from carewatch.alerts import Alert, device_clock_off, event_time_ms
from carewatch.settings import Settings
from notifier import ack_links
from notifier.channels.base import Purpose
from notifier.channels.templates import kind_label
from notifier.targets import Elder, Recipient, local_time

HELP_COMING_TEXT = "已有人前来帮助，请保持冷静"
ALERT_CLOSED_TEXT = "求助已处理完毕"


__all__ = ["device_clock_off", "event_time_ms"]


def handled_since(alert: Alert, timezone: str) -> str:
    """Since when someone has `alert`, HH:MM local time: its acknowledgement, or the
    alerting event's device time when none is recorded."""
    at_ms = alert.acknowledged_ms if alert.acknowledged_ms is not None else alert.device_time_ms
    return local_time(at_ms, timezone).strftime("%H:%M")


def handled_by_text(display: str, since: str) -> str:
    """Who has an alert and since when, as both the ack page and the answer to an SMS
    reply tell anyone else: 已由张三（网格员）处理（03:12）."""
    return f"已由{display}处理（{since}）"


def message_params(
    settings: Settings,
    alert: Alert,
    elder: Elder,
    recipient: Recipient,
    purpose: Purpose,
    now_ms: int,
    handler: str | None = None,
) -> dict[str, str]:
    """Template parameters, with this recipient's own signed ack link (`link`, for WeCom
    and the page) and its short code (`code`, for the SMS; stored with the notification
    by `notifier.outbox.enqueue`).

    `time` is when it happened: the alerting event for an alert (by the device's clock,
    or the server's when the device's is off), now for an update ("handled by ... at
    HH:MM", "closed at HH:MM").
    """
    at_ms = alert.event_time_ms(settings.device_clock_max_skew_s) if purpose == "alert" else now_ms
    params = {
        "alert_id": alert.id,
        "elder_name": elder.name,
        "kind_label": kind_label(alert.kind),
        "address": elder.address,
        "time": local_time(at_ms, settings.timezone).strftime("%H:%M"),
    }
    if recipient.kind != "device":
        token = ack_links.sign(
            alert.id,
            recipient.kind,
            recipient.id,
            now_ms + settings.ack_ttl_s * 1000,
            settings.ack_secret.get_secret_value(),
        )
        params["link"] = ack_links.link_url(settings.ack_base_url, token)
        params["code"] = ack_links.new_short_code()
    else:  # a wristband command: issued now, the same on every attempt
        params["issued_ms"] = str(now_ms)
    if handler:
        params["handler"] = handler
    return params
