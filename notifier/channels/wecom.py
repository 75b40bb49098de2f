"""WeCom (企业微信) application message channel adapter.

GET /cgi-bin/gettoken gives an access token valid for `expires_in` seconds (7200); it is
cached and shared by all sends. POST /cgi-bin/message/send delivers a text card (with the
ack link behind its button) or plain text. WeCom has no idempotency key, but its duplicate
check suppresses the same content to the same user inside an interval; a short reference
derived from the idempotency key is part of the content, so a retry of one notification is
suppressed while a deliberate reminder (a new key) is not.

An alert with a link goes as a template card of the button_interaction type: 我来处理 is a
callback button (WeCom pushes a template_card_event, `notifier.wecom_callback`
acknowledges), 误报 opens the ack page (it asks for confirmation and a reason), and so does
the card itself. Its task_id is derived from the idempotency key; the response_code of the
answer lets `update_card` turn its buttons into "已由XX处理" once, when someone has it.
Other purposes keep the text card. The text card's button carries the full signed link (`params["link"]`), not the SMS's short
code: WeCom puts no 35-character limit on it and never shows the URL, and the full link
is honoured on its signature alone, without the short-link table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import html
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from carewatch.alert_lifecycle import Action
from carewatch.clock import Clock, SystemClock
from carewatch.logs import mask_phone
from carewatch.settings import Settings
from notifier.channels.base import Message, SendResult, record_send
from notifier.channels.templates import (
    MissingTemplateParams,
    clip,
    render_card_text,
    render_title,
)

log = logging.getLogger(__name__)

DUPLICATE_CHECK_INTERVAL_S = 1800
DEFAULT_TOKEN_LIFETIME_S = 7200
ERROR_MAX_LEN = 200
# A WeCom userid: letters, digits and _ . @ - (at most 64).
_ONE_USERID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
# Refresh a token this long before WeCom says it expires (or halfway, if it is shorter).
TOKEN_REFRESH_MARGIN_S = 300
# Documented size limits of a text card, in UTF-8 bytes.
TITLE_MAX_BYTES = 128
DESCRIPTION_MAX_BYTES = 512

# A template card's title and sub-title text (WeCom's limits, in characters).
CARD_TITLE_MAX_CHARS = 36
CARD_TEXT_MAX_CHARS = 160
CARD_BUTTONS = {"acknowledge": "我来处理", "false_alarm": "误报"}
# The key of the card's callback button -> the action it takes.
CARD_ACTIONS: dict[str, Action] = {"acknowledge": "acknowledge"}

TOKEN_INVALID = 40014
TOKEN_EXPIRED = 42001
TOKEN_MISSING = 41001
TOKEN_ERRORS = frozenset({TOKEN_INVALID, TOKEN_EXPIRED, TOKEN_MISSING})
# Errors of this message (recipient or content): retrying the same request cannot help.
PERMANENT_ERRCODES = frozenset(
    {
        81013,  # user & party & tag all invalid
        40003,  # invalid userid
        40008,  # invalid message type
        44004,  # empty content
        45002,  # content size out of limit
    }
)


CardUpdate = Literal["updated", "refused", "unreachable"]


class TokenError(Exception):
    """gettoken failed; the send is retryable (credentials may be fixed, WeCom may recover)."""


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at_ms: int


def reference_of(idempotency_key: str) -> str:
    """A short, stable notification number shown to the recipient."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:8].upper()


def clip_utf8(text: str, max_bytes: int) -> str:
    """Cut text to at most max_bytes of UTF-8 as `templates.clip` cuts: between whole
    characters, never inside a bracket, with an ellipsis."""
    if len(text.encode()) <= max_bytes:
        return text
    chars = min(len(text), max_bytes)
    while chars > 1 and len(clip(text, chars).encode()) > max_bytes:
        chars -= 1
    return clip(text, chars)


def _escaped_within(text: str, max_bytes: int) -> str:
    """HTML-escaped text (the card description is HTML) of at most max_bytes."""
    escaped = html.escape(text)
    if len(escaped.encode()) <= max_bytes:
        return escaped
    ellipsis_bytes = len("…".encode())
    while text and len(html.escape(text).encode()) + ellipsis_bytes > max_bytes:
        text = text[:-1]
    return html.escape(text) + "…"


