"""Typed request and response bodies of the operator API (they make /openapi.json)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from carewatch.messages import AlertStatus, Severity


class AlertSummary(BaseModel):
    id: UUID
    elder_id: str
    elder_name: str
    district: str
    grid_id: str
    kind: str
    kind_label: str = Field(description="Chinese name of the kind, e.g. 跌倒")
    severity: Severity
    status: AlertStatus
    status_label: str
    device_id: str | None
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    closed_at: datetime | None
    updates: int = Field(description="repeats folded into this alert")


class AlertPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AlertSummary]


class AlertEventOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


class NotificationOut(BaseModel):
    id: int
    step: int
    purpose: str
    channel: str
    recipient_kind: str
    recipient_id: str
    recipient_name: str
    address: str = Field(description="phone number (masked unless admin) or WeCom user id")
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


class EscalationOut(BaseModel):
    policy: str
    step: int
    next_step_at: datetime | None
    stopped_at: datetime | None
    stopped_reason: str | None


class AlertDetail(AlertSummary):
    source_event_id: str
    rule: str
    device_time: datetime
    confirmed_at: datetime | None
    confidence: float | None
    threshold: dict[str, Any]
    details: dict[str, Any]
    escalation: EscalationOut | None
    events: list[AlertEventOut] = Field(description="audit timeline, oldest first")
    notifications: list[NotificationOut] = Field(description="outbox rows, oldest first")


class ActionIn(BaseModel):
    note: str = Field("", max_length=500, description="free text kept in the timeline")


class ActionResult(BaseModel):
    alert_id: UUID
    previous_status: AlertStatus
    status: AlertStatus
    actor: str
    at: datetime


class DeviceOut(BaseModel):
    id: str
    kind: str
    last_seen: datetime | None
    battery: int | None
    online: bool


class ContactOut(BaseModel):
    priority: int
    name: str
    relation: str
    phone: str
    wecom_userid: str | None


class ElderSummary(BaseModel):
    id: str
    name: str
    district: str
    street: str
    grid_id: str
    care_profile_id: str | None
    lives_alone: bool
    last_sign_of_life: datetime | None = Field(
        description="latest telemetry or device last_seen, whichever is later"
    )
    open_alerts: int


class ElderPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ElderSummary]


class ElderDetail(ElderSummary):
    phone: str | None
    address: str | None
    lat: float
    lon: float
    care_profile_name: str | None
    devices: list[DeviceOut]
    contacts: list[ContactOut]


class StationOut(BaseModel):
    id: str
    name: str
    kind: str
    district: str
    street: str | None
    lat: float
    lon: float
    phone: str | None
    staffed: bool
    duty_start: time
    duty_end: time


class DurationStats(BaseModel):
    count: int
    median_s: float | None
    p90_s: float | None


class SilentElder(BaseModel):
    elder_id: str
    name: str
    grid_id: str
    last_sign_of_life: datetime | None


class DailyReport(BaseModel):
    date: date
    district: str | None
    grid: str | None
    alerts_total: int
    alerts_by_kind: dict[str, int]
    time_to_acknowledge: DurationStats = Field(description="opened -> first acknowledgement")
    time_to_resolve: DurationStats = Field(description="opened -> resolved")
    silent_elders: list[SilentElder] = Field(
        description="elders with no telemetry and no device contact in the 24 h before the "
        "end of the day (or now, for today)"
    )
