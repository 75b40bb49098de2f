"""The console's map: which tiles, and where on them an elder's home is drawn.

Positions are stored as WGS-84 (the ledger's and the wristbands' GPS). Tile servers in
China differ: 天地图 uses CGCS2000, which agrees with WGS-84 to a few centimetres, so its
tiles take the stored position as it is; AMap/Gaode and Tencent tiles are drawn in
GCJ-02, the state's obfuscated datum, and a WGS-84 point put on them lands 300-600 m
off in a city. The operator configures the tile server and its datum
(Settings.console_tile_url, console_tile_crs); the server converts the marker's position
here (`wgs84_to_gcj02`, pure) and the page draws what it is given. Without a tile URL the
page shows the marker on a plain background and the coordinates as text.
"""

from __future__ import annotations

import math
from typing import Any, Literal
from urllib.parse import urlsplit

TileCrs = Literal["wgs84", "gcj02"]

# Krasovsky 1940, the ellipsoid of the GCJ-02 algorithm as published
_A = 6378245.0
_EE = 0.00669342162296594323


def outside_china(lat: float, lon: float) -> bool:
    """The rectangle GCJ-02 is applied in (pure); outside it the datum is WGS-84."""
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _lat_shift(x: float, y: float) -> float:
    r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    r += (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return r


def _lon_shift(x: float, y: float) -> float:
    r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    r += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return r


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """A WGS-84 position as (lat, lon) in GCJ-02 (pure); unchanged outside China."""
    if outside_china(lat, lon):
        return lat, lon
    d_lat = _lat_shift(lon - 105.0, lat - 35.0)
    d_lon = _lon_shift(lon - 105.0, lat - 35.0)
    rad = lat / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return lat + d_lat, lon + d_lon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """The inverse, by fixed-point iteration to well under a centimetre (pure): for a
    position read off a GCJ-02 map."""
    w_lat, w_lon = lat, lon
    for _ in range(30):
        g_lat, g_lon = wgs84_to_gcj02(w_lat, w_lon)
        e_lat, e_lon = g_lat - lat, g_lon - lon
        w_lat, w_lon = w_lat - e_lat, w_lon - e_lon
        if abs(e_lat) < 1e-10 and abs(e_lon) < 1e-10:
            break
    return w_lat, w_lon


def displayed(lat: float, lon: float, crs: TileCrs) -> tuple[float, float]:
    """Where a stored (WGS-84) position is drawn on tiles in `crs` (pure)."""
    return wgs84_to_gcj02(lat, lon) if crs == "gcj02" else (lat, lon)


def tile_source(url: str) -> str | None:
    """The Content-Security-Policy source the tiles are loaded from, or None without
    tiles (pure). A subdomain placeholder ({s}) in the host's first label becomes `*`."""
    if not url:
        return None
    parts = urlsplit(url)
    host = parts.netloc
    first, dot, rest = host.partition(".")
    if "{" in first and dot:
        host = "*." + rest
    return f"{parts.scheme}://{host}"


def map_view(
    lat: float, lon: float, *, tile_url: str, crs: TileCrs, attribution: str
) -> dict[str, Any]:
    """What the page needs to draw an elder's home (pure)."""
    shown_lat, shown_lon = displayed(lat, lon, crs) if tile_url else (lat, lon)
    return {
        "wgs84": {"lat": lat, "lon": lon},
        "lat": shown_lat,
        "lon": shown_lon,
        "crs": crs if tile_url else "wgs84",
        "tile_url": tile_url or None,
        "attribution": attribution,
    }
