"""Geofence geometry: circles (centre + radius in metres) and polygons of lat/lon points.

Zones are a few hundred metres to a few kilometres across, so an equirectangular
projection around the point is exact to well under a metre there; no GIS library needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True, slots=True)
class LatLon:
    lat: float
    lon: float


def distance_m(a: LatLon, b: LatLon) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(a.lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - a.lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class Zone:
    """A safe area: a circle (`centre` + `radius_m`) or a polygon (`points`, >= 3)."""

    name: str
    centre: LatLon | None = None
    radius_m: float | None = None
    points: tuple[LatLon, ...] = ()

    def __post_init__(self) -> None:
        circle = self.centre is not None and self.radius_m is not None and self.radius_m > 0
        if circle == (len(self.points) >= 3):
            raise ValueError(f"zone {self.name!r} must be a circle or a polygon of >= 3 points")

    def contains(self, p: LatLon) -> bool:
        if self.centre is not None and self.radius_m is not None:
            return distance_m(self.centre, p) <= self.radius_m
        return _in_polygon(p, self.points)


def inside_any(zones: tuple[Zone, ...], p: LatLon) -> bool:
    return any(z.contains(p) for z in zones)


def _in_polygon(p: LatLon, ring: tuple[LatLon, ...]) -> bool:
    """Ray casting in a local metric projection centred on the point."""
    k = math.cos(math.radians(p.lat))
    xy = [((q.lon - p.lon) * k, q.lat - p.lat) for q in ring]
    inside = False
    for (x1, y1), (x2, y2) in zip(xy, xy[1:] + xy[:1], strict=True):
        if (y1 > 0) != (y2 > 0) and x1 + (0 - y1) * (x2 - x1) / (y2 - y1) > 0:
            inside = not inside
    return inside
