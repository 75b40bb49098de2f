"""The ack web app: the phone page behind every signed link, and the actions on it.

GET /ack/{token} shows the alert; POST /ack/{token} (form or JSON field `action`) moves
it on: 我来处理 (acknowledge), 我也前往 (join), 已到达 (arrive), 已到达并处理 / 已送医
(resolve, with its outcome), 误报 (false_alarm: asks for confirmation and a reason
first). The first acknowledgement wins; whoever comes later is shown who has it and
when, with 我也前往 and a call button. A link is honoured only with a valid, unexpired
signature, and each link performs each action once. `/a/{code}` (the short link in an SMS) is the same page and the same actions:
the code is looked up in `ack_short_links` and its token then goes through exactly the
checks of `/ack/{token}`; an unknown code is refused like a forged link. The status
change (carewatch.alerts.transition: row, timeline, outbox) and the notifier's reaction
to it (notifier.escalation.on_acknowledged_or_closed: the escalation stops, the people
already told and the wristband get the 'handled' messages) are one transaction; the
AlertChange goes on the alerts stream after it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from carewatch import alerts, care_notes
from carewatch.alert_lifecycle import Action, TransitionError
from carewatch.alert_outbox import AlertPublisher
from carewatch.alerts import Alert
from carewatch.bus import make_bus
from carewatch.clock import Clock, SystemClock
from carewatch.http_guard import BodyLimit, SecurityHeaders
from carewatch.http_serve import serve_until
from carewatch.labels import STATUS_LABELS
from carewatch.messages import CLOSED_STATUSES, AlertChange
from carewatch.metrics import ALERTS, serve_metrics
from carewatch.settings import Settings
from notifier import ack_links, short_links, targets, timeline
from notifier.ack_links import AckClaim, AckLinkError
from notifier.channels.templates import alarm_name, kind_label
from notifier.content import handled_by_text, handled_since
from notifier.escalation import load_alert, mark_handled, on_acknowledged_or_closed
from notifier.metrics import ACK_REJECTS, ACKS
from notifier.outbox import Claimed
from notifier.sql import Conn
from notifier.worker import NotifierParts, notifier_parts

log = logging.getLogger(__name__)

# What a page can ask for: the form's `action` -> the lifecycle action it carries out.
# 'hospital' is a resolve whose outcome is 送医.
PAGE_ACTIONS: dict[str, Action] = {
    "acknowledge": "acknowledge",
    "join": "join",
    "arrive": "arrive",
    "false_alarm": "false_alarm",
    "resolve": "resolve",
    "hospital": "resolve",
}
BUTTON_LABELS: dict[str, str] = {
    "acknowledge": "我来处理",
    "join": "我也前往",
    "arrive": "已到达",
    "resolve": "已到达并处理",
    "hospital": "已送医",
    "false_alarm": "误报",
}
# Which buttons the page offers: to anyone while nobody has it, to its handler once
# acknowledged; someone else who opens it then is offered to go too, or to call them.
OPEN_BUTTONS = ("acknowledge", "arrive", "resolve", "hospital", "false_alarm")
HANDLER_BUTTONS = ("arrive", "resolve", "hospital", "false_alarm")
OTHERS_BUTTONS = ("join",)
# How a resolve ended (timeline details `outcome`), from the page's action.
RESOLVE_OUTCOMES = {"resolve": "handled", "hospital": "hospital"}
DONE_TEXT: dict[str, str] = {
    "acknowledge": "已确认由您处理，其他联系人将收到通知。",
    "join": "已记录您也在前往。",
    "arrive": "已记录您到达现场。",
    "false_alarm": "已按误报结束警报，已告知其他联系人。",
    "resolve": "已记录处理完毕，警报结束。",
    "hospital": "已记录送医，警报结束。",
}
# Why an alert was a false alarm: offered on the confirmation page; 其他 needs words.
FALSE_ALARM_REASONS = ("老人误按", "设备误报", "其他")
REASON_MAX_CHARS = 100
CONFIRM_FALSE_ALARM_TEXT = "确认这是误报吗？确认后警报结束，家属会收到误报的原因。"
REASON_REQUIRED_TEXT = "请选择或填写误报原因。"
REASON_REQUIRED_EN = "A false alarm needs a reason (field 'reason')."
LINK_REJECT_TEXT: dict[str, str] = {
    "malformed": "链接不完整或格式错误，请使用短信或企业微信中的完整链接。",
    "bad_signature": "链接无效，无法核实您的身份。",
    "expired": "链接已过期，请联系值班人员。",
}
# A short code that was never issued reads like a forged link: nobody can be identified.
LINK_REJECT_TEXT["unknown_code"] = LINK_REJECT_TEXT["bad_signature"]
# Logged of a refused path: enough to tell the routes apart, too little to reuse. A
# token's first characters are its (unsecret) payload; a short code is all secret.
LOGGED_PATH_CHARS = {ack_links.LINK_PATH: 12, ack_links.SHORT_PATH: len(ack_links.SHORT_PATH)}
REPLAY_TEXT = "此链接已提交过该操作，请勿重复提交。"
UNKNOWN_ACTION_TEXT = "无法识别的操作。"
NOT_FOUND_TEXT = "找不到该警报。"


def _template(name: str) -> Template:
    return Template((resources.files("notifier") / "templates" / name).read_text("utf-8"))


PAGE = _template("ack_page.html")
MESSAGE = _template("ack_message.html")
CONFIRM = _template("ack_confirm.html")

# --- HTTP hardening of the pages --------------------------------------------------------
# The pages' only resources are their own <style> blocks, allowed by hash; they may not
# be framed (clickjacking a 误报 button), and a form posts only back to this server.
_STYLE_HASHES = " ".join(
    "'sha256-"
    + base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode("ascii")
    + "'"
    for template in (PAGE, MESSAGE, CONFIRM)
    for style in re.findall(r"<style>(.*?)</style>", template.template, re.S)
)
# An ack form is an action, a reason and a note: a few hundred bytes.
MAX_FORM_BYTES = 16 * 1024

RESPONSE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src {_STYLE_HASHES}; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    # The link in the address bar is the credential: never sent to another site. Not
    # no-referrer: browsers then send `Origin: null` with the page's own form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
CROSS_ORIGIN_TEXT = "请直接在短信或企业微信中的链接页面上操作。"


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL, lower case, without the scheme's default port."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a bracket or port that does not parse: matches nothing
        return "invalid"
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def is_cross_origin(request: Request, base_url: str) -> bool:
    """A browser says this POST comes from a page of another site (Origin, or Referer
    when there is no Origin). Requests that carry neither are not browser form posts."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is None:
        return False
    if claimed.strip() == "null":  # sandboxed frames, data: URLs, privacy modes
        return True
    own = {_origin(base_url)}
    host = request.headers.get("host")
    if host:  # the server as this request reached it (e.g. its internal address)
        own |= {_origin(f"http://{host}"), _origin(f"https://{host}")}
    return _origin(claimed) not in own


