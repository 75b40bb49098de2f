"""Notification texts: pure rendering, no I/O."""

from __future__ import annotations

from typing import get_args

import pytest

from carewatch.alerts import Alert
from carewatch.labels import KIND_LABELS
from carewatch.messages import AlertKind
from notifier.channels.base import Purpose
from notifier.channels.templates import (
    MESSAGE_MAX_CHARS,
    VARIABLE_MAX_CHARS,
    MissingTemplateParams,
    clip,
    fill,
    kind_label,
    longest_sms_chars,
    registration_text,
    render_body,
    render_card_text,
    render_sms,
    render_title,
    sms_template_bodies,
    template_for,
    variables_of,
)
from notifier.channels.wecom import clip_utf8
from notifier.content import message_params
from notifier.targets import Elder, Recipient
from tests.fake_provider_server import offline_settings

PARAMS = {
    "elder_name": "王秀英",
    "kind_label": "紧急呼叫",
    "address": "渝中区解放碑街道民族路12号3-2",
    "time": "08:15",
    "link": "https://ack.example.cn/ack/payload.signature",
    "code": "Ab3_x-Yz09Qw",
    "handler": "网格员李明",
}
ACK_BASE = "https://ack.example.cn"


def test_every_alert_kind_has_a_chinese_label() -> None:
    assert set(KIND_LABELS) == set(get_args(AlertKind))
    assert kind_label("fall") == "跌倒"
    assert kind_label("geofence") == "走失预警"
    assert kind_label("no-such-kind") == "异常"


def test_alert_sms_reads_as_specified() -> None:
    assert render_sms("alert", PARAMS, "智慧养老", ACK_BASE + "/") == (
        "【智慧养老】紧急：王秀英（渝中区解放碑街道民族路12号3-2）于08:15发出紧急呼叫，"
        "请立即查看并处理（回复1由我处理，回复2误报）：https://ack.example.cn/a/Ab3_x-Yz09Qw"
    )


def test_the_registered_alert_body_fixes_the_link_domain() -> None:
    bodies = sms_template_bodies(ACK_BASE)
    assert bodies["alert"].endswith(
        "请立即查看并处理（回复1由我处理，回复2误报）：https://ack.example.cn/a/${code}"
    )
    assert variables_of(bodies["alert"]) == ["elder_name", "address", "time", "kind_event", "code"]
    for body in bodies.values():
        assert longest_sms_chars(body, "智慧养老") <= MESSAGE_MAX_CHARS
    text = registration_text(
        offline_settings(ack_base_url=ACK_BASE, aliyun_sms_template_alert="SMS_1")
    )
    assert "CAREWATCH_ALIYUN_SMS_TEMPLATE_ALERT (now SMS_1):" in text
    assert f"  {bodies['alert']}\n" in text and f"  {bodies['update']}\n" in text
    assert "CAREWATCH_ALIYUN_SMS_TEMPLATE_REPLY (now SMS_CW_REPLY):" in text
    assert f"  {bodies['reply']}\n" in text


def test_the_answer_to_a_reply_has_its_own_template() -> None:
    key, variables = template_for("reply", {"result": "已确认由您处理，请尽快前往", "x": "y"})
    assert (key, variables) == ("reply", {"result": "已确认由您处理，请尽快前往"})
    assert render_sms("reply", variables, "智慧养老", ACK_BASE) == (
        "【智慧养老】您的回复已收到：已确认由您处理，请尽快前往"
    )


def test_handled_and_closed_share_the_update_template() -> None:
    handled_key, handled_vars = template_for("handled", PARAMS)
    closed_key, closed_vars = template_for("closed", PARAMS)
    assert handled_key == closed_key == "update"
    assert set(handled_vars) == set(closed_vars) == {"elder_name", "alarm", "status", "remark"}
    assert handled_vars["status"] != closed_vars["status"]
    assert render_body("handled", PARAMS, ACK_BASE) == (
        "王秀英的紧急呼叫警报已由网格员李明于08:15接手处理。您无需前往。"
    )
    assert (
        render_body("closed", PARAMS, ACK_BASE)
        == "王秀英的紧急呼叫警报已于08:15结束。感谢您的关注。"
    )


def test_template_variables_are_exactly_those_of_the_body() -> None:
    key, variables = template_for("alert", {**PARAMS, "unused": "x"})
    assert key == "alert"
    assert variables == {
        **{k: PARAMS[k] for k in ("elder_name", "address", "time", "code")},
        "kind_event": "发出紧急呼叫",
    }


def test_missing_parameters_are_named() -> None:
    with pytest.raises(MissingTemplateParams) as err:
        render_body("alert", {"elder_name": "王秀英"}, ACK_BASE)
    assert set(err.value.missing) == {"address", "time", "kind_label", "code"}
    with pytest.raises(MissingTemplateParams) as err:
        render_body("closed", {k: v for k, v in PARAMS.items() if k != "time"}, ACK_BASE)
    assert err.value.missing == ["time"]


def test_fill_substitutes_like_the_provider() -> None:
    assert fill("${a}和${b}，再次${a}", {"a": "甲", "b": "乙"}) == "甲和乙，再次甲"
    assert variables_of("${x}${y}${x}") == ["x", "y"]


