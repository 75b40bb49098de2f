"""The ledger file format (老年人信息台账): columns, typed records and their row form.

Four kinds of table, told apart by their header (see docs/registry.md):
stations, duty officers, elders (one row per elder, with grid, devices and up to
three family contacts inline) and geofence zones (防走失, one row per zone). Both the importer (parsing) and the street generator
(writing) use the records and columns defined here, so the two cannot drift apart.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Literal

from carewatch.care_notes import FIELDS as CARE_NOTE_FIELDS
from carewatch.care_notes import CareNotes

LedgerKind = Literal["stations", "duty_officers", "elders", "zones"]
StationKind = Literal["street_centre", "community_station", "village_point"]
STATION_KINDS: tuple[StationKind, ...] = ("street_centre", "community_station", "village_point")
# Home sensors listed in the elders' `sensors` column (the wristband has its own column).
SENSOR_KINDS: tuple[str, ...] = (
    "pir",
    "door",
    "water_meter",
    "radar",
    "smoke",
    "gas",
    "leak",
    "contact",
    "switch",
    "plug",
    "power_meter",
)
MAX_CONTACTS = 3

STATION_COLUMNS: tuple[str, ...] = (
    "station_id",
    "name",
    "kind",
    "district",
    "street",
    "lat",
    "lon",
    "phone",
    "wecom_userid",
    "staffed",
    "duty_start",
    "duty_end",
)
OFFICER_COLUMNS: tuple[str, ...] = ("officer_id", "district", "name", "phone", "wecom_userid")
CONTACT_FIELDS: tuple[str, ...] = ("name", "relation", "phone", "wecom")
# Medical notes and care needs (migration 090): the columns are named like the stored
# fields (carewatch.care_notes.FIELDS). A file that leaves a column out keeps what is
# stored for it; a column present with an empty cell clears it.
CARE_NOTE_COLUMNS: tuple[str, ...] = tuple(name for name, _ in CARE_NOTE_FIELDS)


def contact_columns(n: int) -> tuple[str, ...]:
    return tuple(f"contact{n}_{f}" for f in CONTACT_FIELDS)


ELDER_COLUMNS: tuple[str, ...] = (
    "elder_id",
    "name",
    "phone",
    "district",
    "street",
    "address",
    "lat",
    "lon",
    "grid_id",
    "grid_name",
    "grid_worker_id",
    "grid_worker_name",
    "grid_worker_phone",
    "grid_worker_wecom",
    "care_profile",
    "lives_alone",
    "wristband_id",
    "sensors",
    *(c for n in range(1, MAX_CONTACTS + 1) for c in contact_columns(n)),
    *("gender", "id_card", "community"),
    *CARE_NOTE_COLUMNS,
)
# Columns a file may leave out entirely (contacts 2 and 3; the office ledger's person
# columns: gender, ID card number, community; the medical notes and care needs).
OPTIONAL_ELDER_COLUMNS = (
    frozenset(c for n in range(2, MAX_CONTACTS + 1) for c in contact_columns(n))
    | {"gender", "id_card", "community"}
    | frozenset(CARE_NOTE_COLUMNS)
)

ZoneShape = Literal["circle", "polygon"]
ZONE_SHAPES: tuple[ZoneShape, ...] = ("circle", "polygon")
ZONE_COLUMNS: tuple[str, ...] = (
    "zone_id",
    "elder_id",
    "name",
    "shape",
    "lat",
    "lon",
    "radius_m",
    "polygon",
    "delete",
)
# `delete` may be left out: a file that only adds and updates zones does not need it.
OPTIONAL_ZONE_COLUMNS = frozenset({"delete"})
# Prefix of the zone ids the database gives zones inserted with SQL (migration 012).
SQL_ZONE_ID_PREFIX = "sql-"

COLUMNS: dict[LedgerKind, tuple[str, ...]] = {
    "stations": STATION_COLUMNS,
    "duty_officers": OFFICER_COLUMNS,
    "elders": ELDER_COLUMNS,
    "zones": ZONE_COLUMNS,
}
OPTIONAL_COLUMNS: dict[LedgerKind, frozenset[str]] = {
    "elders": OPTIONAL_ELDER_COLUMNS,
    "zones": OPTIONAL_ZONE_COLUMNS,
}
# The column whose presence tells which kind of table a file holds. Zones come first:
# a zones file also has an elder_id column.
KEY_COLUMN: dict[LedgerKind, str] = {
    "zones": "zone_id",
    "stations": "station_id",
    "duty_officers": "officer_id",
    "elders": "elder_id",
}


def detect_kind(header: Sequence[str]) -> LedgerKind | None:
    for kind, key in KEY_COLUMN.items():
        if key in header:
            return kind
    return None


@dataclass(frozen=True, slots=True)
class StationRecord:
    station_id: str
    name: str
    kind: StationKind
    district: str
    street: str | None
    lat: float
    lon: float
    phone: str | None
    wecom_userid: str | None
    staffed: bool
    duty_start: time
    duty_end: time


@dataclass(frozen=True, slots=True)
class OfficerRecord:
    officer_id: str
    district: str
    name: str
    phone: str
    wecom_userid: str | None


@dataclass(frozen=True, slots=True)
class ContactRecord:
    name: str
    relation: str
    phone: str
    wecom_userid: str | None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    kind: str
    room: str | None = None  # 卧室, 卫生间, 客厅...: `kind:device_id@room` in `sensors`


@dataclass(frozen=True, slots=True)
class ElderRecord:
    elder_id: str
    name: str
    phone: str | None
    district: str
    street: str
    address: str | None
    lat: float
    lon: float
    grid_id: str
    grid_name: str
    grid_worker_id: str
    grid_worker_name: str
    grid_worker_phone: str
    grid_worker_wecom: str | None
    care_profile: str
    lives_alone: bool
    wristband_id: str | None
    sensors: tuple[DeviceRecord, ...]
    contacts: tuple[ContactRecord, ...]
    gender: str | None = None  # 男 / 女
    id_card_masked: str | None = None  # '500103********123X', never the full number
    community: str | None = None  # 所属社区 / 村
    care_notes: CareNotes = field(default_factory=CareNotes)
    # the care note columns the row's file has (only those are written on import): how
    # the row was read, not the elder, so records compare without it
    care_notes_given: frozenset[str] = field(default=frozenset(), compare=False)

    def devices(self) -> tuple[DeviceRecord, ...]:
        wristband = (DeviceRecord(self.wristband_id, "wristband"),) if self.wristband_id else ()
        return wristband + self.sensors


@dataclass(frozen=True, slots=True)
class ZoneRecord:
    """A safe area of one elder: a circle (`centre` + `radius_m`) or a polygon."""

    zone_id: str
    elder_id: str
    name: str
    centre: tuple[float, float] | None  # (lat, lon) of a circle
    radius_m: float | None
    polygon: tuple[tuple[float, float], ...]  # (lat, lon) points; () for a circle

    @property
    def shape(self) -> ZoneShape:
        return "circle" if self.centre is not None else "polygon"


@dataclass(frozen=True, slots=True)
class ZoneRemoval:
    """A row with `delete` set: the zone goes; elder_id guards against a wrong zone_id."""

    zone_id: str
    elder_id: str


# ----------------------------------------------------------------------------------
# Row form (what a CSV cell holds)
# ----------------------------------------------------------------------------------


def _opt(value: str | None) -> str:
    return value or ""


def format_bool(value: bool) -> str:
    return "true" if value else "false"


def format_time(value: time) -> str:
    return value.strftime("%H:%M")


def format_coord(value: float) -> str:
    return f"{value:.6f}"


def format_sensors(sensors: Iterable[DeviceRecord]) -> str:
    return ";".join(f"{s.kind}:{s.device_id}" + (f"@{s.room}" if s.room else "") for s in sensors)


def format_polygon(points: Iterable[tuple[float, float]]) -> str:
    """The typed form an administrator reads and edits in Excel, not JSON."""
    return "; ".join(f"{format_coord(lat)},{format_coord(lon)}" for lat, lon in points)


def station_row(s: StationRecord) -> dict[str, str]:
    return {
        "station_id": s.station_id,
        "name": s.name,
        "kind": s.kind,
        "district": s.district,
        "street": _opt(s.street),
        "lat": format_coord(s.lat),
        "lon": format_coord(s.lon),
        "phone": _opt(s.phone),
        "wecom_userid": _opt(s.wecom_userid),
        "staffed": format_bool(s.staffed),
        "duty_start": format_time(s.duty_start),
        "duty_end": format_time(s.duty_end),
    }


def officer_row(o: OfficerRecord) -> dict[str, str]:
    return {
        "officer_id": o.officer_id,
        "district": o.district,
        "name": o.name,
        "phone": o.phone,
        "wecom_userid": _opt(o.wecom_userid),
    }


def elder_row(e: ElderRecord) -> dict[str, str]:
    row = {
        "elder_id": e.elder_id,
        "name": e.name,
        "phone": _opt(e.phone),
        "district": e.district,
        "street": e.street,
        "address": _opt(e.address),
        "lat": format_coord(e.lat),
        "lon": format_coord(e.lon),
        "grid_id": e.grid_id,
        "grid_name": e.grid_name,
        "grid_worker_id": e.grid_worker_id,
        "grid_worker_name": e.grid_worker_name,
        "grid_worker_phone": e.grid_worker_phone,
        "grid_worker_wecom": _opt(e.grid_worker_wecom),
        "care_profile": e.care_profile,
        "lives_alone": format_bool(e.lives_alone),
        "wristband_id": _opt(e.wristband_id),
        "sensors": format_sensors(e.sensors),
    }
    for n in range(1, MAX_CONTACTS + 1):
        c = e.contacts[n - 1] if n <= len(e.contacts) else None
        values = (c.name, c.relation, c.phone, _opt(c.wecom_userid)) if c else ("",) * 4
        row.update(zip(contact_columns(n), values, strict=True))
    # the full ID card number is never held, so an export cannot give it back: an import
    # with the cell empty keeps the stored masked number (registry.importer)
    row.update(gender=_opt(e.gender), id_card="", community=_opt(e.community))
    row.update({k: _opt(v) for k, v in e.care_notes.as_dict().items()})
    return row


def zone_row(z: ZoneRecord) -> dict[str, str]:
    lat, lon = (format_coord(c) for c in z.centre) if z.centre else ("", "")
    return {
        "zone_id": z.zone_id,
        "elder_id": z.elder_id,
        "name": z.name,
        "shape": z.shape,
        "lat": lat,
        "lon": lon,
        "radius_m": str(z.radius_m) if z.radius_m is not None else "",
        "polygon": format_polygon(z.polygon),
        "delete": format_bool(False),
    }


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, str]]) -> Path:
    """Write a ledger table as UTF-8 with a BOM, so Excel opens the Chinese text right."""
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path
