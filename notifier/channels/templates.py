"""User-facing notification texts (Simplified Chinese), shared by every channel.

The bodies use Aliyun's `${variable}` template syntax because SMS templates must be
approved by the provider in advance and are filled in by the provider: `sms_template_bodies`
is exactly what is registered there (`carewatch notifier templates` prints it). WeCom has
no such restriction, but renders the same wording so a recipient reads the same words on
every channel.

Two provider templates cover the three purposes: one for a new alert, and one status
update used for both "someone is handling it" and "it is over" (the status phrase is a
variable). A third answers an SMS reply (回复1由我处理，回复2误报, notifier.replies).

Aliyun's limits shape the alert template: a variable value may hold at most 35
characters, and a link may not be a variable (its domain must be fixed text in the
approved template). So the alert SMS ends in the ack server's base URL as fixed text
followed by `/a/${code}`, a short code the ack server resolves to the signed link
(`notifier.short_links`); the registered body therefore depends on `ack_base_url`.
Every variable is fitted to the limit here, in `template_for`, and nowhere else; link-like
text in a variable (a URL typed into a name or address) is taken out there too, since
Aliyun refuses any message with a link in a variable.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from carewatch.labels import KIND_LABELS
from carewatch.settings import Settings
from notifier.ack_links import SHORT_PATH
from notifier.channels.base import Purpose

TemplateKey = Literal["alert", "update", "reply"]

# Aliyun's default limit of one variable value in a notification template, in characters
# (not bytes), and of the whole message including the 【signature】.
VARIABLE_MAX_CHARS = 35
MESSAGE_MAX_CHARS = 500
ELLIPSIS = "…"

# Where the ack server's base URL goes in a template body: plain text substituted when
# the body is registered, never a provider variable.
_ACK_BASE = "{ack_base}"

_TEMPLATE_BODIES: dict[TemplateKey, str] = {
    "alert": (
        "紧急：${elder_name}（${address}）于${time}${kind_event}，请立即查看并处理"
        "（回复1由我处理，回复2误报）：" + _ACK_BASE + SHORT_PATH + "${code}"
    ),
    "update": "${elder_name}的${alarm}${status}。${remark}",
    # the answer to an SMS reply (notifier.replies): what became of it, in one sentence
    "reply": "您的回复已收到：${result}",
}

# The status phrase of the "update" template, per purpose (itself filled from params):
# a 'handled' notice says who took it, or whom the duty officer sent (`handled_as`
# 'dispatch'); a 'closed' one says how it ended when that is known (`outcome`).
_STATUS_PHRASES: dict[str, str] = {
    "handled": "已由${handler}于${time}接手处理",
    "handled:dispatch": "已由值班人员于${time}派${handler}前往处理",
    "closed": "已于${time}结束",
    "closed:outcome": "已于${time}结束（${outcome}）",
}

# What the reader of an update is to do, after its status phrase.
STAND_DOWN_TEXT = "您无需前往。"
KEEP_GOING_TEXT = "如您已在路上，请继续前往。"
NOTE_PREFIX = "值班人员留言："
CLOSED_REMARK = "感谢您的关注。"

# A "handled" notice is still right, and worth sending, when the handler is unknown.
_UPDATE_DEFAULTS = {"handler": "工作人员"}

# Variables cut from the front instead of the back. A Chinese address runs from the
# largest unit to the smallest (city, district, street, community, road and number,
# building, unit, flat): the grid worker knows their own grid, so the end is what finds
# the door. Names and everything else keep their beginning.
_KEEP_END = frozenset({"address"})

# Short headings for channels that show a title (WeCom text cards).
_TITLES: dict[Purpose, str] = {
    "alert": "${alarm}：${elder_name}",
    "handled": "${elder_name}的警报已有人处理",
    "closed": "${elder_name}的警报已结束",
}

# Card text of a new alert: the link sits behind the card's button instead of in the text.
_CARD_ALERT_TEXT = "${elder_name}（${address}）于${time}${kind_event}，请立即点开查看并处理。"

_VARIABLE_RE = re.compile(r"\$\{(\w+)\}")

# Anything the provider may take for a link inside a variable: Aliyun refuses the whole
# message (isv.PARAM_NOT_SUPPORT_URL, permanent), so a URL typed into an elder's name or
# address in the ledger would block every SMS about that elder. A scheme or "www." with
# what follows, and bare host names (letters or digits, dots, a 2+ letter ending, an
# optional path).
_LINK_RE = re.compile(
    r"(?i)(?:[a-z][a-z0-9+.-]*://|www\.)\S*"
    r"|(?<![\w.-])(?:[a-z0-9-]+\.)+[a-z]{2,}(?::\d+)?(?:/\S*)?(?![\w.-])"
)
_SPACES_RE = re.compile(r"\s{2,}")


class MissingTemplateParams(ValueError):
    """The message lacks parameters its template needs (a caller bug, never retryable)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"missing template parameters: {', '.join(sorted(missing))}")
        self.missing = missing


