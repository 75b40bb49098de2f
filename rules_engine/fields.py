"""Numbers in telemetry data and care-profile JSON, where a bool is not a number.

Both come from JSON decoders (msgspec, psycopg's jsonb), which make exact ints, floats
and bools, so an exact type test says it: cheaper than isinstance with `int | float`
plus a bool exclusion, and these run several times per telemetry sample.
"""

from __future__ import annotations

from typing import TypeGuard


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float, not a bool."""
    kind = type(value)
    return kind is int or kind is float


def is_integer(value: object) -> TypeGuard[int]:
    """An int, not a bool."""
    return type(value) is int