class Replay(Exception):
    """This link already performed this action."""


@dataclass(frozen=True, slots=True)
class AckResult:
    alert: Alert  # after the action
    change: AlertChange | None  # when the status changed: in the outbox, to be published
    notifications: list[Claimed]  # leased to this process's sender: it sends them
    # an acknowledgement that came second: someone else already has the alert
    beaten: bool = False


# --- the transaction -------------------------------------------------------------------


async def apply_action(
    conn: Conn,
    settings: Settings,
    claim: AckClaim,
    action: Action,
    now_ms: int,
    lease_until_ms: int,
    details: dict[str, object] | None = None,
) -> AckResult:
    """Carry out `action` for the link's recipient; call inside a transaction. `details`
    (a false alarm's reason, a resolve's outcome) go into the timeline entry, where the
    closing messages read them. The alert row lock orders concurrent acknowledgements:
    the first wins, a later one is `beaten` and changes nothing."""
    cur = await conn.execute(
        "INSERT INTO ack_uses (token_id, action, used_at) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING token_id",
        (claim.token_id, action, timeline.from_ms(now_ms)),
    )
    if await cur.fetchone() is None:
        raise Replay
    alert = await load_alert(conn, claim.alert_id, for_update=True)
    if alert is None:
        raise LookupError(claim.alert_id)
    source = f"ack:{claim.token_id}:{action}"
    change = await alerts.transition(
        conn, alert, action, claim.actor, now_ms, source=source, details=details
    )
    after = await load_alert(conn, alert.id)
    assert after is not None
    beaten = action == "acknowledge" and not alerts.first_acknowledgement(after, claim.actor)
    queued: list[Claimed] = []
    # the notifier's reaction to the change, done here so the 'handled' messages leave
    # with the commit; marked handled, so the notifier skips the change when it arrives
    if change is not None and await mark_handled(conn, change):
        queued = await on_acknowledged_or_closed(
            conn, settings, after, change, now_ms, lease_until_ms
        )
    return AckResult(after, change, queued, beaten)


