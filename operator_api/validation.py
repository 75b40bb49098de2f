"""Bounds of the operator API's query and path parameters, declared once.

Anything outside them is a 422 that names the parameter, never a database error (500):
an offset past PostgreSQL's bigint, a NUL byte (PostgreSQL text cannot hold one) in a
grid, district or elder id, a day whose end does not exist (9999-12-31).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Path, Query

# Registry ids (elders, grids, ...) share the device id alphabet (registry.fields.parse_id).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# District names: printable text, no control characters (NUL included).
NAME_PATTERN = r"^[^\x00-\x1f\x7f]{1,64}$"
MAX_OFFSET = 2**31 - 1
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(9999, 12, 30)  # a report covers [day, day + 1): the day after must exist

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
GridFilter = Annotated[str | None, Query(pattern=ID_PATTERN, description="grid id")]
DistrictFilter = Annotated[str | None, Query(pattern=NAME_PATTERN, description="district name")]
ElderId = Annotated[str, Path(pattern=ID_PATTERN)]
ReportDay = Annotated[
    date,
    Query(alias="date", ge=FIRST_DAY, le=LAST_DAY, description="YYYY-MM-DD, China time"),
]
