"""Parse and validate ledger files into typed records, collecting every error.

Pure apart from reading the files: the checks that need the database (known care
profiles are passed in; device ownership; a zone's elder and owner) are done by
registry.importer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import TypeVar, cast

from carewatch.care_notes import CareNotes
from carewatch.rooms import normalise_room
from registry import chinese
from registry.chinese import Localizer
from registry.fields import (
    FieldError,
    id_card_gender,
    parse_bool,
    parse_care_text,
    parse_choice,
    parse_gender,
    parse_id,
    parse_id_card,
    parse_lat,
    parse_lon,
    parse_mobility,
    parse_phone,
    parse_polygon,
    parse_radius,
    parse_text,
    parse_time,
    parse_wecom,
)
from registry.ledger_format import (
    CARE_NOTE_COLUMNS,
    COLUMNS,
    KEY_COLUMN,
    MAX_CONTACTS,
    OPTIONAL_COLUMNS,
    SENSOR_KINDS,
    STATION_KINDS,
    ZONE_SHAPES,
    ContactRecord,
    DeviceRecord,
    ElderRecord,
    LedgerKind,
    OfficerRecord,
    StationKind,
    StationRecord,
    ZoneRecord,
    ZoneRemoval,
    contact_columns,
    detect_kind,
)
from registry.reader import RawRow, TableError, open_table

log = logging.getLogger(__name__)

T = TypeVar("T")
PROGRESS_EVERY = 10_000
_SENSOR_SPLIT_RE = re.compile(r"[;；]")
DEFAULT_DUTY_START = time(8, 0)
DEFAULT_DUTY_END = time(20, 0)


def _or_default(value: T | None, default: T) -> T:
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class RowError:
    file: str
    line: int  # spreadsheet line (header = 1); 0 = the file as a whole
    field: str | None
    reason: str
    chinese: bool = False  # from a Chinese-header file: field and reason are in Chinese

    def __str__(self) -> str:
        if self.chinese:
            where = f"第 {self.line} 行" if self.line else "整个文件"
            column = f"，{self.field}" if self.field else ""
            return f"{self.file}：{where}{column}：{self.reason}"
        where = f"line {self.line}" if self.line else "file"
        column = f", field {self.field}" if self.field else ""
        return f"{self.file}: {where}{column}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Origin:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file} line {self.line}"


@dataclass
class ParsedLedger:
    stations: list[StationRecord] = field(default_factory=list)
    officers: list[OfficerRecord] = field(default_factory=list)
    elders: list[ElderRecord] = field(default_factory=list)
    zones: list[ZoneRecord] = field(default_factory=list)
    zone_removals: list[ZoneRemoval] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    # where each elder row and each device came from, to place errors found later
    elder_origins: dict[str, Origin] = field(default_factory=dict)
    device_fields: dict[str, str] = field(default_factory=dict)  # device id -> column
    zone_origins: dict[str, Origin] = field(default_factory=dict)
    rows_read: int = 0
    notes: list[str] = field(default_factory=list)  # e.g. columns a Chinese file had extra
    # Chinese-header files: file -> (how to say its errors in Chinese, its header line)
    localizers: dict[str, tuple[Localizer, int]] = field(default_factory=dict)

    def localize(self, errors: list[RowError]) -> list[RowError]:
        """`errors` with those of Chinese-header files in Chinese."""
        out = []
        for e in errors:
            found = self.localizers.get(e.file)
            if found is None or e.chinese:
                out.append(e)
                continue
            line, column, reason = found[0].error(e.line, e.field, e.reason, found[1])
            out.append(RowError(e.file, line, column, reason, chinese=True))
        return out


class _Cells:
    """One row's cells; records an error per bad cell and remembers if any failed.

    `required` returns a placeholder after an error: the row is then discarded, so the
    placeholder never reaches a record.
    """

    def __init__(self, file: str, raw: RawRow, errors: list[RowError]) -> None:
        self.file = file
        self.line = raw.line
        self.values = raw.values
        self.errors = errors
        self.ok = True
        if raw.overflow:
            self.error(None, "cells beyond the last header column (a stray comma?)")
        for column in raw.uncomputed:
            self.error(
                column,
                "a formula with no saved result, so its value is unknown: open the file in"
                " Excel or WPS and save it, or paste the values in place of the formulas",
            )

    def error(self, column: str | None, reason: str) -> None:
        self.ok = False
        self.errors.append(RowError(self.file, self.line, column, reason))

    def text(self, column: str) -> str:
        return self.values.get(column, "")

    def optional(self, column: str, parse: Callable[[str], T]) -> T | None:
        text = self.text(column)
        if not text:
            return None
        try:
            return parse(text)
        except FieldError as exc:
            self.error(column, str(exc))
            return None

    def required(self, column: str, parse: Callable[[str], T]) -> T:
        if not self.text(column):
            self.error(column, "a value is required")
            return cast(T, None)
        return cast(T, self.optional(column, parse))

    @property
    def origin(self) -> Origin:
        return Origin(self.file, self.line)


class _LedgerParser:
    def __init__(self, known_profiles: Collection[str]) -> None:
        self.known_profiles = frozenset(known_profiles)
        self.out = ParsedLedger()
        self.seen: dict[str, dict[str, Origin]] = {
            "station": {},
            "officer": {},
            "elder": {},
            "zone": {},
        }
        self.device_origin: dict[str, Origin] = {}
        self.grids: dict[str, tuple[str, str, str, str | None, Origin]] = {}
        self.workers: dict[str, tuple[tuple[str, str, str | None, str], Origin]] = {}

    # -- files ---------------------------------------------------------------------

    def parse_file(self, path: Path) -> None:
        name = str(path)
        try:
            table = open_table(path, is_header=chinese.looks_like_header)
        except TableError as exc:
            zh = chinese.file_reason(str(exc)) if chinese.has_chinese_text([path.name]) else None
            if zh is not None:  # an office's file (台账.xlsx): the reason in Chinese
                self.out.errors.append(RowError(name, 0, None, zh, chinese=True))
            else:
                self.out.errors.append(RowError(name, 0, None, str(exc)))
            return
        if chinese.is_chinese(table.header):
            header_line = table.header_line
            table, localizer = chinese.translate(name, table)
            self.out.localizers[name] = (localizer, header_line)
            self.out.notes.extend(localizer.notes())
        kind = detect_kind(table.header)
        if kind is None and chinese.has_chinese_text(table.header):
            self.out.errors.append(RowError(name, 0, None, chinese.NO_HEADER, chinese=True))
            return
        if kind is None:
            self.out.errors.append(
                RowError(
                    name,
                    1,
                    None,
                    "unknown table: the header needs one of " + ", ".join(KEY_COLUMN.values()),
                )
            )
            return
        if not self._header_ok(name, kind, table.header):
            return
        row_parser = {
            "stations": self.station,
            "duty_officers": self.officer,
            "elders": self.elder,
            "zones": self.zone,
        }[kind]
        rows = 0
        try:
            for raw in table.rows:
                row_parser(_Cells(name, raw, self.out.errors))
                rows += 1
                if rows % PROGRESS_EVERY == 0:
                    log.info("ledger rows read", extra={"file": name, "rows": rows})
        except TableError as exc:
            self.out.errors.append(RowError(name, 0, None, str(exc)))
        self.out.rows_read += rows
        log.info("ledger file read", extra={"file": name, "kind": kind, "rows": rows})

    def _header_ok(self, name: str, kind: LedgerKind, header: list[str]) -> bool:
        expected = COLUMNS[kind]
        optional = OPTIONAL_COLUMNS.get(kind, frozenset())
        problems = [
            (c, "missing column") for c in expected if c not in header and c not in optional
        ]
        problems += [(c, "unknown column") for c in dict.fromkeys(header) if c not in expected]
        problems += [
            (c, "column appears twice") for c in dict.fromkeys(header) if header.count(c) > 1
        ]
        for column, reason in problems:
            self.out.errors.append(RowError(name, 1, column or "(empty header)", reason))
        return not problems

    # -- shared checks ---------------------------------------------------------------

    def _unique_id(self, cells: _Cells, column: str, space: str) -> str:
        value = cells.required(column, parse_id)
        if value is not None:  # None: the id cell itself was bad (already reported)
            first = self.seen[space].setdefault(value, cells.origin)
            if first != cells.origin:
                cells.error(column, f"duplicate {column} '{value}' (first at {first})")
        return value

    # -- rows ------------------------------------------------------------------------

    def station(self, cells: _Cells) -> None:
        station_id = self._unique_id(cells, "station_id", "station")
        record = StationRecord(
            station_id=station_id,
            name=cells.required("name", parse_text),
            kind=cast(
                StationKind,
                cells.required("kind", lambda v: parse_choice(v, STATION_KINDS, "station kind")),
            ),
            district=cells.required("district", parse_text),
            street=cells.optional("street", parse_text),
            lat=cells.required("lat", parse_lat),
            lon=cells.required("lon", parse_lon),
            phone=cells.optional("phone", parse_phone),
            wecom_userid=cells.optional("wecom_userid", parse_wecom),
            staffed=cells.optional("staffed", parse_bool) is not False,  # default: staffed
            duty_start=_or_default(cells.optional("duty_start", parse_time), DEFAULT_DUTY_START),
            duty_end=_or_default(cells.optional("duty_end", parse_time), DEFAULT_DUTY_END),
        )
        if cells.ok and record.staffed and not (record.phone or record.wecom_userid):
            cells.error("phone", "a staffed station needs a phone or a wecom_userid")
        if cells.ok:
            self.out.stations.append(record)

    def officer(self, cells: _Cells) -> None:
        record = OfficerRecord(
            officer_id=self._unique_id(cells, "officer_id", "officer"),
            district=cells.required("district", parse_text),
            name=cells.required("name", parse_text),
            phone=cells.required("phone", parse_phone),
            wecom_userid=cells.optional("wecom_userid", parse_wecom),
        )
        if cells.ok:
            self.out.officers.append(record)

    def elder(self, cells: _Cells) -> None:
        record = ElderRecord(
            elder_id=self._unique_id(cells, "elder_id", "elder"),
            name=cells.required("name", parse_text),
            phone=cells.optional("phone", parse_phone),
            district=cells.required("district", parse_text),
            street=cells.required("street", parse_text),
            address=cells.optional("address", parse_text),
            lat=cells.required("lat", parse_lat),
            lon=cells.required("lon", parse_lon),
            grid_id=cells.required("grid_id", parse_id),
            grid_name=cells.required("grid_name", parse_text),
            grid_worker_id=cells.required("grid_worker_id", parse_id),
            grid_worker_name=cells.required("grid_worker_name", parse_text),
            grid_worker_phone=cells.required("grid_worker_phone", parse_phone),
            grid_worker_wecom=cells.optional("grid_worker_wecom", parse_wecom),
            care_profile=cells.required(
                "care_profile", lambda v: parse_choice(v, self.known_profiles, "care profile")
            ),
            lives_alone=cells.required("lives_alone", parse_bool),
            wristband_id=cells.optional("wristband_id", parse_id),
            sensors=self._sensors(cells),
            contacts=self._contacts(cells),
            gender=cells.optional("gender", parse_gender),
            id_card_masked=cells.optional("id_card", parse_id_card),
            community=cells.optional("community", parse_text),
            care_notes=self._care_notes(cells),
            care_notes_given=frozenset(c for c in CARE_NOTE_COLUMNS if c in cells.values),
        )
        if record.gender and record.id_card_masked:
            stated = id_card_gender(record.id_card_masked)
            if stated != record.gender:
                cells.error("gender", f"'{record.gender}' but the ID card number says '{stated}'")
        self._devices_unique(cells, record)
        if cells.ok:
            self._grid_consistent(cells, record)
        if cells.ok:
            self.out.elders.append(record)
            self.out.elder_origins[record.elder_id] = cells.origin

    def zone(self, cells: _Cells) -> None:
        zone_id = self._unique_id(cells, "zone_id", "zone")
        elder_id = cells.required("elder_id", parse_id)
        if cells.optional("delete", parse_bool):
            # the other cells are not read: an administrator marks the existing row
            if cells.ok:
                self.out.zone_removals.append(ZoneRemoval(zone_id, elder_id))
                self.out.zone_origins[zone_id] = cells.origin
            return
        name = cells.required("name", parse_text)
        shape = cells.required(
            "shape", lambda v: parse_choice(v.lower(), ZONE_SHAPES, "zone shape")
        )
        centre: tuple[float, float] | None = None
        radius_m: float | None = None
        polygon: tuple[tuple[float, float], ...] = ()
        if shape == "circle":
            centre = (cells.required("lat", parse_lat), cells.required("lon", parse_lon))
            radius_m = cells.required("radius_m", parse_radius)
            self._left_empty(cells, shape, ("polygon",))
        elif shape == "polygon":
            polygon = cells.required("polygon", parse_polygon)
            self._left_empty(cells, shape, ("lat", "lon", "radius_m"))
        if cells.ok:
            self.out.zones.append(ZoneRecord(zone_id, elder_id, name, centre, radius_m, polygon))
            self.out.zone_origins[zone_id] = cells.origin

    @staticmethod
    def _left_empty(cells: _Cells, shape: str, columns: tuple[str, ...]) -> None:
        """A value in the other shape's columns means the row is not what it says."""
        for column in columns:
            if cells.text(column):
                cells.error(column, f"a {shape} zone leaves {column} empty")

    def _sensors(self, cells: _Cells) -> tuple[DeviceRecord, ...]:
        sensors: list[DeviceRecord] = []
        for item in filter(
            None, (s.strip() for s in _SENSOR_SPLIT_RE.split(cells.text("sensors")))
        ):
            kind, sep, device_id = item.replace("：", ":").partition(":")
            device_id, at, room = device_id.replace("＠", "@").partition("@")
            kind, device_id = kind.strip().lower(), device_id.strip()
            try:
                if not sep or not device_id:
                    raise FieldError(f"'{item}' is not kind:device_id")
                if at and not room.strip():
                    raise FieldError(f"'{item}': no room after @ (e.g. pir:P1@卫生间)")
                parse_choice(kind, SENSOR_KINDS, "sensor kind")
                placed = normalise_room(room) if at else None
                sensors.append(DeviceRecord(parse_id(device_id), kind, placed))
            except FieldError as exc:
                cells.error("sensors", str(exc))
        return tuple(sensors)

    @staticmethod
    def _care_notes(cells: _Cells) -> CareNotes:
        notes = CareNotes(
            allergies=cells.optional("allergies", parse_care_text),
            medications=cells.optional("medications", parse_care_text),
            conditions=cells.optional("conditions", parse_care_text),
            mobility=cells.optional("mobility", parse_mobility),
            key_holder_name=cells.optional("key_holder_name", parse_text),
            key_holder_phone=cells.optional("key_holder_phone", parse_phone),
            notes=cells.optional("notes", parse_care_text),
        )
        # a key holder is who to phone for the key: a name alone or a number alone is
        # not enough to reach them
        if notes.key_holder_name and not cells.text("key_holder_phone"):
            cells.error("key_holder_phone", "a key holder needs a phone number")
        if cells.text("key_holder_phone") and not notes.key_holder_name:
            cells.error("key_holder_name", "a key holder's phone needs the holder's name")
        return notes

    def _contacts(self, cells: _Cells) -> tuple[ContactRecord, ...]:
        """Contacts keep their order; an empty slot is skipped (priorities close up)."""
        contacts: list[ContactRecord] = []
        for n in range(1, MAX_CONTACTS + 1):
            name_col, relation_col, phone_col, wecom_col = contact_columns(n)
            if not any(cells.text(c) for c in contact_columns(n)):
                if n == 1:
                    cells.error(name_col, "at least one family contact (contact1) is required")
                continue
            contacts.append(
                ContactRecord(
                    name=cells.required(name_col, parse_text),
                    relation=cells.required(relation_col, parse_text),
                    phone=cells.required(phone_col, parse_phone),
                    wecom_userid=cells.optional(wecom_col, parse_wecom),
                )
            )
        return tuple(contacts)

    def _devices_unique(self, cells: _Cells, record: ElderRecord) -> None:
        in_row: set[str] = set()
        for device in record.devices():
            column = "wristband_id" if device.kind == "wristband" else "sensors"
            if device.device_id in in_row:
                cells.error(column, f"device id '{device.device_id}' is listed twice in this row")
                continue
            in_row.add(device.device_id)
            first = self.device_origin.setdefault(device.device_id, cells.origin)
            if first != cells.origin:
                cells.error(column, f"duplicate device id '{device.device_id}' (first at {first})")
            self.out.device_fields.setdefault(device.device_id, column)

    def _grid_consistent(self, cells: _Cells, e: ElderRecord) -> None:
        """Grid and grid worker columns repeat on every elder row: they must agree."""
        # a grid lies in one community (or none): its place in the region tree
        grid = (e.grid_name, e.district, e.street, e.community)
        known_grid = self.grids.setdefault(e.grid_id, (*grid, cells.origin))
        for column, value, known in zip(
            ("grid_name", "district", "street", "community"), grid, known_grid[:4], strict=True
        ):
            if value != known:
                cells.error(
                    column,
                    f"grid '{e.grid_id}' has {column} '{known or ''}' at {known_grid[4]}, "
                    f"here '{value or ''}'",
                )
        worker = (e.grid_worker_name, e.grid_worker_phone, e.grid_worker_wecom, e.grid_id)
        known_worker, origin = self.workers.setdefault(e.grid_worker_id, (worker, cells.origin))
        columns = ("grid_worker_name", "grid_worker_phone", "grid_worker_wecom", "grid_id")
        for column, given, expected in zip(columns, worker, known_worker, strict=True):
            if given != expected:
                cells.error(
                    column,
                    f"grid worker '{e.grid_worker_id}' has {column} '{expected or ''}' "
                    f"at {origin}, here '{given or ''}'",
                )


def parse_ledger(files: Iterable[Path], known_profiles: Collection[str]) -> ParsedLedger:
    """Read and validate every file; `errors` lists every bad row and cell found."""
    parser = _LedgerParser(known_profiles)
    for path in files:
        parser.parse_file(path)
    parser.out.errors = parser.out.localize(parser.out.errors)
    return parser.out
