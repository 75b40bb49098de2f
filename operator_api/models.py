"""Typed request and response bodies of the operator API (they make /openapi.json)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from carewatch.messages import AlertStatus, Severity

# Fields that may hold a phone number: masked for callers who must not see them
# (operator_api.masking.mask_model). Every other string field of a response is an id or a
# fixed label; tests/test_operator_masking.py keeps each field in one of the two kinds.
FREE_TEXT = "free text: may hold a phone number"
FreeText = Annotated[str, FREE_TEXT]
OptionalFreeText = Annotated[str | None, FREE_TEXT]
FreeJson = Annotated[dict[str, Any], FREE_TEXT]


class AlertSummary(BaseModel):
    id: UUID
    elder_id: str
    elder_name: FreeText
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
    acknowledged_by: OptionalFreeText
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
    actor: FreeText
    action: str
    details: FreeJson


class NotificationOut(BaseModel):
    id: int
    step: int
    purpose: str
    channel: str
    recipient_kind: str
    recipient_id: FreeText
    recipient_name: FreeText
    address: FreeText = Field(description="phone number (masked unless admin) or WeCom user id")
    status: str
    attempts: int
    last_error: OptionalFreeText
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


class EscalationOut(BaseModel):
    policy: str
    step: int
    next_step_at: datetime | None
    stopped_at: datetime | None
    stopped_reason: OptionalFreeText


class AlertDetail(AlertSummary):
    source_event_id: str
    rule: str
    device_time: datetime
    confirmed_at: datetime | None
    confidence: float | None
    threshold: FreeJson
    details: FreeJson
    escalation: EscalationOut | None
    events: list[AlertEventOut] = Field(description="audit timeline, oldest first")
    notifications: list[NotificationOut] = Field(description="outbox rows, oldest first")


class ActionIn(BaseModel):
    note: str = Field("", max_length=500, description="free text kept in the timeline")


class TakeOverIn(ActionIn):
    """The operator takes the alert on. `note` is passed on to everyone told."""

    stand_down: bool = Field(
        False, description="tell the others (the grid worker too) that they need not come"
    )


class DispatchIn(ActionIn):
    """The operator sends a named person; they are sent the alert with their own ack link."""

    kind: Literal["grid_worker", "station", "family", "duty_officer"] = Field(
        description="who is sent: a grid worker, a station, a family contact (its id), a duty officer"
    )
    id: str = Field(min_length=1, max_length=100)
    note_to: Literal["dispatched", "everyone"] = Field(
        "dispatched", description="who gets the note: the person sent, or everyone told"
    )
    stand_down: bool = Field(False, description="tell the others that they need not come")


class ResolveIn(ActionIn):
    outcome: Literal["handled", "hospital", "arrived_ok"] | None = Field(
        None,
        description="how it ended, told to the family: handled (已到达并处理), hospital (已送医),"
        " arrived_ok (已到达，老人无事)",
    )


class FalseAlarmIn(ActionIn):
    reason: str = Field(
        "", max_length=200, description="why it was a false alarm (required: or in `note`)"
    )


class ActionResult(BaseModel):
    alert_id: UUID
    previous_status: AlertStatus
    status: AlertStatus
    actor: FreeText
    at: datetime


class DeviceOut(BaseModel):
    id: str
    kind: str
    last_seen: datetime | None
    battery: int | None
    online: bool


class ContactOut(BaseModel):
    priority: int
    name: FreeText
    relation: FreeText
    phone: FreeText
    wecom_userid: OptionalFreeText


class ElderSummary(BaseModel):
    id: str
    name: FreeText
    district: str
    street: FreeText
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
    phone: OptionalFreeText
    address: OptionalFreeText
    lat: float
    lon: float
    care_profile_name: OptionalFreeText
    devices: list[DeviceOut]
    contacts: list[ContactOut]


class StationOut(BaseModel):
    id: str
    name: FreeText
    kind: str
    district: str
    street: OptionalFreeText
    lat: float
    lon: float
    phone: OptionalFreeText
    staffed: bool
    duty_start: time
    duty_end: time


class DurationStats(BaseModel):
    count: int
    median_s: float | None
    p90_s: float | None


class SilentElder(BaseModel):
    elder_id: str
    name: FreeText
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


# 定期巡访 (visits/, docs/visits.md)


class VisitReason(BaseModel):
    points: float
    text: FreeText = Field(
        description="why, in Chinese: 独居, 近30天告警2次, 近7天活动较前4周下降：步数-55%…"
    )


class MeasureChangeOut(BaseModel):
    measure: Literal["steps", "motion", "water"]
    recent: float = Field(description="median of the last 7 full days")
    baseline: float = Field(description="median of the 28 days before them")
    drop: float = Field(description="share lost, 0..1")


class CheckinOut(BaseModel):
    id: int
    elder_id: str
    at: datetime
    outcome: Literal["visited", "phoned", "not_home"]
    outcome_label: str
    actor: FreeText
    note: FreeText


class VisitItemOut(BaseModel):
    elder_id: str
    name: FreeText
    grid_id: str
    address: OptionalFreeText
    score: float
    reasons: list[VisitReason] = Field(description="largest first")
    decline: list[MeasureChangeOut] = Field(description="measures that fell (slow decline)")
    days_since_visit: int | None = Field(description="since the last visit or call; null: never")
    last_checkin: CheckinOut | None


class VisitList(BaseModel):
    generated_at: datetime
    items: list[VisitItemOut]


class CheckinIn(BaseModel):
    outcome: Literal["visited", "phoned", "not_home"] = Field(
        description="visited (入户走访), phoned (电话访问) or not_home (未遇本人)"
    )
    note: FreeText = Field(default="", max_length=500)


class AreaReportRow(BaseModel):
    level: Literal["street", "district"] = Field(description="district: the district's total")
    district: str
    street: str | None = Field(description="null on a district's total")
    elders: int
    visits_due: int = Field(description="独居/空巢 elders: one visit (or call) due per period")
    visits_done: int = Field(description="of those, visited or phoned in the period")
    visit_rate: float | None = Field(description="visits_done / visits_due")
    checkins: int = Field(description="check-ins in the period, any outcome")
    alerts: int = Field(description="alerts opened in the period")
    time_to_acknowledge: DurationStats
    time_to_arrive: DurationStats = Field(description="opened -> first 'arrived' event")
    false_alarms: int
    false_alarm_rate: float | None = Field(description="false_alarms / alerts")
    devices_offline: int = Field(description="devices offline now")


class AreaReport(BaseModel):
    period: Literal["week", "month"] = Field(description="Monday-Sunday or month, China time")
    start: date
    end: date = Field(description="last day of the period, inclusive")
    rows: list[AreaReportRow] = Field(description="each street, then its district's total")
