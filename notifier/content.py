"""What a notification says: the template parameters every adapter renders in Chinese."""

from __future__ import annotations

from dataclasses import dataclass

from carewatch.settings import Settings
from notifier import ack_links
from notifier.channels.base import Purpose
from notifier.channels.templates import kind_label
from notifier.targets import Elder, Recipient, local_time

HELP_COMING_TEXT = "已有人前来帮助，请保持冷静"
ALERT_CLOSED_TEXT = "求助已处理完毕"


@dataclass(frozen=True, slots=True)
class AlertInfo:
    """The alert fields notifications and the ack page need."""

    id: str
    elder_id: str
    device_id: str | None
    kind: str
    severity: str
    status: str
    device_time_ms: int
    version: int
    acknowledged_by: str | None = None
    # when the server opened the alert (the rules engine's clock, moments after it
    # received the event); None when not known
    opened_ms: int | None = None

    def event_time_ms(self, max_skew_s: float) -> int:
        """When it happened, to tell people: see `event_time_ms`."""
        return event_time_ms(self.device_time_ms, self.opened_ms, max_skew_s)


# A device clock this far ahead of the server's is wrong, not early.
DEVICE_AHEAD_TOLERANCE_MS = 5_000


def device_clock_off(device_time_ms: int, server_ms: int | None, max_skew_s: float) -> bool:
    """Whether a device's timestamp cannot be right: ahead of the server's receive time, or
    behind it by more than max_skew_s (pure). Unknown server time: trust the device."""
    if server_ms is None:
        return False
    behind_ms = server_ms - device_time_ms
    return behind_ms < -DEVICE_AHEAD_TOLERANCE_MS or behind_ms > max_skew_s * 1000


def event_time_ms(device_time_ms: int, server_ms: int | None, max_skew_s: float) -> int:
    """The time a message says it happened: the device's own, unless the device clock is
    off (a reset or drifting wristband said "16:02" of a press at 19:02); then the time
    the server received it (pure)."""
    if device_clock_off(device_time_ms, server_ms, max_skew_s):
        assert server_ms is not None
        return server_ms
    return device_time_ms


def message_params(
    settings: Settings,
    alert: AlertInfo,
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
