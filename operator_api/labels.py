"""Chinese display text for the phone page and the API (labels next to machine codes)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from carewatch.labels import KIND_LABELS, SEVERITY_LABELS, STATUS_LABELS

# Chongqing keeps China Standard Time all year (no daylight saving).
CHINA_TZ = timezone(timedelta(hours=8), "CST")
SITE_TZ_NAME = "Asia/Shanghai"  # CHINA_TZ by name, for SQL and zoneinfo


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status)


def severity_label(severity: str) -> str:
    return SEVERITY_LABELS.get(severity, severity)


def ago(then: datetime | None, now: datetime) -> str:
    """'12分钟前' style age of a moment; '暂无记录' when there is none."""
    if then is None:
        return "暂无记录"
    seconds = (now - then).total_seconds()
    if seconds < 60:
        return "刚刚"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}分钟前"
    hours = minutes // 60
    if hours < 24:
        return f"{hours}小时前"
    return f"{hours // 24}天前"


def local_time(moment: datetime, now: datetime) -> str:
    """'14:05' today, '11月24日 14:05' another day (China time)."""
    here = moment.astimezone(CHINA_TZ)
    if here.date() == now.astimezone(CHINA_TZ).date():
        return here.strftime("%H:%M")
    return f"{here.month}月{here.day}日 {here.strftime('%H:%M')}"
