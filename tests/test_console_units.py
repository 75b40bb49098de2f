"""Pure parts of the dispatcher console: the map's datum conversion, tile sources, the
reopen transition, the call-log and false-alarm rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carewatch.alert_lifecycle import TransitionError, next_status
from operator_api.console_map import (
    displayed,
    gcj02_to_wgs84,
    map_view,
    outside_china,
    tile_source,
    wgs84_to_gcj02,
)

# Reference points of the published algorithm (WGS-84 lat, lon -> GCJ-02 lat, lon), as
# other implementations compute them: wandergis/coordtransform (Beijing, 天安门), a
# geotool test point near Shanghai (嘉兴), the R package used for Beijing (China Lab).
REFERENCE = [
    ((39.915, 116.404), (39.91640428150164, 116.41024449916938)),
    ((30.6107779, 121.0917077), (30.608604331756705, 121.09626935575027)),
    ((39.90734, 116.39089), (39.90874107, 116.39713094)),
]


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Equirectangular distance, plenty for a few hundred metres."""
    lat = math.radians((a[0] + b[0]) / 2)
    dy = math.radians(a[0] - b[0]) * 6_371_000
    dx = math.radians(a[1] - b[1]) * 6_371_000 * math.cos(lat)
    return math.hypot(dx, dy)


@pytest.mark.parametrize(("wgs", "gcj"), REFERENCE)
def test_wgs84_to_gcj02_matches_reference_points(
    wgs: tuple[float, float], gcj: tuple[float, float]
) -> None:
    got = wgs84_to_gcj02(*wgs)
    assert got == pytest.approx(gcj, abs=1e-6)  # ~0.1 m
    assert 100 < _metres(got, wgs) < 1000  # the shift is real: hundreds of metres


def test_gcj02_to_wgs84_matches_reference_and_inverts() -> None:
    # hujiulong/gcoord: GCJ02 (45, 123) -> WGS84 (44.99804071, 122.99395597)
    assert gcj02_to_wgs84(45.0, 123.0) == pytest.approx((44.99804071, 122.99395597), abs=1e-6)


@given(
    st.floats(min_value=18.0, max_value=53.0),
    st.floats(min_value=74.0, max_value=134.0),
)
def test_the_round_trip_is_within_a_centimetre(lat: float, lon: float) -> None:
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lat, lon))
    assert _metres(back, (lat, lon)) < 0.01


def test_outside_china_nothing_moves() -> None:
    for point in [(51.5007, -0.1246), (35.6586, 139.7454), (55.7539, 37.6208), (-33.86, 151.21)]:
        assert outside_china(*point)
        assert wgs84_to_gcj02(*point) == point
    assert not outside_china(29.5630, 106.5516)  # 重庆 解放碑


def test_tianditu_takes_wgs84_and_amap_takes_gcj02() -> None:
    chongqing = (29.5630, 106.5516)
    assert displayed(*chongqing, "wgs84") == chongqing  # 天地图: CGCS2000 ≈ WGS-84
    moved = displayed(*chongqing, "gcj02")  # AMap / Gaode
    assert 100 < _metres(moved, chongqing) < 1000


def test_map_view_without_tiles_shows_the_stored_position() -> None:
    view = map_view(29.5630, 106.5516, tile_url="", crs="gcj02", attribution="")
    assert (view["lat"], view["lon"]) == (29.5630, 106.5516)
    assert view["tile_url"] is None and view["crs"] == "wgs84"
    amap = "https://webrd0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}"
    view = map_view(29.5630, 106.5516, tile_url=amap, crs="gcj02", attribution="高德")
    assert (view["lat"], view["lon"]) == wgs84_to_gcj02(29.5630, 106.5516)
    assert view["wgs84"] == {"lat": 29.5630, "lon": 106.5516}


def test_tile_source_for_the_content_security_policy() -> None:
    assert tile_source("") is None
    assert tile_source("https://t{s}.tianditu.gov.cn/DataServer?T=vec_w&x={x}&y={y}&l={z}") == (
        "https://*.tianditu.gov.cn"
    )
    assert tile_source("http://10.0.0.5:8080/tiles/{z}/{x}/{y}.png") == "http://10.0.0.5:8080"


def test_reopen_only_a_closed_alert_it_was_not_cancelled() -> None:
    assert next_status("resolved", "reopen") == "acknowledged"
    assert next_status("false_alarm", "reopen") == "acknowledged"
    for status in ("pending", "open", "acknowledged", "cancelled"):
        with pytest.raises(TransitionError):
            next_status(status, "reopen")  # type: ignore[arg-type]