def test_card_texts_leave_the_link_to_the_button() -> None:
    assert PARAMS["link"] not in render_card_text("alert", PARAMS)
    assert "王秀英" in render_card_text("alert", PARAMS)
    assert render_card_text("closed", PARAMS) == render_body("closed", PARAMS, ACK_BASE)
    assert render_title("alert", PARAMS) == "紧急呼叫警报：王秀英"


def test_handled_without_a_known_handler_still_reads_well() -> None:
    params = {k: v for k, v in PARAMS.items() if k != "handler"}
    assert (
        render_body("handled", params, ACK_BASE)
        == "王秀英的紧急呼叫警报已由工作人员于08:15接手处理。您无需前往。"
    )


# Real-looking addresses of the length a ledger holds (full administrative path down to
# the flat), and names and handlers at their longest.
LONG_ADDRESSES = [
    "重庆市渝中区解放碑街道民族路社区民族路188号国泰广场3栋2单元17-3",
    "重庆市九龙坡区杨家坪街道西郊路社区西郊三村12号附1号2单元5楼502室",
    "新疆维吾尔自治区乌鲁木齐市天山区幸福路街道团结路社区团结路346号3号楼4单元402",
    "重庆市渝北区龙山街道龙山一路社区余松路东段怡景苑小区B区12栋1单元26-4（电梯右侧）",
]
LONG_NAMES = ["阿依古丽·买买提艾力", "欧阳" + "秀" * 40]
LONG_HANDLERS = [
    "张三（网格员）",
    "解放碑街道民族路社区居家养老服务站（站点值班）",
    "王" * 60 + "（女儿）",
]


@pytest.mark.parametrize("address", LONG_ADDRESSES)
@pytest.mark.parametrize("name", LONG_NAMES)
@pytest.mark.parametrize("purpose", ["alert", "handled", "closed"])
def test_every_sms_variable_the_notifier_produces_fits(
    address: str, name: str, purpose: Purpose
) -> None:
    settings = offline_settings(ack_base_url="https://ack.cqcare.example.cn")
    elder = Elder("E1", name, address, "渝中区", "G1", 29.56, 106.57)
    alert = Alert(
        "8a6e0804-2bd0-4672-b79d-d97027f9c1c4", "E1", "WB1", "fall", "critical", "open",
        1_764_000_000_000, 1,
    )  # fmt: skip
    recipient = Recipient("station", "S-000123", "解放碑站", "站点", "13800138000")
    for handler in LONG_HANDLERS:
        params = message_params(
            settings, alert, elder, recipient, purpose, 1_764_000_000_000, handler
        )
        _, variables = template_for(purpose, params)
        too_long = {k: v for k, v in variables.items() if len(v) > VARIABLE_MAX_CHARS}
        assert not too_long
        sms = render_sms(purpose, params, settings.aliyun_sms_sign_name, settings.ack_base_url)
        assert len(sms) <= MESSAGE_MAX_CHARS
        if purpose == "alert":
            assert sms.endswith(f"https://ack.cqcare.example.cn/a/{params['code']}")
        if purpose == "handled":
            assert variables["status"].endswith("接手处理")
            assert variables["remark"] == "您无需前往。"
            # a handler's name is cut, never its role in brackets
            assert variables["status"].count("（") == variables["status"].count("）")


def test_an_address_keeps_its_end_and_a_name_its_beginning() -> None:
    address = LONG_ADDRESSES[3]
    params = {**PARAMS, "address": address, "elder_name": "欧阳" + "秀" * 40}
    _, variables = template_for("alert", params)
    assert variables["address"] == "…" + address[-(VARIABLE_MAX_CHARS - 1) :]
    assert variables["address"].endswith("12栋1单元26-4（电梯右侧）")
    assert variables["elder_name"] == "欧阳" + "秀" * 32 + "…"
    assert len(variables["address"]) == len(variables["elder_name"]) == VARIABLE_MAX_CHARS
    # what fits is left alone
    assert template_for("alert", PARAMS)[1]["address"] == PARAMS["address"]


def test_clip_counts_characters_not_bytes() -> None:
    assert clip("字" * 35) == "字" * 35
    assert clip("字" * 36) == "字" * 34 + "…"
    assert clip("字" * 36, keep_end=True) == "…" + "字" * 34
    assert clip("abcdef", 3) == "ab…"


def test_names_are_cut_between_characters_and_never_inside_a_bracket() -> None:
    assert clip("欧阳" + "某" * 40 + "（网格员）", 12) == "欧阳某某某某…（网格员）"
    assert clip("张三（网格员很长很长很长很长很长）", 6) == "张三…"
    assert clip("李四（女儿）" + "王" * 40, 10) == "李四（女儿）王王王…"
    # a combined character (e + combining acute) is kept whole
    assert clip("Ame\u0301lie Dupont", 4) == "Am…"
    title = clip_utf8("解放碑街道民族路社区居家养老服务站（站点值班）的警报已有人处理", 60)
    assert len(title.encode()) <= 60 and title.endswith("…")
    assert title.count("（") == title.count("）")
