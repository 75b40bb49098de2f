"""Pure parts of the operator API: scope rules, statistics, labels, page rendering."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operator_api.labels import ago, local_time
from operator_api.masking import mask_json, mask_text
from operator_api.mobile_page import render_page
from operator_api.reports import day_bounds
from operator_api.scope import (
    SUBTREE_GRIDS,
    OutOfScope,
    Principal,
    Region,
    principal_for,
    scope_predicate,
    station_predicate,
)
from operator_api.stats import percentile
from operator_api.tokens import hash_token

NOW = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)  # 14:00 in Chongqing


CITY = Region(1, "city", "全市", "/1/")
YUZHONG = Region(2, "district", "渝中区", "/1/2/")
JFB = Region(3, "street", "解放碑街道", "/1/2/3/")
G1 = Region(4, "grid", "G1", "/1/2/3/4/")


def test_principal_for_each_role() -> None:
    assert principal_for("admin", "root", CITY, None, None, None) == Principal("admin", "root")
    city = principal_for("operator", "op", CITY, None, None, None)
    assert city == Principal("operator", "op", region=CITY)
    street = principal_for("operator", "op", JFB, "渝中区", None, frozenset({"G1", "G2"}))
    assert street == Principal(
        "operator", "op", district="渝中区", region=JFB, visible_grids=frozenset({"G1", "G2"})
    )
    assert principal_for("operator", "op", None, None, None, None) is None
    worker = principal_for("grid_worker", "GW1", G1, "渝中区", "G1", frozenset({"G1"}))
    assert worker is not None and worker.grid_id == "G1" and worker.region == G1
    assert principal_for("grid_worker", "GONE", None, None, None, None) is None


def test_scope_checks() -> None:
    worker = Principal(
        "grid_worker", "GW1", district="渝中区", grid_id="G1", region=G1,
        visible_grids=frozenset({"G1"}),
    )  # fmt: skip
    assert worker.sees_grid("G1")
    assert not worker.sees_grid("G2")
    worker.check_filters("渝中区", "G1")
    with pytest.raises(OutOfScope):
        worker.check_filters(None, "G2")
    street = Principal(
        "operator", "op", district="渝中区", region=JFB, visible_grids=frozenset({"G1", "G2"})
    )
    assert street.sees_grid("G2") and not street.sees_grid("G5")
    with pytest.raises(OutOfScope):
        street.check_filters("江北区", None)
    street.check_filters("渝中区", "G5")  # finds nothing, refused by nobody
    assert street.scope_label == "解放碑街道"
    assert Principal("admin", "root").sees_grid("G3")
    city = Principal("operator", "op", region=CITY)
    assert city.sees_grid("G3") and city.scope_label == "全部辖区"
    assert worker.actor == "grid_worker:GW1"


def test_scope_predicate_is_one_subtree_match() -> None:
    assert scope_predicate(Principal("admin", "root")) is None
    assert scope_predicate(Principal("operator", "op", region=CITY)) is None
    street = Principal("operator", "op", district="渝中区", region=JFB)
    assert scope_predicate(street) == ("e.grid_id IN (" + SUBTREE_GRIDS + ")", ["/1/2/3/%"])
    fragment, params = scope_predicate(street, "g.id") or ("", [])
    assert fragment.startswith("g.id IN (") and params == ["/1/2/3/%"]
    assert (
        station_predicate(street) is not None and station_predicate(Principal("admin", "a")) is None
    )
    # a principal built with a district or grid but no node sees nothing
    stray = Principal("operator", "op", district="渝中区")
    assert stray.restricted and not stray.sees_grid("G1")
    assert scope_predicate(stray) == ("false", [])


def test_masking_depends_on_role() -> None:
    worker = Principal("grid_worker", "GW1", grid_id="G1")
    admin = Principal("admin", "root")
    assert mask_text(worker, "请拨 13812345678") == "请拨 138****5678"
    assert mask_text(admin, "13812345678") == "13812345678"
    nested = {"a": ["13812345678", 3], "b": {"c": "+8613812345678"}}
    assert mask_json(worker, nested) == {"a": ["138****5678", 3], "b": {"c": "+86138****5678"}}
    assert mask_json(admin, nested) == nested


def test_percentile_matches_hand_computed_values() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([300.0, 60.0, 120.0], 0.5) == 120.0
    assert percentile([60.0, 120.0, 300.0], 0.9) == pytest.approx(264.0)
    assert percentile([600.0, 1200.0], 0.5) == 900.0
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=50), st.floats(0, 1))
def test_percentile_lies_within_the_data(values: list[float], q: float) -> None:
    result = percentile(values, q)
    assert result is not None
    assert min(values) <= result <= max(values)


def test_ago_and_local_time() -> None:
    assert ago(None, NOW) == "暂无记录"
    assert ago(NOW - timedelta(seconds=30), NOW) == "刚刚"
    assert ago(NOW - timedelta(minutes=12, seconds=50), NOW) == "12分钟前"
    assert ago(NOW - timedelta(hours=5), NOW) == "5小时前"
    assert ago(NOW - timedelta(days=3, hours=1), NOW) == "3天前"
    assert local_time(NOW - timedelta(minutes=5), NOW) == "13:55"
    assert local_time(NOW - timedelta(days=1), NOW) == "11月24日 14:00"


def test_report_day_is_a_china_calendar_day() -> None:
    start, end = day_bounds(date(2026, 11, 20))
    assert start == datetime(2026, 11, 19, 16, 0, tzinfo=UTC)
    assert end - start == timedelta(days=1)


def test_page_escapes_registry_text() -> None:
    alert = {
        "id": "x",
        "kind": "fall",
        "severity": "critical",
        "status": "open",
        "elder_name": "<script>alert(1)</script>",
        "opened_at": NOW,
    }
    elder = {"id": "E1", "name": "王<b>", "last_sign_of_life": None}
    html = render_page("标题", [alert], [elder], NOW)
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert "王&lt;b&gt;" in html
    assert "跌倒" in html and "我来处理" in html and "最后活动：暂无记录" in html


def test_token_hash_is_sha256_hex() -> None:
    digest = hash_token("cwo_abc")
    assert len(digest) == 64 and digest != hash_token("cwo_abd")