def kind_label(kind: str) -> str:
    """The Chinese label of an alert kind; unknown kinds fall back to a generic word."""
    return KIND_LABELS.get(kind, "异常")


# How an alert says what happened, after "于03:12", per kind label: what the elder did,
# or what was detected ("检测到跌倒", not "触发跌倒"). Other labels: "检测到{label}".
KIND_EVENTS: dict[str, str] = {
    "紧急呼叫": "发出紧急呼叫",
    "走失预警": "离开了安全区域",
    "烟雾报警": "检测到烟雾",
    "燃气报警": "检测到燃气泄漏",
    "漏水报警": "检测到漏水",
    "设备离线": "设备离线",
    "电量低": "设备电量低",
    "手环未佩戴": "摘下了手环",
}


def kind_event(label: str) -> str:
    """ "发出紧急呼叫" / "检测到跌倒" for the label of an alert kind."""
    return KIND_EVENTS.get(label, f"检测到{label}")


def alarm_name(label: str) -> str:
    """What the alert is called: "跌倒警报", but "烟雾报警" (not "烟雾报警警报")."""
    return label if label.endswith(("报警", "预警")) else f"{label}警报"


def variables_of(body: str) -> list[str]:
    """Variable names of a `${...}` template body, in order of first appearance."""
    return list(dict.fromkeys(_VARIABLE_RE.findall(body)))


def fill(body: str, variables: dict[str, str]) -> str:
    """Substitute `${name}` placeholders as the provider does; missing names raise."""
    missing = [name for name in variables_of(body) if name not in variables]
    if missing:
        raise MissingTemplateParams(missing)
    return _VARIABLE_RE.sub(lambda m: variables[m.group(1)], body)


_OPENING = "（(【[《"
_CLOSING = "）)】]》"


def _joins_previous(char: str) -> bool:
    """A character that belongs to the one before it (a combining mark, a variation
    selector, a zero-width joiner): a cut never falls just before it."""
    return bool(unicodedata.combining(char)) or char in "\u200d\ufe0e\ufe0f"


def _open_bracket_at(text: str) -> int | None:
    """Where an opening bracket in `text` is left unclosed, if one is."""
    depth, opened = 0, None
    for i, char in enumerate(text):
        if char in _OPENING:
            if depth == 0:
                opened = i
            depth += 1
        elif char in _CLOSING and depth:
            depth -= 1
    return opened if depth else None