def build_payload(message: Message, agent_id: int) -> dict[str, Any]:
    """The message/send JSON body (pure): a text card if there is a link, else text."""
    ref = reference_of(message.idempotency_key)
    common: dict[str, Any] = {
        "touser": message.address,
        "agentid": agent_id,
        "enable_duplicate_check": 1,
        "duplicate_check_interval": DUPLICATE_CHECK_INTERVAL_S,
    }
    link = message.params.get("link")
    if not link:
        content = f"{render_card_text(message.purpose, message.params)}\n通知编号：{ref}"
        return {**common, "msgtype": "text", "text": {"content": content}, "safe": 0}
    if message.purpose == "alert":
        return {**common, "msgtype": "template_card", "template_card": alert_card(message)}
    envelope = '<div class="normal">{}</div><div class="gray">通知编号 {}</div>'
    budget = DESCRIPTION_MAX_BYTES - len(envelope.format("", ref).encode())
    text = _escaped_within(render_card_text(message.purpose, message.params), budget)
    return {
        **common,
        "msgtype": "textcard",
        "textcard": {
            "title": clip_utf8(render_title(message.purpose, message.params), TITLE_MAX_BYTES),
            "description": envelope.format(text, ref),
            "url": link,
            "btntxt": "详情",
        },
    }


def task_id_of(idempotency_key: str) -> str:
    """The card's task_id: unique per notification, stable across retries (WeCom allows
    at most 128 of [A-Za-z0-9_-@])."""
    return "cw-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


def alert_card(message: Message) -> dict[str, Any]:
    """The button_interaction template card of an alert (pure)."""
    link = str(message.params["link"])
    text = render_card_text(message.purpose, message.params)
    return {
        "card_type": "button_interaction",
        "main_title": {
            "title": clip(render_title(message.purpose, message.params), CARD_TITLE_MAX_CHARS),
            "desc": f"通知编号 {reference_of(message.idempotency_key)}",
        },
        "sub_title_text": clip(text, CARD_TEXT_MAX_CHARS),
        "card_action": {"type": 1, "url": link},
        "task_id": task_id_of(message.idempotency_key),
        "button_list": [
            {"text": CARD_BUTTONS["acknowledge"], "style": 1, "key": "acknowledge"},
            # 误报 needs a confirmation and a reason: the page asks for them
            {"text": CARD_BUTTONS["false_alarm"], "style": 2, "type": 1, "url": link},
        ],
    }


def card_handled_text(display: str) -> str:
    """What the buttons of every card of an acknowledged alert turn into."""
    return f"已由{display}处理"


def errcode_of(reply: dict[str, Any]) -> int | None:
    """WeCom's errcode, None when absent or not an integer (a reply of the wrong shape:
    e.g. a list there must not crash a membership test with "unhashable type")."""
    errcode = reply.get("errcode")
    return errcode if isinstance(errcode, int) and not isinstance(errcode, bool) else None


def one_user(touser: str) -> bool:
    """Whether a touser names exactly one user: not "@all" (everyone in the enterprise),
    not a "|"-separated list, and a well-formed userid."""
    return touser.lower() != "@all" and bool(_ONE_USERID_RE.match(touser))


def _users(value: object) -> set[str]:
    """The userids of an invaliduser / unlicenseduser field ("a|b"); nothing else counts."""
    return set(value.split("|")) - {""} if isinstance(value, str) else set()


def interpret_reply(reply: dict[str, Any], touser: str) -> SendResult:
    """Map a message/send JSON answer to a SendResult (pure)."""
    errcode = errcode_of(reply)
    # errmsg can echo the request (the userid may be a phone number): kept short and masked.
    error = mask_phone(f"errcode {errcode}: {str(reply.get('errmsg', ''))[:ERROR_MAX_LEN]}")
    if errcode == 0:
        # errcode 0 does not mean delivered: users that are not in the directory
        # (invaliduser) or have no account license (unlicenseduser) got nothing. Only when
        # someone got it is it sent; a message to nobody fails (an operator must fix the
        # ledger or the licenses; the other channel and the next step go on meanwhile).
        invalid = _users(reply.get("invaliduser"))
        unlicensed = _users(reply.get("unlicenseduser"))
        if (invalid | unlicensed) >= set(touser.split("|")):
            why = "unlicensed user" if unlicensed else "invalid user"
            return SendResult(ok=False, retryable=False, error=mask_phone(f"{why}: {touser}"))
        return SendResult(
            ok=True,
            provider_message_id=str(reply.get("msgid") or "") or None,
            card_response_code=str(reply.get("response_code") or "") or None,
        )
    return SendResult(ok=False, retryable=errcode not in PERMANENT_ERRCODES, error=error)


