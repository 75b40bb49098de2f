"""Cell validators: each takes the cell text and returns the typed value or raises
FieldError with a reason a spreadsheet user can act on."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import time

from carewatch.phones import MOBILE_RE
from carewatch.topics import DEVICE_ID_RE


class FieldError(ValueError):
    """A cell that does not hold a valid value; str(error) is the reason."""


_LANDLINE_RE = re.compile(r"^0\d{2,3}-\d{7,8}$")
_TIME_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
# WeCom userids: letters, digits and _ - . @, at most 64 characters.
_WECOM_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
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
    if not _WECOM_RE.match(value):
        raise FieldError(f"'{value}' is not a valid WeCom userid")
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


def _parse_float(value: str, what: str, lo: float, hi: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise FieldError(f"'{value}' is not a number") from None
    if not lo <= number <= hi:  # also rejects nan
        raise FieldError(f"{what} {value} is out of range [{lo:g}, {hi:g}]")
    return number


def parse_lat(value: str) -> float:
    return _parse_float(value, "latitude", -90.0, 90.0)


def parse_lon(value: str) -> float:
    return _parse_float(value, "longitude", -180.0, 180.0)


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