def clip(value: str, limit: int = VARIABLE_MAX_CHARS, *, keep_end: bool = False) -> str:
    """`value` in at most `limit` characters; a cut is marked with an ellipsis on the side
    that was cut, falls between whole characters (never inside a combined one) and never
    inside a bracket: "张三（网格员）" is cut to "张三…", not "张三（网…". A name with a
    role in brackets keeps the role when the name alone can be shortened:
    "欧阳某某某某（网格员）" -> "欧阳…（网格员）"."""
    if len(value) <= limit:
        return value
    keep = max(limit - len(ELLIPSIS), 0)
    if keep_end:
        start = len(value) - keep
        while start < len(value) and _joins_previous(value[start]):
            start += 1
        return ELLIPSIS + value[start:]
    role = re.search(r"（[^（）]{1,8}）$", value)
    if role and role.start() > 0 and len(role.group()) + 1 + len(ELLIPSIS) <= limit:
        name = clip(value[: role.start()], limit - len(role.group()))
        return name + role.group()
    cut = keep
    while 0 < cut < len(value) and _joins_previous(value[cut]):
        cut -= 1
    head = value[:cut]
    opened = _open_bracket_at(head)
    if opened is not None:
        head = head[:opened]
    return head.rstrip() + ELLIPSIS


def without_links(value: str) -> str:
    """`value` with anything link-like taken out (and the spaces around it tidied)."""
    if not _LINK_RE.search(value):
        return value
    return _SPACES_RE.sub(" ", _LINK_RE.sub(" ", value)).strip()


def fit_variable(name: str, value: str) -> str:
    """One template variable within the provider's per-variable limit, without links."""
    cleaned = without_links(value).strip()
    if value.strip() and not cleaned:  # nothing but a link: say something, not nothing
        cleaned = "—"
    return clip(cleaned, keep_end=name in _KEEP_END)


def _fit_into(phrase: str, filled: dict[str, str], name: str) -> dict[str, str]:
    """`filled` with `name` shortened so that `phrase` filled in fits VARIABLE_MAX_CHARS:
    cutting the finished phrase would cut its end, the part that says what happened."""
    if name not in variables_of(phrase):
        return filled
    room = VARIABLE_MAX_CHARS - len(fill(phrase, {**filled, name: ""}))
    return {**filled, name: clip(filled[name].strip(), room)}


def _status(purpose: Purpose, filled: dict[str, str]) -> str:
    """The status phrase of an update, its handler or outcome shortened to fit."""
    if purpose == "handled":
        key = "handled:dispatch" if filled.get("handled_as") == "dispatch" else "handled"
    else:
        key = "closed:outcome" if filled.get("outcome") else "closed"
    phrase = _STATUS_PHRASES[key]
    for name in ("handler", "outcome"):
        filled = _fit_into(phrase, filled, name)
    return fill(phrase, filled)


def _remark(purpose: Purpose, filled: dict[str, str]) -> str:
    """What the reader is to do: a person who acknowledged tells the others they need not
    come; an operator who took over or sent someone says so only when they choose to
    (`stand_down` 'no' otherwise), and their note (`note`) is passed on."""
    if purpose != "handled":
        return CLOSED_REMARK
    stand_down = filled.get("stand_down") != "no"
    note = " ".join(filled.get("note", "").split())
    if not note:
        return STAND_DOWN_TEXT if stand_down else KEEP_GOING_TEXT
    if note[-1] not in "。！？.!?":
        note += "。"
    lead = (STAND_DOWN_TEXT if stand_down else "") + NOTE_PREFIX
    return lead + clip(note, VARIABLE_MAX_CHARS - len(lead))


def template_for(purpose: Purpose, params: dict[str, str]) -> tuple[TemplateKey, dict[str, str]]:
    """Which provider template a purpose uses and exactly the variables it needs, each
    within VARIABLE_MAX_CHARS."""
    if purpose == "alert":
        key: TemplateKey = "alert"
        source = dict(params)
        if "kind_label" in params:
            source["kind_event"] = kind_event(params["kind_label"])
    elif purpose == "reply":
        key = "reply"
        source = params
    else:
        key = "update"
        filled = {**_UPDATE_DEFAULTS, **params}
        source = {
            **filled,
            **({"alarm": alarm_name(filled["kind_label"])} if "kind_label" in filled else {}),
            "status": _status(purpose, filled),
            "remark": _remark(purpose, filled),
        }
    return key, {name: fit_variable(name, source[name]) for name in _required(key, source)}


# Variables made here from a parameter: a missing one is named as that parameter.
_DERIVED_FROM = {"kind_event": "kind_label", "alarm": "kind_label"}