# Why a person's action named by a provider did nothing: this token already performed
# this action, or the alert has moved on past it (or is gone).
Refusal = Literal["replay", "closed"]


async def act_for_recipient(
    conn: Conn,
    settings: Settings,
    alert_id: str,
    recipient_kind: str,
    recipient_id: str,
    token_id: str,
    action: Action,
    now_ms: int,
    lease_until_ms: int,
    details: dict[str, object] | None = None,
) -> AckResult | Refusal:
    """`apply_action` for a recipient a provider names (a WeCom card press, key 1 in a
    call, an SMS reply) rather than a signed link: their claim lasts ack_ttl_s from now,
    and `token_id` (this card, call or reply) performs each action once. Call inside a
    transaction; a refusal is returned, not raised."""
    claim = AckClaim(
        alert_id, recipient_kind, recipient_id, now_ms + settings.ack_ttl_s * 1000, token_id
    )
    try:
        return await apply_action(conn, settings, claim, action, now_ms, lease_until_ms, details)
    except Replay:
        return "replay"
    except (TransitionError, LookupError):
        return "closed"


# --- rendering -------------------------------------------------------------------------


def _message_page(title: str, text: str, status_code: int) -> HTMLResponse:
    body = MESSAGE.substitute(title=html.escape(title), text=html.escape(text))
    return HTMLResponse(body, status_code=status_code)


@dataclass(frozen=True, slots=True)
class Handler:
    """Who has the alert, as the page shows them."""

    actor: str
    display: str  # "张三（网格员）"
    phone: str | None
    at: str  # HH:MM of the acknowledgement, local time


async def _handler(conn: Conn, settings: Settings, alert: Alert) -> Handler | None:
    if alert.acknowledged_by is None:
        return None
    kind, _, rid = alert.acknowledged_by.partition(":")
    found = await targets.load_recipient(conn, kind, rid)
    return Handler(
        alert.acknowledged_by,
        found.display if found else "值班人员",
        found.phone if found else None,
        handled_since(alert, settings.timezone),
    )


def _buttons(names: tuple[str, ...]) -> str:
    return "".join(
        f'<button class="{n}" name="action" value="{n}">{BUTTON_LABELS[n]}</button>' for n in names
    )


def _call_link(handler: Handler) -> str:
    if not handler.phone:
        return ""
    tel = re.sub(r"[^0-9+]", "", handler.phone)
    return f'<a class="call" href="tel:{html.escape(tel)}">联系{html.escape(handler.display)}</a>'


