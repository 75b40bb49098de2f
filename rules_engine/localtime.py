"""Local wall-clock questions detectors ask (quiet hours, day windows, hour of week).

Pure functions over epoch milliseconds and a time zone (the site's, Asia/Shanghai by
default): thresholds are written in local hours, device times are UTC epoch ms.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from carewatch.settings import Settings

SITE_TZ = ZoneInfo(str(Settings.model_fields["timezone"].default))


def _local(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz)


def hour_of_day(ms: int, tz: ZoneInfo = SITE_TZ) -> float:
    t = _local(ms, tz)
    return t.hour + t.minute / 60 + t.second / 3600


def hour_of_week(ms: int, tz: ZoneInfo = SITE_TZ) -> int:
    """0 = Monday 00:00-01:00 local, 167 = Sunday 23:00-24:00."""
    t = _local(ms, tz)
    return t.weekday() * 24 + t.hour


def in_window(ms: int, start_h: float, end_h: float, tz: ZoneInfo = SITE_TZ) -> bool:
    """Inside [start_h, end_h) local time; a window may wrap midnight (22 -> 7)."""
    h = hour_of_day(ms, tz)
    if start_h <= end_h:
        return start_h <= h < end_h
    return h >= start_h or h < end_h


def next_at_hour(ms: int, hour_h: float, tz: ZoneInfo = SITE_TZ) -> int:
    """The first instant strictly after `ms` when the local clock shows `hour_h`."""
    t = _local(ms, tz)
    minutes = round(hour_h * 60)
    at = t.replace(hour=minutes // 60 % 24, minute=minutes % 60, second=0, microsecond=0)
    if at <= t:
        at = (at + timedelta(days=1)).replace(tzinfo=tz)
    return round(at.timestamp() * 1000)


def after_window_time(
    start_ms: int, need_ms: int, start_h: float, end_h: float, tz: ZoneInfo = SITE_TZ
) -> int:
    """When `need_ms` of time inside the daily window has passed since `start_ms`.

    E.g. off the wrist at 20:50 with a 30 min allowance and a 08:00-21:00 window: 10 min
    count tonight, the other 20 tomorrow, so the answer is 08:20 the next day.
    """
    if start_h % 24 == end_h % 24:  # no window configured: all the time counts
        return start_ms + need_ms
    cursor, remaining = start_ms, need_ms
    while True:
        if in_window(cursor, start_h, end_h, tz):
            window_end = next_at_hour(cursor, end_h, tz)
            if window_end - cursor >= remaining:
                return cursor + remaining
            remaining -= window_end - cursor
            cursor = window_end
        else:
            cursor = next_at_hour(cursor, start_h, tz)
