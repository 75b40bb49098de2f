"""Notification texts: pure rendering, no I/O."""

from __future__ import annotations

from typing import get_args

import pytest

from carewatch.messages import AlertKind
from notifier.channels.templates import (
    KIND_LABELS,
    TEMPLATE_BODIES,
    MissingTemplateParams,
    fill,
    kind_label,
    render_body,
    render_card_text,
    render_sms,
    render_title,
    template_for,
    variables_of,
)

PARAMS = {
    "elder_name": "王秀英",
    "kind_label": "紧急呼叫",
    "address": "渝中区解放碑街道民族路12号3-2",
    "time": "08:15",
    "link": "https://ack.example.cn/a/abc123",
    "handler": "网格员李明",
}


def test_every_alert_kind_has_a_chinese_label() -> None:
    assert set(KIND_LABELS) == set(get_args(AlertKind))
    assert kind_label("fall") == "跌倒"
    assert kind_label("geofence") == "走失预警"
    assert kind_label("no-such-kind") == "异常"


def test_alert_sms_reads_as_specified() -> None:
    assert render_sms("alert", PARAMS, "智慧养老") == (
        "【智慧养老】紧急：王秀英（渝中区解放碑街道民族路12号3-2）于08:15触发紧急呼叫，"
        "请立即查看并处理：https://ack.example.cn/a/abc123"
    )


def test_handled_and_closed_share_the_update_template() -> None:
    handled_key, handled_vars = template_for("handled", PARAMS)
    closed_key, closed_vars = template_for("closed", PARAMS)
    assert handled_key == closed_key == "update"
    assert set(handled_vars) == set(closed_vars) == set(variables_of(TEMPLATE_BODIES["update"]))
    assert handled_vars["status"] != closed_vars["status"]
    assert render_body("handled", PARAMS) == (
        "王秀英的紧急呼叫警报已由网格员李明于08:15接手处理，您无需前往。"
    )
    assert render_body("closed", PARAMS) == "王秀英的紧急呼叫警报已于08:15结束，感谢您的关注。"


def test_template_variables_are_exactly_those_of_the_body() -> None:
    key, variables = template_for("alert", {**PARAMS, "unused": "x"})
    assert key == "alert"
    assert variables == {
        k: PARAMS[k] for k in ("elder_name", "address", "time", "kind_label", "link")
    }


def test_missing_parameters_are_named() -> None:
    with pytest.raises(MissingTemplateParams) as err:
        render_body("alert", {"elder_name": "王秀英"})
    assert set(err.value.missing) == {"address", "time", "kind_label", "link"}
    with pytest.raises(MissingTemplateParams) as err:
        render_body("closed", {k: v for k, v in PARAMS.items() if k != "time"})
    assert err.value.missing == ["time"]


def test_fill_substitutes_like_the_provider() -> None:
    assert fill("${a}和${b}，再次${a}", {"a": "甲", "b": "乙"}) == "甲和乙，再次甲"
    assert variables_of("${x}${y}${x}") == ["x", "y"]


def test_card_texts_leave_the_link_to_the_button() -> None:
    assert PARAMS["link"] not in render_card_text("alert", PARAMS)
    assert "王秀英" in render_card_text("alert", PARAMS)
    assert render_card_text("closed", PARAMS) == render_body("closed", PARAMS)
    assert render_title("alert", PARAMS) == "紧急呼叫警报：王秀英"


def test_handled_without_a_known_handler_still_reads_well() -> None:
    params = {k: v for k, v in PARAMS.items() if k != "handler"}
    assert (
        render_body("handled", params)
        == "王秀英的紧急呼叫警报已由工作人员于08:15接手处理，您无需前往。"
    )