async def _alert_page(
    conn: Conn,
    settings: Settings,
    alert: Alert,
    notice: str | None,
    error: bool,
    viewer: str | None = None,
) -> str:
    """The alert as `viewer` (the link's actor) sees it: while nobody has it, every
    action; once acknowledged, its handler their next steps and anyone else who has it
    and when, with 我也前往 and a call button, never a "由您处理" that is not theirs."""
    elder = await targets.load_elder(conn, alert.elder_id)
    handler = await _handler(conn, settings, alert)
    at_ms = alert.event_time_ms(settings.device_clock_max_skew_s)  # a wrong device clock
    when = targets.local_time(at_ms, settings.timezone).strftime("%m月%d日 %H:%M")
    notices: list[tuple[str, bool]] = [(notice, error)] if notice else []
    care = ""
    if alert.status in CLOSED_STATUSES:
        actions = '<p class="notice">此警报已结束，无需操作。</p>'
    elif handler is None:
        actions = f'<form method="post">{_buttons(OPEN_BUTTONS)}</form>'
    elif handler.actor == viewer:
        actions = f'<form method="post">{_buttons(HANDLER_BUTTONS)}</form>'
        # the person going in: medical notes and who has the key (never in the SMS)
        care = _care_section(await care_notes.load(conn, alert.elder_id))
    else:
        if notice is None or error:
            notices.append((handled_by_text(handler.display, handler.at), False))
        actions = f'<form method="post">{_buttons(OTHERS_BUTTONS)}</form>{_call_link(handler)}'
    notice_html = "".join(
        f'<p class="{"notice error" if err else "notice"}">{html.escape(text)}</p>'
        for text, err in notices
    )
    notes = await alerts.operator_notes(conn, alert.id, viewer)  # for everyone, or this viewer
    notes_html = "".join(f'<p class="note">值班人员留言：{html.escape(n)}</p>' for n in notes)
    return PAGE.substitute(
        title=html.escape(alarm_name(kind_label(alert.kind))),
        notice=notice_html + notes_html,
        elder_name=html.escape(elder.name if elder else alert.elder_id),
        kind_label=html.escape(kind_label(alert.kind)),
        time=html.escape(when),
        address=html.escape(elder.address if elder else ""),
        status_label=html.escape(STATUS_LABELS.get(alert.status, alert.status)),
        handler=html.escape(handler.display if handler else "暂无"),
        care=care,
        actions=actions,
    )


def _care_section(notes: care_notes.CareNotes) -> str:
    """医疗与照护需求 for whoever acknowledged: what is recorded, the key holder with a
    call button, and which essentials the ledger lacks."""
    values = notes.as_dict()
    rows = "".join(
        f'<div class="row"><span class="label">{label}</span>'
        f"<span>{html.escape(values[name] or '')}</span></div>"
        for name, label in care_notes.FIELDS
        if values[name] and name != "key_holder_phone"
    )
    if notes.key_holder_phone:
        tel = re.sub(r"[^0-9+]", "", notes.key_holder_phone)
        rows += (
            f'<a class="call" href="tel:{html.escape(tel)}">'
            f"联系钥匙保管人 {html.escape(notes.key_holder_phone)}</a>"
        )
    missing = notes.missing()
    if missing:
        rows += f'<p class="label">台账中尚未登记：{"、".join(missing)}</p>'
    return f'<section class="card" id="care-needs"><h2>医疗与照护需求</h2>{rows}</section>'


def _false_alarm_page(alert_kind: str, error: bool) -> str:
    """Ask before closing an alert as a false alarm, and why (nothing is written yet)."""
    radios = "".join(
        f'<label><input type="radio" name="reason" value="{r}"> {r}</label>'
        for r in FALSE_ALARM_REASONS
    )
    text = REASON_REQUIRED_TEXT if error else CONFIRM_FALSE_ALARM_TEXT
    form = (
        '<form method="post"><input type="hidden" name="action" value="false_alarm">'
        '<input type="hidden" name="confirm" value="1">'
        f"<fieldset><legend>误报原因</legend>{radios}"
        '<input type="text" name="reason_text" maxlength="100" placeholder="其他原因（选填）">'
        '</fieldset><button class="false_alarm">确认误报</button></form>'
        '<a class="back" href="">返回，不是误报</a>'
    )
    css = "notice error" if error else "notice"
    return CONFIRM.substitute(
        title=html.escape(f"{alarm_name(kind_label(alert_kind))}：确认误报"),
        notice=f'<p class="{css}">{html.escape(text)}</p>',
        form=form,
    )


