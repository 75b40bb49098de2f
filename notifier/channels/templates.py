"""User-facing notification texts (Simplified Chinese), shared by every channel.

The bodies use Aliyun's `${variable}` template syntax because SMS templates must be
approved by the provider in advance and are filled in by the provider: the bodies here
are exactly what is registered there. WeCom has no such restriction, but renders the same
bodies so a recipient reads the same words on every channel.

Two provider templates cover the three purposes: one for a new alert, and one status
update used for both "someone is handling it" and "it is over" (the status phrase is a
variable), so the deployment needs only the two template codes in Settings.
"""

from __future__ import annotations

import re
from typing import Literal

from carewatch.labels import KIND_LABELS
from notifier.channels.base import Purpose

TemplateKey = Literal["alert", "update"]

# Keys are the AlertKind values (tests check the two stay in step).


TEMPLATE_BODIES: dict[TemplateKey, str] = {
    "alert": "紧急：${elder_name}（${address}）于${time}触发${kind_label}，请立即查看并处理：${link}",
    "update": "${elder_name}的${kind_label}警报${status}。",
}

# The status phrase of the "update" template, per purpose (itself filled from params).
_STATUS_PHRASES: dict[Purpose, str] = {
    "handled": "已由${handler}于${time}接手处理，您无需前往",
    "closed": "已于${time}结束，感谢您的关注",
}

# A "handled" notice is still right, and worth sending, when the handler is unknown.
_UPDATE_DEFAULTS = {"handler": "工作人员"}

# Short headings for channels that show a title (WeCom text cards).
_TITLES: dict[Purpose, str] = {
    "alert": "${kind_label}警报：${elder_name}",
    "handled": "${elder_name}的警报已有人处理",
    "closed": "${elder_name}的警报已结束",
}

# Card text of a new alert: the link sits behind the card's button instead of in the text.
_CARD_ALERT_TEXT = "${elder_name}（${address}）于${time}触发${kind_label}，请立即点开查看并处理。"

_VARIABLE_RE = re.compile(r"\$\{(\w+)\}")


class MissingTemplateParams(ValueError):
    """The message lacks parameters its template needs (a caller bug, never retryable)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"missing template parameters: {', '.join(sorted(missing))}")
        self.missing = missing


def kind_label(kind: str) -> str:
    """The Chinese label of an alert kind; unknown kinds fall back to a generic word."""
    return KIND_LABELS.get(kind, "异常")


def variables_of(body: str) -> list[str]:
    """Variable names of a `${...}` template body, in order of first appearance."""
    return list(dict.fromkeys(_VARIABLE_RE.findall(body)))


def fill(body: str, variables: dict[str, str]) -> str:
    """Substitute `${name}` placeholders as the provider does; missing names raise."""
    missing = [name for name in variables_of(body) if name not in variables]
    if missing:
        raise MissingTemplateParams(missing)
    return _VARIABLE_RE.sub(lambda m: variables[m.group(1)], body)


def template_for(purpose: Purpose, params: dict[str, str]) -> tuple[TemplateKey, dict[str, str]]:
    """Which provider template a purpose uses and exactly the variables it needs."""
    if purpose == "alert":
        key: TemplateKey = "alert"
        source = params
    else:
        key = "update"
        filled = {**_UPDATE_DEFAULTS, **params}
        source = {**filled, "status": fill(_STATUS_PHRASES[purpose], filled)}
    return key, {name: source[name] for name in _required(key, source)}


def _required(key: TemplateKey, source: dict[str, str]) -> list[str]:
    names = variables_of(TEMPLATE_BODIES[key])
    missing = [name for name in names if name not in source]
    if missing:
        raise MissingTemplateParams(missing)
    return names


def render_body(purpose: Purpose, params: dict[str, str]) -> str:
    """The message text without the SMS signature."""
    key, variables = template_for(purpose, params)
    return fill(TEMPLATE_BODIES[key], variables)


def render_sms(purpose: Purpose, params: dict[str, str], sign_name: str) -> str:
    """What the phone shows: the provider prepends the signature in 【】."""
    return f"【{sign_name}】{render_body(purpose, params)}"


def render_title(purpose: Purpose, params: dict[str, str]) -> str:
    return fill(_TITLES[purpose], params)


def render_card_text(purpose: Purpose, params: dict[str, str]) -> str:
    """The text of a card whose button carries the link."""
    if purpose == "alert":
        return fill(_CARD_ALERT_TEXT, params)
    return render_body(purpose, params)
