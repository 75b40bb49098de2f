"""Cell validators: each takes the cell text and returns the typed value or raises
FieldError with a reason a spreadsheet user can act on."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from datetime import time

from carewatch.care_notes import MOBILITY_ALIASES, MOBILITY_LEVELS
from carewatch.phones import MOBILE_RE
from carewatch.topics import DEVICE_ID_RE


class FieldError(ValueError):
    """A cell that does not hold a valid value; str(error) is the reason."""


_LANDLINE_RE = re.compile(r"^0\d{2,3}-\d{7,8}$")
_TIME_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
# WeCom userids: letters, digits and _ - . @, at most 64 characters, starting with a
# letter or digit (WeCom's rule). So never "@all", which sends to the whole enterprise.
_WECOM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")
_TRUE = frozenset({"true", "1", "是"})
_FALSE = frozenset({"false", "0", "否"})


def parse_id(value: str) -> str:
    """Ids (elders, devices, stations, grids...) share the device id alphabet, because
    they end up in MQTT topics and bus message ids."""
    if not DEVICE_ID_RE.match(value):
        raise FieldError(f"'{value}' is not a valid id (letters, digits, '_' and '-', at most 64)")
    return value


def parse_phone(value: str) -> str:
    """Mainland mobile (optionally +86; spaces and dashes ignored), stored as 11 digits,
    or a landline with its area code and a dash, e.g. 023-12345678."""
    compact = value.replace(" ", "")
    mobile = MOBILE_RE.match(compact.replace("-", ""))
    if mobile:
        return mobile.group(1)
    if _LANDLINE_RE.match(compact):
        return compact
    raise FieldError(f"'{value}' is not a valid phone number")


def parse_wecom(value: str) -> str:
    if value.strip().lower() == "@all":
        raise FieldError(
            "'@all' is not a person: WeCom would send the alert, and its ack link, to the"
            " whole enterprise"
        )
    if not _WECOM_RE.match(value):
        raise FieldError(
            f"'{value}' is not a valid WeCom userid (letters, digits and _ - . @, at most"
            " 64, starting with a letter or digit)"
        )
    return value


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise FieldError(f"'{value}' is not a yes/no value (true/false, 1/0, 是/否)")


def parse_time(value: str) -> time:
    match = _TIME_RE.match(value)
    if not match:
        raise FieldError(f"'{value}' is not a time of day HH:MM")
    return time(int(match.group(1)), int(match.group(2)))


def parse_float(value: str, what: str, lo: float, hi: float) -> float:
    """A number in [lo, hi]; `what` names it in the out-of-range reason."""
    try:
        number = float(value)
    except ValueError:
        raise FieldError(f"'{value}' is not a number") from None
    if not lo <= number <= hi:  # also rejects nan
        raise FieldError(f"{what} {value} is out of range [{lo:g}, {hi:g}]")
    return number


def parse_lat(value: str) -> float:
    return parse_float(value, "latitude", -90.0, 90.0)


def parse_lon(value: str) -> float:
    return parse_float(value, "longitude", -180.0, 180.0)


def parse_choice(value: str, allowed: Collection[str], what: str) -> str:
    if value not in allowed:
        raise FieldError(
            f"'{value}' is not a known {what} (expected one of: {', '.join(sorted(allowed))})"
        )
    return value


def parse_text(value: str, max_len: int = 200) -> str:
    if len(value) > max_len:
        raise FieldError(f"text longer than {max_len} characters")
    return value


# -- geofence zones ------------------------------------------------------------------

# A safe area smaller than this fires on GPS jitter alone (urban error is 20-50 m);
# one larger than the upper bound is not a fence around anybody (usually a typo).
MIN_RADIUS_M = 50.0
MAX_RADIUS_M = 50_000.0
MAX_POLYGON_POINTS = 500
# Same floor as the smallest circle, in area: 50 m x 50 m.
MIN_POLYGON_AREA_M2 = MIN_RADIUS_M * MIN_RADIUS_M
_METRES_PER_DEGREE = 111_195.0
_POINT_SPLIT_RE = re.compile(r"[;；]")
_COORD_SPLIT_RE = re.compile(r"[,，]")

LatLonPoint = tuple[float, float]


def parse_radius(value: str) -> float:
    return parse_float(value, "radius (metres)", MIN_RADIUS_M, MAX_RADIUS_M)


def parse_polygon(value: str) -> tuple[LatLonPoint, ...]:
    """A polygon as typed in a spreadsheet cell, `lat,lon; lat,lon; ...` (full-width
    `；` and `，` too), or as a JSON array `[[lat, lon], ...]` (what the database holds).

    A closing point equal to the first is dropped. The ring must have 3-500 points,
    enclose at least 50 m x 50 m, stay within 50 km and not cross itself: a zone that
    breaks these is a typo, and the geofence would otherwise page somebody for it.
    """
    text = value.strip()
    points = _json_points(text) if text.startswith(("[", "{")) else _typed_points(text)
    if len(points) > 1 and points[0] == points[-1]:
        points = points[:-1]
    if len(points) < 3:
        raise FieldError(f"a polygon needs at least 3 points, got {len(points)}")
    if len(points) > MAX_POLYGON_POINTS:
        raise FieldError(f"a polygon has at most {MAX_POLYGON_POINTS} points, got {len(points)}")
    _check_ring(points)
    return tuple(points)


def _point(n: int, lat: str, lon: str) -> LatLonPoint:
    try:
        return parse_lat(lat), parse_lon(lon)
    except FieldError as exc:
        raise FieldError(f"point {n}: {exc}") from None


def _typed_points(text: str) -> list[LatLonPoint]:
    points = []
    for n, item in enumerate(filter(None, map(str.strip, _POINT_SPLIT_RE.split(text))), 1):
        parts = [p.strip() for p in _COORD_SPLIT_RE.split(item)]
        if len(parts) != 2:
            raise FieldError(
                f"point {n}: '{item}' is not lat,lon (points are separated by ';', "
                "e.g. 29.55,106.55; 29.56,106.55; 29.56,106.56)"
            )
        points.append(_point(n, *parts))
    return points


def _json_points(text: str) -> list[LatLonPoint]:
    try:
        items = json.loads(text)
    except ValueError:
        raise FieldError("not a JSON array of [lat, lon] points") from None
    if not isinstance(items, list):
        raise FieldError("not a JSON array of [lat, lon] points")
    points = []
    for n, item in enumerate(items, 1):
        if not (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(c, int | float) and not isinstance(c, bool) for c in item)
        ):
            raise FieldError(f"point {n}: {json.dumps(item)} is not [lat, lon]")
        points.append(_point(n, str(item[0]), str(item[1])))
    return points


def _check_ring(points: list[LatLonPoint]) -> None:
    """Size and shape in a local equirectangular projection (metres): exact enough for
    zones of a few km, and no GIS library for a plausibility check."""
    lat0, lon0 = points[0]
    k = math.cos(math.radians(lat0)) * _METRES_PER_DEGREE
    xy = [((lon - lon0) * k, (lat - lat0) * _METRES_PER_DEGREE) for lat, lon in points]
    span = max(math.dist(xy[0], p) for p in xy)
    if span > MAX_RADIUS_M:
        raise FieldError(
            f"the polygon reaches {span / 1000:.0f} km from its first point "
            f"(at most {MAX_RADIUS_M / 1000:g} km): a typo in a coordinate?"
        )
    edges = list(zip(range(len(xy)), xy, xy[1:] + xy[:1], strict=True))
    for i, a1, a2 in edges:
        # edges i and j that share a point (neighbours, or last and first) may touch
        for j, b1, b2 in edges[i + 2 :]:
            if (i == 0 and j == len(xy) - 1) or not _cross(a1, a2, b1, b2):
                continue
            raise FieldError(
                f"the polygon's edges {i + 1}-{i + 2} and {j + 1}-{(j + 1) % len(xy) + 1} "
                "cross: list the corners in order around the area"
            )
    area = abs(sum(x1 * y2 - x2 * y1 for _, (x1, y1), (x2, y2) in edges)) / 2
    if area < MIN_POLYGON_AREA_M2:
        raise FieldError(
            f"the polygon encloses {area:.0f} m² (at least {MIN_POLYGON_AREA_M2:.0f} m², "
            f"{MIN_RADIUS_M:g} m x {MIN_RADIUS_M:g} m): are the points right?"
        )


def _orientation(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
    return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])


def _cross(
    a1: tuple[float, float],
    a2: tuple[float, float],
    b1: tuple[float, float],
    b2: tuple[float, float],
) -> bool:
    """Proper crossing of two segments (touching at an end point does not count)."""
    d1, d2 = _orientation(b1, b2, a1), _orientation(b1, b2, a2)
    d3, d4 = _orientation(a1, a2, b1), _orientation(a1, a2, b2)
    return d1 * d2 < 0 and d3 * d4 < 0


# -- people (the office ledger's 性别 and 身份证号) -------------------------------------

_GENDERS = {"男": "男", "女": "女", "m": "男", "f": "女", "male": "男", "female": "女"}
_ID_CARD_RE = re.compile(r"^(\d{6})(\d{8})(\d{3})([0-9X])$")
_ID_CARD_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CARD_CHECK = "10X98765432"


def parse_gender(value: str) -> str:
    gender = _GENDERS.get(value.strip().lower())
    if gender is None:
        raise FieldError(f"'{value}' is not a gender (男/女)")
    return gender


def id_card_gender(masked: str) -> str:
    """The gender an ID card number states (17th character: odd for men)."""
    return "男" if int(masked[16]) % 2 else "女"


def parse_id_card(value: str) -> str:
    """A mainland resident ID card number (18 characters, GB 11643 check character),
    returned MASKED: region code and the last four characters ('500103********123X').
    The full number never leaves this function: carewatch needs it only so that staff
    can tell which person of their own ledger a row is, and a masked form does that."""
    compact = value.replace(" ", "").upper()
    match = _ID_CARD_RE.match(compact)
    if not match:
        raise FieldError("not an 18-character ID card number")
    total = sum(int(d) * w for d, w in zip(compact[:17], _ID_CARD_WEIGHTS, strict=True))
    if _ID_CARD_CHECK[total % 11] != compact[17]:
        raise FieldError("the ID card number's check character does not match (a typo?)")
    return f"{match.group(1)}{'*' * 8}{match.group(3)}{match.group(4)}"


# -- care needs (行动能力) ----------------------------------------------------------------

# Medicines and histories run longer than a name or an address.
CARE_NOTE_MAX_LEN = 500


def parse_mobility(value: str) -> str:
    """自理 / 需搀扶 / 轮椅 / 卧床 (or independent / assisted / wheelchair / bedridden),
    stored in Chinese."""
    text = value.strip()
    level = MOBILITY_ALIASES.get(text.lower(), text)
    return parse_choice(level, MOBILITY_LEVELS, "mobility")


def parse_care_text(value: str) -> str:
    return parse_text(value, CARE_NOTE_MAX_LEN)