def false_alarm_reason(fields: dict[str, str]) -> str | None:
    """The reason given for a false alarm: the words typed, else the option chosen
    (其他 alone says nothing); None when there is none."""
    typed = " ".join(fields.get("reason_text", "").split())
    chosen = fields.get("reason", "").strip()
    reason = typed or ("" if chosen == "其他" else " ".join(chosen.split()))
    return reason[:REASON_MAX_CHARS] or None


def _wants_json(request: Request) -> bool:
    return "json" in request.headers.get("content-type", "") or "json" in request.headers.get(
        "accept", ""
    )


async def _read_form(request: Request) -> dict[str, str]:
    """The posted fields (form or JSON object), as strings; {} when unreadable."""
    body = await request.body()
    if "json" in request.headers.get("content-type", ""):
        try:
            data: Any = json.loads(body or b"{}")
        except (ValueError, RecursionError):  # deep nesting exhausts the parser: a 400, not a 500
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int)}
    values = parse_qs(body.decode("utf-8", errors="replace"))
    return {k: v[0] for k, v in values.items() if v}


# --- the app ---------------------------------------------------------------------------


def create_app(settings: Settings, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    secret = settings.ack_secret.get_secret_value()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with notifier_parts(settings, clock) as parts:
            bus = make_bus(settings)
            await bus.start()
            state["parts"], state["bus"] = parts, bus
            try:
                yield
            finally:
                await bus.stop()

    # No schema or docs are served: the pages are for people holding a link, and the
    # schema would only tell a stranger what to try (tests build it with app.openapi()).
    app = FastAPI(
        title="carewatch ack",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    # the middleware added last runs first: a large body is refused before anything reads it
    app.add_middleware(SecurityHeaders, headers=RESPONSE_HEADERS)
    app.add_middleware(BodyLimit, max_bytes=MAX_FORM_BYTES)

    def parts() -> NotifierParts:
        found: NotifierParts = state["parts"]
        return found

    def reject(request: Request, reason: str, text: str, status_code: int) -> Response:
        ACK_REJECTS.labels(reason).inc()
        path = request.url.path
        keep = next((n for p, n in LOGGED_PATH_CHARS.items() if path.startswith(p)), 0)
        log.info("ack refused", extra={"reason": reason, "path": path[:keep]})
        if _wants_json(request):
            return JSONResponse({"error": reason, "message": text}, status_code=status_code)
        return _message_page("无法处理", text, status_code)

    def verify(token: str) -> AckClaim | AckLinkError:
        try:
            return ack_links.verify(token, clock.now_ms(), secret)
        except AckLinkError as exc:
            return exc

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def token_for(code: str) -> str | None:
        async with parts().pool.connection() as conn:
            return await short_links.resolve(conn, code)

    def unknown_code(request: Request) -> Response:
        return reject(request, "unknown_code", LINK_REJECT_TEXT["unknown_code"], 403)

    @app.get("/a/{code}", response_class=HTMLResponse)
    async def show_short(code: str, request: Request) -> Response:
        token = await token_for(code)
        return unknown_code(request) if token is None else await show(token, request)

    @app.post("/a/{code}")
    async def act_short(code: str, request: Request) -> Response:
        token = await token_for(code)
        return unknown_code(request) if token is None else await act(token, request)

    @app.get("/ack/{token}", response_class=HTMLResponse)
    async def show(token: str, request: Request) -> Response:
        claim = verify(token)
        if isinstance(claim, AckLinkError):
            return reject(request, claim.reason, LINK_REJECT_TEXT[claim.reason], 403)
        async with parts().pool.connection() as conn:
            alert = await load_alert(conn, claim.alert_id)
            if alert is None:
                return _message_page("无法处理", NOT_FOUND_TEXT, 404)
            page = await _alert_page(conn, settings, alert, None, False, claim.actor)
            return HTMLResponse(page)

    @app.post("/ack/{token}")
    async def act(token: str, request: Request) -> Response:
        if is_cross_origin(request, settings.ack_base_url):
            return reject(request, "cross_origin", CROSS_ORIGIN_TEXT, 403)
        claim = verify(token)
        if isinstance(claim, AckLinkError):
            return reject(request, claim.reason, LINK_REJECT_TEXT[claim.reason], 403)
        fields = await _read_form(request)
        page_action = fields.get("action", "")
        if page_action not in PAGE_ACTIONS:
            return reject(request, "unknown_action", UNKNOWN_ACTION_TEXT, 400)
        act_as: Action = PAGE_ACTIONS[page_action]
        details: dict[str, object] = {}
        if act_as == "false_alarm":
            reason = false_alarm_reason(fields)
            if _wants_json(request):
                if reason is None:
                    ACK_REJECTS.labels("reason_required").inc()
                    return JSONResponse(
                        {
                            "error": "reason_required",
                            "message": REASON_REQUIRED_TEXT,
                            "message_en": REASON_REQUIRED_EN,
                        },
                        status_code=422,
                    )
            elif fields.get("confirm") != "1" or reason is None:
                # the button asks first: confirm, and say why (nothing is written yet)
                asked = fields.get("confirm") == "1"
                kind = await _kind_of(claim.alert_id)
                if kind is None:
                    return reject(request, "unknown_alert", NOT_FOUND_TEXT, 404)
                return HTMLResponse(
                    _false_alarm_page(kind, asked), status_code=422 if asked else 200
                )
            details["reason"] = reason
        elif act_as == "resolve":
            details["outcome"] = RESOLVE_OUTCOMES[page_action]
        now = clock.now_ms()
        try:
            async with parts().pool.connection() as conn, conn.transaction():
                lease_until_ms = parts().sender.lease_until_ms()
                result = await apply_action(
                    conn, settings, claim, act_as, now, lease_until_ms, details or None
                )
        except Replay:
            return reject(request, "replay", REPLAY_TEXT, 409)
        except TransitionError as exc:
            text = f"警报当前状态为“{STATUS_LABELS.get(exc.status, exc.status)}”，无法执行该操作。"
            return reject(request, "transition", text, 409)
        except LookupError:
            return reject(request, "unknown_alert", NOT_FOUND_TEXT, 404)
        ACKS.labels(act_as).inc()
        parts().sender.send_leased(result.notifications)
        if result.change is not None:
            # committed with the outbox row: if this publish fails, the rules workers'
            # sweep publishes it a few seconds later
            try:
                await AlertPublisher(state["bus"], parts().pool).publish([result.change])
            except Exception:
                log.warning(
                    "alert change left in the outbox for the sweep",
                    extra={"alert_id": claim.alert_id},
                    exc_info=True,
                )
            ALERTS.labels(result.alert.kind, result.alert.status).inc()
        log.info(
            "ack action",
            extra={
                "alert_id": claim.alert_id,
                "action": act_as,
                "actor": claim.actor,
                "beaten": result.beaten,
            },
        )
        async with parts().pool.connection() as conn:
            handler = await _handler(conn, settings, result.alert)
            done = DONE_TEXT[page_action]
            if result.beaten and handler is not None:
                done = handled_by_text(handler.display, handler.at)
            if _wants_json(request):
                return JSONResponse(
                    {
                        "ok": True,
                        "status": result.alert.status,
                        "message": done,
                        "handled_by_you": handler is not None and handler.actor == claim.actor,
                        "handler": handler.display if handler else None,
                    }
                )
            page = await _alert_page(conn, settings, result.alert, done, False, claim.actor)
        return HTMLResponse(page)

    async def _kind_of(alert_id: str) -> str | None:
        async with parts().pool.connection() as conn:
            alert = await load_alert(conn, alert_id)
        return alert.kind if alert else None

    return app


async def run(settings: Settings, stop: asyncio.Event, clock: Clock | None = None) -> None:
    """Serve the ack app on settings.ack_host:ack_port until `stop`."""
    serve_metrics(settings.metrics_port)
    await serve_until(create_app(settings, clock), settings.ack_host, settings.ack_port, stop)