def _required(key: TemplateKey, source: dict[str, str]) -> list[str]:
    names = variables_of(_TEMPLATE_BODIES[key])
    missing = [_DERIVED_FROM.get(name, name) for name in names if name not in source]
    if missing:
        raise MissingTemplateParams(list(dict.fromkeys(missing)))
    return names


def sms_template_bodies(ack_base_url: str) -> dict[TemplateKey, str]:
    """The template texts to register at the provider for this deployment's ack server."""
    base = ack_base_url.rstrip("/")
    return {key: body.replace(_ACK_BASE, base) for key, body in _TEMPLATE_BODIES.items()}


def longest_sms_chars(body: str, sign_name: str) -> int:
    """Length of the longest message a registered body can produce: every variable at the
    limit, plus the 【signature】 the provider prepends."""
    longest = fill(body, dict.fromkeys(variables_of(body), "字" * VARIABLE_MAX_CHARS))
    return len(f"【{sign_name}】{longest}")


def render_body(purpose: Purpose, params: dict[str, str], ack_base_url: str) -> str:
    """The SMS text without the signature, as the provider fills it in."""
    key, variables = template_for(purpose, params)
    return fill(sms_template_bodies(ack_base_url)[key], variables)


def render_sms(purpose: Purpose, params: dict[str, str], sign_name: str, ack_base_url: str) -> str:
    """What the phone shows: the provider prepends the signature in 【】."""
    return f"【{sign_name}】{render_body(purpose, params, ack_base_url)}"


def render_title(purpose: Purpose, params: dict[str, str]) -> str:
    return fill(_TITLES[purpose], {**params, "alarm": alarm_name(params.get("kind_label", ""))})


def render_card_text(purpose: Purpose, params: dict[str, str]) -> str:
    """The text of a message whose link (if any) is carried outside the text (a WeCom card
    button): a new alert says to open it, an update reads as its SMS."""
    if purpose == "alert":
        text = fill(_CARD_ALERT_TEXT, {**params, "kind_event": kind_event(params["kind_label"])})
        note = " ".join(params.get("note", "").split())
        return f"{text}\n{NOTE_PREFIX}{note}" if note else text
    key, variables = template_for(purpose, params)
    return fill(_TEMPLATE_BODIES[key], variables)


def registration_text(settings: Settings) -> str:
    """What an operator registers at Aliyun for these settings (`carewatch notifier
    templates`): each body with the setting that holds its template code."""
    bodies = sms_template_bodies(settings.ack_base_url)
    codes: dict[TemplateKey, tuple[str, str]] = {
        "alert": ("CAREWATCH_ALIYUN_SMS_TEMPLATE_ALERT", settings.aliyun_sms_template_alert),
        "update": ("CAREWATCH_ALIYUN_SMS_TEMPLATE_HANDLED", settings.aliyun_sms_template_handled),
        "reply": ("CAREWATCH_ALIYUN_SMS_TEMPLATE_REPLY", settings.aliyun_sms_template_reply),
    }
    lines = [
        f"Aliyun SMS notification templates (短信通知) for ack base URL {settings.ack_base_url}",
        f"and signature 【{settings.aliyun_sms_sign_name}】. Register each body exactly as"
        " printed, then set its code in the named setting.",
        "",
    ]
    for key, body in bodies.items():
        setting, current = codes[key]
        lines += [
            f"{setting} (now {current}):",
            f"  {body}",
            f"  variables: {', '.join(variables_of(body))}"
            f" (each at most {VARIABLE_MAX_CHARS} characters);"
            f" longest message {longest_sms_chars(body, settings.aliyun_sms_sign_name)}"
            f" characters with the signature (limit {MESSAGE_MAX_CHARS})",
            "",
        ]
    lines.append(
        "The alert body contains the ack base URL as fixed text: changing"
        " CAREWATCH_ACK_BASE_URL needs a newly approved alert template."
    )
    return "\n".join(lines) + "\n"