class WeComChannel:
    name = "wecom"

    def __init__(
        self, settings: Settings, client: httpx.AsyncClient, clock: Clock | None = None
    ) -> None:
        self._settings = settings
        self._client = client
        self._clock = clock or SystemClock()
        self._base = settings.wecom_base_url.rstrip("/")
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()

    async def send(self, message: Message) -> SendResult:
        if not one_user(message.address):
            # "@all" is the whole enterprise, "a|b" several people: an alert and its ack
            # link go to one recipient only, whatever the ledger says
            refused = SendResult(
                ok=False, retryable=False, error=mask_phone(f"not one user: {message.address}")
            )
            return self._finish(message, refused)
        try:
            payload = build_payload(message, self._settings.wecom_agent_id)
        except MissingTemplateParams as exc:
            return self._finish(message, SendResult(ok=False, retryable=False, error=str(exc)))
        try:
            reply = await self._post_with_token("/cgi-bin/message/send", payload)
            result = interpret_reply(reply, message.address)
            if result.ok and payload["msgtype"] == "template_card":
                task_id = payload["template_card"]["task_id"]
                result = dataclasses.replace(result, card_task_id=task_id)
        except TokenError as exc:
            result = SendResult(ok=False, retryable=True, error=str(exc))
        except httpx.TimeoutException:
            result = SendResult(ok=False, retryable=True, error="timeout", ambiguous=True)
        except httpx.HTTPError as exc:
            result = SendResult(ok=False, retryable=True, error=f"network: {type(exc).__name__}")
        except _BadReply as exc:
            result = SendResult(ok=False, retryable=True, error=str(exc))
        return self._finish(message, result)

    async def update_card(self, userid: str, response_code: str, replace_name: str) -> CardUpdate:
        """Turn the buttons of one sent card into `replace_name` (message/
        update_template_card). A response_code works once: `refused` will not work on a
        retry either, `unreachable` may."""
        payload = {
            "userids": [userid],
            "agentid": self._settings.wecom_agent_id,
            "response_code": response_code,
            "button": {"replace_name": replace_name},
        }
        try:
            reply = await self._post_with_token("/cgi-bin/message/update_template_card", payload)
        except (TokenError, httpx.HTTPError, _BadReply) as exc:
            log.warning("wecom card not updated", extra={"error": str(exc)[:ERROR_MAX_LEN]})
            return "unreachable"
        errcode = errcode_of(reply)
        if errcode == 0:
            return "updated"
        log.warning("wecom card not updated", extra={"errcode": errcode})
        return "refused" if errcode is not None and errcode != -1 else "unreachable"

    async def _access_token(self) -> str:
        async with self._token_lock:  # one gettoken at a time; the others reuse its token
            token = self._token
            if token is None or self._clock.now_ms() >= token.refresh_at_ms:
                token = self._token = await self._fetch_token()
            return token.value

    def _forget(self, token: str) -> None:
        if self._token is not None and self._token.value == token:
            self._token = None

    async def _fetch_token(self) -> _Token:
        try:
            reply = await self._get_json(
                "/cgi-bin/gettoken",
                {
                    "corpid": self._settings.wecom_corp_id,
                    "corpsecret": self._settings.wecom_corp_secret.get_secret_value(),
                },
            )
        except _BadReply as exc:
            raise TokenError(f"gettoken: {exc}") from exc
        if reply.get("errcode", 0) != 0 or not reply.get("access_token"):
            raise TokenError(
                f"gettoken errcode {reply.get('errcode')}: {reply.get('errmsg')}"[:ERROR_MAX_LEN]
            )
        expires_in = reply.get("expires_in", DEFAULT_TOKEN_LIFETIME_S)
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
            raise TokenError(f"gettoken: expires_in {str(expires_in)[:20]!r} is not a lifetime")
        margin = min(TOKEN_REFRESH_MARGIN_S, expires_in // 2)
        log.info("wecom access token refreshed", extra={"expires_in": expires_in})
        return _Token(
            str(reply["access_token"]), self._clock.now_ms() + (expires_in - margin) * 1000
        )

    async def _post_with_token(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST with the cached access token. A token WeCom calls invalid, expired or
        missing (expired or revoked early, e.g. the secret was reset) is dropped and the
        request made once more with a fresh one; whatever that answers is the reply.
        Raises TokenError, httpx.HTTPError, _BadReply."""
        token = await self._access_token()
        reply = await self._post(token, path, payload)
        if errcode_of(reply) in TOKEN_ERRORS:
            self._forget(token)
            reply = await self._post(await self._access_token(), path, payload)
        return reply

    async def _post(self, token: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = await self._client.post(
            f"{self._base}{path}",
            params={"access_token": token},
            json=payload,
            timeout=self._settings.provider_timeout_s,
        )
        return _json_reply(response)

    async def _get_json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = await self._client.get(
            f"{self._base}{path}", params=params, timeout=self._settings.provider_timeout_s
        )
        return _json_reply(response)

    def _finish(self, message: Message, result: SendResult) -> SendResult:
        return record_send(log, self.name, "wecom", message, result, id_field="msgid")

    async def aclose(self) -> None:
        """Drop the cached token; the shared HTTP client belongs to the caller."""
        self._token = None


class _BadReply(Exception):
    """An HTTP answer that is not WeCom's JSON (gateway error page, 5xx)."""


def _json_reply(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise _BadReply(f"http {response.status_code}")
    try:
        data = response.json()
    except (ValueError, RecursionError) as exc:  # deep nesting exhausts the parser
        raise _BadReply("http 200: not JSON") from exc
    if not isinstance(data, dict):
        raise _BadReply("http 200: not a JSON object")
    return data
