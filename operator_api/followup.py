"""/api/alerts/{id}: what a dispatcher does after the first acknowledgement: log a phone
call with its outcome, add a note, mark a false alarm with its reason, reopen.

State changes (false alarm, reopen) go through operator_api.actions and so through the
alert state owner (carewatch.alerts); a phone call and a note are timeline entries only,
written by that owner too (alerts.record), so every console and the ack page see them,
and the live stream hears of them (migration 055's trigger on alert_events). The console
(operator_api.console) calls the same functions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, StringConstraints

from carewatch import alerts
from carewatch.clock import Clock, SystemClock
from operator_api import alerts as alerts_api
from operator_api.actions import (
    AlertNotFound,
    Announce,
    Dispatch,
    HumanAction,
    act_and_announce,
)
from operator_api.auth import CurrentPrincipal, Pool
from operator_api.models import ActionResult
from operator_api.scope import Principal

router = APIRouter(prefix="/api/alerts", tags=["alerts"])

CallOutcome = Literal["answered", "no_answer", "powered_off", "wrong_number"]
CALL_OUTCOMES: dict[str, str] = {
    "answered": "接通",
    "no_answer": "未接",
    "powered_off": "关机",
    "wrong_number": "号码错误",
}
FalseAlarmReason = Literal["pressed_by_mistake", "device_fault", "elder_fine", "test", "other"]
REOPENABLE = ("resolved", "false_alarm")

Text = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Required = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class CallIn(BaseModel):
    outcome: CallOutcome = Field(description="接通 answered / 未接 no_answer / 关机 / 号码错误")
    callee: Annotated[str, StringConstraints(strip_whitespace=True, max_length=50)] = Field(
        "", description="who was called, e.g. 老人本人, 家属 王芳, 网格员"
    )
    note: Text = Field("", description="what was said")


class CallOut(BaseModel):
    alert_id: UUID
    outcome: CallOutcome
    outcome_label: str
    actor: str
    at: datetime


class NoteIn(BaseModel):
    note: Required = Field(description="free text kept in the timeline")


class ReopenIn(BaseModel):
    note: Required = Field(description="why it is reopened (required)")


async def act(
    pool: Pool,
    announce: Announce,
    principal: Principal,
    alert_id: UUID,
    action: HumanAction,
    note: str,
    details: dict[str, object] | None = None,
    *,
    dispatch: Dispatch | None = None,
) -> ActionResult:
    """operator_api.actions.act_and_announce with 404 for an unknown alert (a refused
    transition is the app's 409)."""
    try:
        return await act_and_announce(
            pool, announce, principal, alert_id, action, note, details, dispatch=dispatch
        )
    except AlertNotFound:
        raise HTTPException(404, "no such alert") from None


async def log_call(
    pool: Pool,
    principal: Principal,
    alert_id: UUID,
    call: CallIn,
    *,
    via: str = "operator_api",
    clock: Clock | None = None,
) -> CallOut:
    """A phone call about the alert on its timeline (action `call`); status and
    escalation stay. Allowed on closed alerts too (a call-back). 404 / OutOfScope like
    the API's reader."""
    alert = await alerts_api.get_alert(alert_id, principal, pool)
    at_ms = (clock or SystemClock()).now_ms()
    entry: dict[str, object] = {
        "outcome": call.outcome,
        "outcome_label": CALL_OUTCOMES[call.outcome],
        "callee": call.callee,
        "note": call.note,
        "via": via,
    }
    async with pool.connection() as conn:
        await alerts.record(conn, str(alert.id), "call", entry, at_ms=at_ms, actor=principal.actor)
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    return CallOut(
        alert_id=alert_id,
        outcome=call.outcome,
        outcome_label=CALL_OUTCOMES[call.outcome],
        actor=principal.actor,
        at=at,
    )


def reopen_refusal(
    status: str, closed_at: datetime | None, now: datetime, within: timedelta
) -> str | None:
    """Why an alert cannot be reopened now, or None (pure)."""
    if status not in REOPENABLE:
        return f"only a resolved or false-alarm alert can be reopened (it is {status!r})"
    if closed_at is not None and now - closed_at > within:
        return f"closed more than {within.total_seconds() / 3600:g} hours ago"
    return None


async def reopen(
    pool: Pool,
    announce: Announce,
    principal: Principal,
    alert_id: UUID,
    note: str,
    within: timedelta,
    *,
    details: dict[str, object] | None = None,
) -> ActionResult:
    """Take a closed alert back (acknowledged, theirs again) within `within` of its
    closing; 409 otherwise."""
    alert = await alerts_api.get_alert(alert_id, principal, pool)
    refusal = reopen_refusal(alert.status, alert.closed_at, datetime.now(UTC), within)
    if refusal is not None:
        raise HTTPException(409, refusal)
    return await act(pool, announce, principal, alert_id, "reopen", note, details)


def reopen_window(request: Request) -> timedelta:
    return timedelta(hours=request.app.state.settings.console_reopen_hours)


@router.post("/{alert_id}/calls", response_model=CallOut)
async def post_call(
    alert_id: UUID, body: CallIn, principal: CurrentPrincipal, pool: Pool
) -> CallOut:
    """Log a phone call about the alert and its outcome (timeline entry `call`)."""
    return await log_call(pool, principal, alert_id, body)


@router.post("/{alert_id}/note", response_model=ActionResult)
async def post_note(
    alert_id: UUID, body: NoteIn, request: Request, principal: CurrentPrincipal, pool: Pool
) -> ActionResult:
    """A note on the timeline; status and escalation stay as they are."""
    return await act(pool, request.app.state.announce, principal, alert_id, "note", body.note)


@router.post("/{alert_id}/reopen", response_model=ActionResult)
async def post_reopen(
    alert_id: UUID, body: ReopenIn, request: Request, principal: CurrentPrincipal, pool: Pool
) -> ActionResult:
    """Reopen a resolved or false-alarm alert within console_reopen_hours of its
    closing (409 otherwise); it becomes acknowledged by its first handler."""
    return await reopen(
        pool, request.app.state.announce, principal, alert_id, body.note, reopen_window(request)
    )
