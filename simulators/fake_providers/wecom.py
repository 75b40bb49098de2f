"""Fake WeCom (企业微信) server API: gettoken and message/send for text and text cards.

Tokens are issued per corp secret and checked on every send (missing 41001, unknown
40014, expired 42001). Recipients are checked against a directory (any well-formed
userid when none is configured); if every recipient is invalid the send fails with
81013, otherwise the invalid ones are listed in `invaliduser`. Users without an account
license (`unlicensed`) are listed in `unlicenseduser` and get nothing, with errcode 0, as
WeCom does. With
enable_duplicate_check, the same content to the same users inside the interval is
accepted but not delivered again, as WeCom does.

An alert comes as a template card (button_interaction): its answer carries a
response_code, and `press` makes one of its recipients press a callback button: the fake
pushes the template_card_event to our callback URL as WeCom does (XML, AES-encrypted with
the EncodingAESKey, signed with the Token), with a fresh response_code.
message/update_template_card spends a response_code (once) and records the new button
text under provider "wecom", template_code "update_template_card".
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape

import httpx
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from carewatch import wecom_crypto
from carewatch.clock import Clock
from carewatch.settings import Settings
from simulators.fake_providers.faults import hang_until_disconnect
from simulators.fake_providers.records import FailurePlan, RecordBook

TOKEN_TTL_S = 7200
MAX_DUPLICATE_CHECK_INTERVAL_S = 4 * 3600
DEFAULT_DUPLICATE_CHECK_INTERVAL_S = 1800
TEXT_MAX_BYTES = 2048
TITLE_MAX_BYTES = 128
DESCRIPTION_MAX_BYTES = 512
_USERID_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_TAG_RE = re.compile(r"<[^>]+>")
_TASK_ID_RE = re.compile(r"^[A-Za-z0-9_@-]{1,128}$")
CARD_TYPES = ("button_interaction",)
INVALID_RESPONSE_CODE = 40058  # "invalid parameter": a response_code unknown or spent


class WeComError(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


def _reply(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _error_reply(error: WeComError) -> JSONResponse:
    return _reply({"errcode": error.errcode, "errmsg": error.errmsg})


class WeComFake:
    def __init__(
        self,
        settings: Settings,
        book: RecordBook,
        failures: FailurePlan,
        clock: Clock,
        hang_s: float,
        users: Iterable[str] | None = None,
        unlicensed: Iterable[str] = (),
    ) -> None:
        self._corp_id = settings.wecom_corp_id
        self._corp_secret = settings.wecom_corp_secret.get_secret_value()
        self._agent_id = settings.wecom_agent_id
        self._users = set(users) if users is not None else None
        self._unlicensed = set(unlicensed)  # in the directory, without an account license
        self._book = book
        self._failures = failures
        self._clock = clock
        self._hang_s = hang_s
        self._tokens: dict[str, int] = {}  # token -> expiry epoch ms
        self._current: str | None = None
        self._recent: dict[str, tuple[int, int, str]] = {}  # dedup key -> (ms, index, msgid)
        self._token_cb = settings.wecom_callback_token.get_secret_value()
        self._aes_key = settings.wecom_encoding_aes_key.get_secret_value()
        self.callback_url = (
            f"http://{settings.callbacks_host}:{settings.callbacks_port}/callbacks/wecom/event"
        )
        self._cards: dict[str, dict[str, Any]] = {}  # task_id -> card, buttons, touser
        self._codes: dict[str, tuple[str, str]] = {}  # unspent response_code -> (task, user)

    def reset(self) -> None:
        self._tokens.clear()
        self._current = None
        self._recent.clear()
        self._cards.clear()
        self._codes.clear()

    def expire_tokens(self) -> int:
        """Make every issued token expired (as after 7200 s); returns how many."""
        now_ms = self._clock.now_ms()
        for token in self._tokens:
            self._tokens[token] = min(self._tokens[token], now_ms - 1)
        self._current = None
        return len(self._tokens)

    async def gettoken(self, request: Request) -> Response:
        self._book.note_gettoken()
        corp_id = request.query_params.get("corpid", "")
        corp_secret = request.query_params.get("corpsecret", "")
        if not corp_id:
            return _error_reply(WeComError(41002, "corpid missing"))
        if corp_id != self._corp_id:
            return _error_reply(WeComError(40013, "invalid corpid"))
        if not corp_secret:
            return _error_reply(WeComError(41004, "corpsecret missing"))
        if corp_secret != self._corp_secret:
            return _error_reply(WeComError(40001, "invalid credential"))
        now_ms = self._clock.now_ms()
        # Like WeCom, repeated calls inside the validity return the same token.
        if self._current is None or self._tokens[self._current] <= now_ms:
            self._current = secrets.token_urlsafe(48)
            self._tokens[self._current] = now_ms + TOKEN_TTL_S * 1000
        expires_in = (self._tokens[self._current] - now_ms) // 1000
        return _reply(
            {"errcode": 0, "errmsg": "ok", "access_token": self._current, "expires_in": expires_in}
        )

    async def send(self, request: Request) -> Response:
        now_ms = self._clock.now_ms()
        raw = await request.body()
        try:
            self._check_token(request.query_params.get("access_token", ""), now_ms)
            body = _json_object(raw)
        except WeComError as error:
            self._book.add("wecom", now_ms, "rejected", error=str(error.errcode))
            return _error_reply(error)
        fields: dict[str, Any] = {
            "address": str(body.get("touser", "")),
            "template_code": str(body.get("msgtype", "")),
            "params": body,
        }

        failure = self._failures.take("wecom")
        if failure == "5xx":
            self._book.add("wecom", now_ms, "failed", error="injected 5xx", **fields)
            return Response(
                "<html><body>502 Bad Gateway</body></html>", 502, media_type="text/html"
            )
        if failure == "throttle":
            self._book.add("wecom", now_ms, "failed", error="45009", **fields)
            return _error_reply(WeComError(45009, "api freq out of limit"))
        if failure == "timeout":
            self._book.add("wecom", now_ms, "failed", error="injected timeout", **fields)
            await hang_until_disconnect(request, self._hang_s)
            return _error_reply(WeComError(-1, "system busy"))

        response = self._deliver(body, fields, now_ms)
        if failure == "timeout_after_send":
            await hang_until_disconnect(request, self._hang_s)
        return response

    def _check_token(self, token: str, now_ms: int) -> None:
        if not token:
            raise WeComError(41001, "access_token missing")
        expiry = self._tokens.get(token)
        if expiry is None:
            raise WeComError(40014, "invalid access_token")
        if expiry <= now_ms:
            raise WeComError(42001, "access_token expired")

    def _deliver(self, body: dict[str, Any], fields: dict[str, Any], now_ms: int) -> Response:
        try:
            text = self._render(body)
            valid, invalid = self._recipients(str(body.get("touser", "")))
        except WeComError as error:
            self._book.add("wecom", now_ms, "rejected", error=str(error.errcode), **fields)
            return _error_reply(error)
        unlicensed = [u for u in valid if u in self._unlicensed]
        valid = [u for u in valid if u not in self._unlicensed]
        result: dict[str, Any] = {
            "errcode": 0,
            "errmsg": "ok",
            "invaliduser": "|".join(invalid),
            "invalidparty": "",
            "invalidtag": "",
            "unlicenseduser": "|".join(unlicensed),
        }
        if not valid:  # WeCom answers errcode 0, and nobody gets the message
            self._book.add("wecom", now_ms, "rejected", error="unlicenseduser", **fields)
            return _reply(result)
        key = self._dedup_key(body, valid)
        seen = self._recent.get(key) if key else None
        if key and seen and now_ms - seen[0] < _interval_ms(body):
            self._book.add(
                "wecom",
                now_ms,
                "duplicate",
                text=text,
                dedup_key=key,
                duplicate_of=seen[1],
                message_id=seen[2],
                **fields,
            )
            return _reply({**result, "msgid": seen[2]})
        msgid = secrets.token_urlsafe(24)
        if body.get("msgtype") == "template_card":
            card = body["template_card"]
            self._cards[card["task_id"]] = {"card": card, "users": valid}
            result["response_code"] = self._new_code(card["task_id"], "")
        record = self._book.add(
            "wecom", now_ms, "delivered", text=text, dedup_key=key, message_id=msgid, **fields
        )
        if key:
            self._recent[key] = (now_ms, record.index, msgid)
        return _reply({**result, "msgid": msgid})

    def _new_code(self, task_id: str, userid: str) -> str:
        code = secrets.token_urlsafe(32)
        self._codes[code] = (task_id, userid)
        return code

    # --- template cards: button presses and updates --------------------------------

    def card_task_ids(self, userid: str) -> list[str]:
        """The task_ids of the cards a user got, oldest first."""
        return [t for t, c in self._cards.items() if userid in c["users"]]

    async def press(
        self,
        userid: str,
        key: str,
        task_id: str | None = None,
        twice: bool = False,
        forge: bool = False,
        age_s: int = 0,
    ) -> list[int]:
        """`userid` presses the button `key` of a card (their latest, unless task_id says
        which): the template_card_event is pushed to our callback URL, encrypted and
        signed as WeCom does (`forge`: with a wrong signature; `age_s`: signed that many
        seconds ago, a replay). Returns the HTTP status of each push."""
        task_id = task_id or self.card_task_ids(userid)[-1]
        now_s = str(int(time.time()) - age_s)
        event = (
            f"<xml><ToUserName><![CDATA[{escape(self._corp_id)}]]></ToUserName>"
            f"<FromUserName><![CDATA[{escape(userid)}]]></FromUserName>"
            f"<CreateTime>{now_s}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            "<Event><![CDATA[template_card_event]]></Event>"
            f"<EventKey><![CDATA[{escape(key)}]]></EventKey>"
            f"<TaskId><![CDATA[{escape(task_id)}]]></TaskId>"
            "<CardType><![CDATA[button_interaction]]></CardType>"
            f"<ResponseCode><![CDATA[{self._new_code(task_id, userid)}]]></ResponseCode>"
            f"<AgentID>{self._agent_id}</AgentID></xml>"
        )
        encrypted = wecom_crypto.encrypt(self._aes_key, self._corp_id, event.encode())
        nonce = secrets.token_hex(8)
        signature = wecom_crypto.signature(self._token_cb, now_s, nonce, encrypted)
        if forge:
            signature = hashlib.sha256(signature.encode()).hexdigest()[:40]
        body = (
            f"<xml><ToUserName><![CDATA[{escape(self._corp_id)}]]></ToUserName>"
            f"<AgentID><![CDATA[{self._agent_id}]]></AgentID>"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        )
        params = {"msg_signature": signature, "timestamp": now_s, "nonce": nonce}
        statuses: list[int] = []
        async with httpx.AsyncClient(timeout=10.0) as client:
            for _ in range(2 if twice else 1):  # WeCom retries a push it got no answer to
                response = await client.post(
                    self.callback_url,
                    params=params,
                    content=body.encode(),
                    headers={"Content-Type": "text/xml"},
                )
                statuses.append(response.status_code)
        return statuses

    async def update_template_card(self, request: Request) -> Response:
        now_ms = self._clock.now_ms()
        try:
            self._check_token(request.query_params.get("access_token", ""), now_ms)
            body = _json_object(await request.body())
            if body.get("agentid") != self._agent_id:
                raise WeComError(40056, "invalid agentid")
            spent = self._codes.pop(str(body.get("response_code", "")), None)
            if spent is None:
                raise WeComError(INVALID_RESPONSE_CODE, "invalid response_code")
            replace_name = str((body.get("button") or {}).get("replace_name") or "")
            if not replace_name:
                raise WeComError(44004, "empty content")
        except WeComError as error:
            self._book.add(
                "wecom",
                now_ms,
                "rejected",
                error=str(error.errcode),
                template_code="update_template_card",
            )
            return _error_reply(error)
        task_id, _ = spent
        users = [str(u) for u in body.get("userids") or []] or self._cards[task_id]["users"]
        for user in users:
            self._book.add(
                "wecom",
                now_ms,
                "delivered",
                address=user,
                template_code="update_template_card",
                params={**body, "task_id": task_id},
                text=replace_name,
            )
        return _reply({"errcode": 0, "errmsg": "ok", "invaliduser": []})

    def _render(self, body: dict[str, Any]) -> str:
        """Validate the message and return the text the recipient sees."""
        if body.get("agentid") != self._agent_id:
            raise WeComError(40056, "invalid agentid")
        msgtype = body.get("msgtype")
        if msgtype == "text":
            content = str((body.get("text") or {}).get("content") or "")
            if not content:
                raise WeComError(44004, "empty content")
            if len(content.encode()) > TEXT_MAX_BYTES:
                raise WeComError(45002, "content size out of limit")
            return content
        if msgtype == "textcard":
            card = body.get("textcard") or {}
            title, description, url = (
                str(card.get(k) or "") for k in ("title", "description", "url")
            )
            if not (title and description and url):
                raise WeComError(44004, "empty content")
            if (
                len(title.encode()) > TITLE_MAX_BYTES
                or len(description.encode()) > DESCRIPTION_MAX_BYTES
            ):
                raise WeComError(45002, "content size out of limit")
            return f"{title}\n{_TAG_RE.sub(' ', description).strip()}\n{url}"
        if msgtype == "template_card":
            card = body.get("template_card") or {}
            if card.get("card_type") not in CARD_TYPES:
                raise WeComError(40008, "invalid message type")
            task_id = str(card.get("task_id") or "")
            if not _TASK_ID_RE.match(task_id):
                raise WeComError(40058, "invalid task_id")
            title = str((card.get("main_title") or {}).get("title") or "")
            buttons = card.get("button_list") or []
            if not title or not buttons:
                raise WeComError(44004, "empty content")
            for button in buttons:
                callback = button.get("type", 0) == 0
                if not button.get("text") or not button.get("key" if callback else "url"):
                    raise WeComError(40058, "invalid button")
            labels = " ".join(f"[{b['text']}]" for b in buttons)
            url = str((card.get("card_action") or {}).get("url") or "")
            return f"{title}\n{card.get('sub_title_text', '')}\n{labels}\n{url}".rstrip()
        raise WeComError(40008, "invalid message type")

    def _recipients(self, touser: str) -> tuple[list[str], list[str]]:
        users = [u for u in touser.split("|") if u]
        valid = [
            u for u in users if _USERID_RE.match(u) and (self._users is None or u in self._users)
        ]
        invalid = [u for u in users if u not in valid]
        if not valid:
            raise WeComError(81013, "user & party & tag all invalid")
        return valid, invalid

    @staticmethod
    def _dedup_key(body: dict[str, Any], recipients: list[str]) -> str | None:
        if body.get("enable_duplicate_check") != 1:
            return None
        msgtype = str(body.get("msgtype"))
        content = json.dumps(body.get(msgtype), sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256(f"{msgtype}\n{content}".encode()).hexdigest()[:16]
        return f"{'|'.join(sorted(recipients))}:{digest}"


def _interval_ms(body: dict[str, Any]) -> int:
    interval = body.get("duplicate_check_interval", DEFAULT_DUPLICATE_CHECK_INTERVAL_S)
    if not isinstance(interval, int) or interval <= 0:
        interval = DEFAULT_DUPLICATE_CHECK_INTERVAL_S
    return min(interval, MAX_DUPLICATE_CHECK_INTERVAL_S) * 1000


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # nesting deeper than the parser's recursion limit
        value = None
    if not isinstance(value, dict):
        raise WeComError(47001, "data format error")
    return value


def add_routes(app: FastAPI, fake: WeComFake, prefix: str) -> None:
    app.add_api_route(
        f"{prefix}/cgi-bin/gettoken", fake.gettoken, methods=["GET"], include_in_schema=False
    )
    app.add_api_route(
        f"{prefix}/cgi-bin/message/send", fake.send, methods=["POST"], include_in_schema=False
    )
    app.add_api_route(
        f"{prefix}/cgi-bin/message/update_template_card",
        fake.update_template_card,
        methods=["POST"],
        include_in_schema=False,
    )
