"""Import ledger files into the registry tables: all files or nothing.

Every file is parsed and validated first (registry.ledger), then the checks that need
the database run inside the import transaction (a device already registered to another
elder). If anything is wrong, nothing is written and every error is reported. A valid
import upserts: changed values update, and for each imported elder the contacts and
devices no longer listed are removed, so re-importing the current ledger keeps the
registry current. Elders absent from the files are left alone (files may cover one
street at a time). Geofence zones are upserted by their zone_id after the elders; a
row with `delete` set removes its zone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from carewatch.settings import Settings
from registry.ledger import Origin, ParsedLedger, RowError, parse_ledger
from registry.ledger_format import CARE_NOTE_COLUMNS, SQL_ZONE_ID_PREFIX, ElderRecord

log = logging.getLogger(__name__)

MAX_PRINTED_ERRORS = 50
# One import at a time: two concurrent imports could each pass the device-ownership
# check and then both claim the same device.
_IMPORT_LOCK_KEY = 0x0CA2E_1ED6


@dataclass(frozen=True, slots=True)
class TableCount:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    def __str__(self) -> str:
        text = f"{self.inserted} new, {self.updated} updated, {self.unchanged} unchanged"
        return text + (f", {self.removed} removed" if self.removed else "")


@dataclass
class ImportReport:
    files: list[str]
    rows_read: int = 0
    errors: list[RowError] = field(default_factory=list)
    counts: dict[str, TableCount] = field(default_factory=dict)  # table -> what changed
    notes: list[str] = field(default_factory=list)  # e.g. extra columns that were ignored

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        return format_report(self)


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (column, PostgreSQL type of its array)
    key: tuple[str, ...]


_STATIONS = _Table(
    "stations",
    (
        ("id", "text"),
        ("name", "text"),
        ("kind", "text"),
        ("district", "text"),
        ("street", "text"),
        ("lat", "float8"),
        ("lon", "float8"),
        ("phone", "text"),
        ("wecom_userid", "text"),
        ("staffed", "bool"),
        ("duty_start", "time"),
        ("duty_end", "time"),
    ),
    ("id",),
)
_OFFICERS = _Table(
    "duty_officers",
    (
        ("id", "text"),
        ("district", "text"),
        ("name", "text"),
        ("phone", "text"),
        ("wecom_userid", "text"),
    ),
    ("id",),
)
# grids.region_id is filled by the database (migration 071): the district, street and
# community columns create or match the grid's nodes in the region tree
_GRIDS = _Table(
    "grids",
    (
        ("id", "text"),
        ("name", "text"),
        ("district", "text"),
        ("street", "text"),
        ("community", "text"),
    ),
    ("id",),
)
_GRID_WORKERS = _Table(
    "grid_workers",
    (
        ("id", "text"),
        ("name", "text"),
        ("phone", "text"),
        ("wecom_userid", "text"),
        ("grid_id", "text"),
    ),
    ("id",),
)
_ELDERS = _Table(
    "elders",
    (
        ("id", "text"),
        ("name", "text"),
        ("phone", "text"),
        ("district", "text"),
        ("street", "text"),
        ("address", "text"),
        ("lat", "float8"),
        ("lon", "float8"),
        ("grid_id", "text"),
        ("care_profile_id", "text"),
        ("lives_alone", "bool"),
        ("gender", "text"),
        ("community", "text"),
    ),
    ("id",),
)
_CONTACTS = _Table(
    "contacts",
    (
        ("elder_id", "text"),
        ("priority", "int4"),
        ("name", "text"),
        ("relation", "text"),
        ("phone", "text"),
        ("wecom_userid", "text"),
    ),
    ("elder_id", "priority"),
)
_DEVICES = _Table(
    "devices", (("id", "text"), ("elder_id", "text"), ("kind", "text"), ("room", "text")), ("id",)
)
_ZONES = _Table(
    "geofence_zones",
    (
        ("zone_id", "text"),
        ("elder_id", "text"),
        ("name", "text"),
        ("centre_lat", "float8"),
        ("centre_lon", "float8"),
        ("radius_m", "float8"),
        ("polygon", "jsonb"),  # sent as JSON text; jsonb compares by value, not by text
    ),
    ("zone_id",),
)


def _upsert(
    conn: psycopg.Connection[TupleRow], table: _Table, rows: Sequence[tuple[object, ...]]
) -> TableCount:
    """Insert or update all rows in one statement (arrays + unnest), skipping rows whose
    values did not change, and count what happened."""
    if not rows:
        return TableCount()
    columns = [c for c, _ in table.columns]
    updates = [c for c in columns if c not in table.key]
    query = sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT ({key}) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new}) "
        "RETURNING (xmax = 0)"  # xmax is 0 only on a row this statement inserted
    ).format(
        table=sql.Identifier(table.name),
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        arrays=sql.SQL(", ").join(
            sql.SQL("%s::{}[]").format(sql.SQL(pg_type)) for _, pg_type in table.columns
        ),
        key=sql.SQL(", ").join(map(sql.Identifier, table.key)),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates
        ),
        old=sql.SQL(", ").join(sql.Identifier(table.name, c) for c in updates),
        new=sql.SQL(", ").join(sql.Identifier("excluded", c) for c in updates),
    )
    arrays = [list(column) for column in zip(*rows, strict=True)]
    returned = conn.execute(query, arrays).fetchall()
    inserted = sum(1 for (was_insert,) in returned if was_insert)
    return TableCount(inserted, len(returned) - inserted, len(rows) - len(returned))


def _device_conflicts(conn: psycopg.Connection[TupleRow], ledger: ParsedLedger) -> list[RowError]:
    """Devices the database gives to an elder this import does not re-list them for."""
    owner_in_ledger = {d.device_id: e.elder_id for e in ledger.elders for d in e.devices()}
    if not owner_in_ledger:
        return []
    imported = {e.elder_id for e in ledger.elders}
    rows = conn.execute(
        "SELECT d.id, d.elder_id FROM devices d JOIN unnest(%s::text[]) AS n(id) ON n.id = d.id",
        [list(owner_in_ledger)],
    ).fetchall()
    errors = []
    for device_id, owner in rows:
        elder_id = owner_in_ledger[str(device_id)]
        # a device moving between two elders of this same import is a reassignment
        if owner != elder_id and owner not in imported:
            origin = ledger.elder_origins[elder_id]
            errors.append(
                RowError(
                    origin.file,
                    origin.line,
                    ledger.device_fields[str(device_id)],
                    f"device '{device_id}' is already registered to elder '{owner}'",
                )
            )
    return errors


def _zone_conflicts(conn: psycopg.Connection[TupleRow], ledger: ParsedLedger) -> list[RowError]:
    """Zones of elders that exist nowhere, zone ids already used for another elder (a
    zone_id typo must not move somebody else's fence), and new ids in the range the
    database gives zones inserted with SQL."""
    refs = [(z.zone_id, z.elder_id) for z in ledger.zones]
    refs += [(r.zone_id, r.elder_id) for r in ledger.zone_removals]
    removals = {r.zone_id for r in ledger.zone_removals}
    if not refs:
        return []
    in_ledger = {e.elder_id for e in ledger.elders}
    wanted = {elder_id for _, elder_id in refs} - in_ledger
    known = {
        str(r[0]) for r in conn.execute("SELECT id FROM elders WHERE id = ANY(%s)", [list(wanted)])
    }
    stored = {
        str(zone_id): str(elder_id)
        for zone_id, elder_id in conn.execute(
            "SELECT zone_id, elder_id FROM geofence_zones WHERE zone_id = ANY(%s)",
            [[zone_id for zone_id, _ in refs]],
        )
    }
    errors = []
    for zone_id, elder_id in refs:
        origin = ledger.zone_origins[zone_id]
        if elder_id not in in_ledger and elder_id not in known:
            errors.append(_at(origin, "elder_id", f"no elder '{elder_id}' in the registry"))
        owner = stored.get(zone_id)
        if owner is not None and owner != elder_id:
            errors.append(
                _at(
                    origin,
                    "zone_id",
                    f"zone '{zone_id}' belongs to elder '{owner}' (a zone cannot move to "
                    "another elder: delete it and add one with a new zone_id)",
                )
            )
        if owner is None and zone_id not in removals and zone_id.startswith(SQL_ZONE_ID_PREFIX):
            errors.append(
                _at(
                    origin,
                    "zone_id",
                    f"zone ids starting with '{SQL_ZONE_ID_PREFIX}' are reserved for zones "
                    "added with SQL; choose another zone_id",
                )
            )
    return errors


def _at(origin: Origin, column: str, reason: str) -> RowError:
    return RowError(origin.file, origin.line, column, reason)


def _write_zones(conn: psycopg.Connection[TupleRow], ledger: ParsedLedger) -> TableCount:
    """After the elders (a zone references its elder). Removals were checked to name
    the zone's own elder; a zone_id already gone is nothing to do (re-imports of a file
    with its delete rows still in it stay valid)."""
    removed = conn.execute(
        "DELETE FROM geofence_zones WHERE zone_id = ANY(%s)",
        [[r.zone_id for r in ledger.zone_removals]],
    ).rowcount
    rows = [
        (
            z.zone_id,
            z.elder_id,
            z.name,
            z.centre[0] if z.centre else None,
            z.centre[1] if z.centre else None,
            z.radius_m,
            json.dumps([list(p) for p in z.polygon]) if z.polygon else None,
        )
        for z in ledger.zones
    ]
    return _with_removed(_upsert(conn, _ZONES, rows), removed)


def _write(conn: psycopg.Connection[TupleRow], ledger: ParsedLedger) -> dict[str, TableCount]:
    grids = {
        e.grid_id: (e.grid_id, e.grid_name, e.district, e.street, e.community)
        for e in ledger.elders
    }
    regions_before = _count_regions(conn)
    workers = {
        e.grid_worker_id: (
            e.grid_worker_id,
            e.grid_worker_name,
            e.grid_worker_phone,
            e.grid_worker_wecom,
            e.grid_id,
        )
        for e in ledger.elders
    }
    counts = {
        "stations": _upsert(
            conn,
            _STATIONS,
            [
                (
                    s.station_id,
                    s.name,
                    s.kind,
                    s.district,
                    s.street,
                    s.lat,
                    s.lon,
                    s.phone,
                    s.wecom_userid,
                    s.staffed,
                    s.duty_start,
                    s.duty_end,
                )
                for s in ledger.stations
            ],
        ),
        "duty_officers": _upsert(
            conn,
            _OFFICERS,
            [(o.officer_id, o.district, o.name, o.phone, o.wecom_userid) for o in ledger.officers],
        ),
        "grids": _upsert(conn, _GRIDS, list(grids.values())),
        "grid_workers": _upsert(conn, _GRID_WORKERS, list(workers.values())),
        "elders": _upsert(
            conn,
            _ELDERS,
            [
                (
                    e.elder_id,
                    e.name,
                    e.phone,
                    e.district,
                    e.street,
                    e.address,
                    e.lat,
                    e.lon,
                    e.grid_id,
                    e.care_profile,
                    e.lives_alone,
                    e.gender,
                    e.community,
                )
                for e in ledger.elders
            ],
        ),
    }
    # ID card numbers only ever arrive masked; a file without one keeps what is stored
    masked = [(e.elder_id, e.id_card_masked) for e in ledger.elders if e.id_card_masked]
    if masked:
        conn.execute(
            "UPDATE elders e SET id_card_masked = m.masked"
            " FROM unnest(%s::text[], %s::text[]) AS m(id, masked)"
            " WHERE e.id = m.id AND e.id_card_masked IS DISTINCT FROM m.masked",
            [[m[0] for m in masked], [m[1] for m in masked]],
        )
    elder_ids = [e.elder_id for e in ledger.elders]
    contacts = [
        (e.elder_id, priority, c.name, c.relation, c.phone, c.wecom_userid)
        for e in ledger.elders
        for priority, c in enumerate(e.contacts, start=1)
    ]
    removed_contacts = conn.execute(
        "DELETE FROM contacts c USING unnest(%s::text[]) AS imported(id)"
        " WHERE c.elder_id = imported.id AND NOT EXISTS ("
        "   SELECT 1 FROM unnest(%s::text[], %s::int4[]) AS keep(elder_id, priority)"
        "   WHERE keep.elder_id = c.elder_id AND keep.priority = c.priority)",
        [elder_ids, [c[0] for c in contacts], [c[1] for c in contacts]],
    ).rowcount
    devices = [
        (d.device_id, e.elder_id, d.kind, d.room) for e in ledger.elders for d in e.devices()
    ]
    # Only devices gone from the whole import are removed; a device moving to another
    # imported elder is updated in place and keeps its state (last_seen, last_seq).
    removed_devices = conn.execute(
        "DELETE FROM devices d USING unnest(%s::text[]) AS imported(id)"
        " WHERE d.elder_id = imported.id AND NOT EXISTS ("
        "   SELECT 1 FROM unnest(%s::text[]) AS keep(id) WHERE keep.id = d.id)",
        [elder_ids, [d[0] for d in devices]],
    ).rowcount
    counts["contacts"] = _with_removed(_upsert(conn, _CONTACTS, contacts), removed_contacts)
    counts["devices"] = _with_removed(_upsert(conn, _DEVICES, devices), removed_devices)
    counts["geofence_zones"] = _write_zones(conn, ledger)
    counts["care_notes"] = _write_care_notes(conn, ledger)
    counts["regions"] = TableCount(inserted=_count_regions(conn) - regions_before)
    return counts


def _write_care_notes(conn: psycopg.Connection[TupleRow], ledger: ParsedLedger) -> TableCount:
    """Medical notes and care needs (migration 090): only the columns a file has are
    written (a column left out keeps what is stored; an empty cell clears it), one
    statement per set of columns; an elder left with no note at all loses the row."""
    by_columns: dict[frozenset[str], list[ElderRecord]] = {}
    for e in ledger.elders:
        if e.care_notes_given:
            by_columns.setdefault(e.care_notes_given, []).append(e)
    count = TableCount()
    for given, elders in by_columns.items():
        columns = [c for c in CARE_NOTE_COLUMNS if c in given]
        table = _Table(
            "elder_care_notes",
            (("elder_id", "text"), *((c, "text") for c in columns)),
            ("elder_id",),
        )
        rows = [(e.elder_id, *(e.care_notes.as_dict()[c] for c in columns)) for e in elders]
        part = _upsert(conn, table, rows)
        count = TableCount(
            count.inserted + part.inserted,
            count.updated + part.updated,
            count.unchanged + part.unchanged,
        )
    empty = sql.SQL(
        "DELETE FROM elder_care_notes WHERE elder_id = ANY(%s) AND num_nonnulls({}) = 0"
    ).format(sql.SQL(", ").join(map(sql.Identifier, CARE_NOTE_COLUMNS)))
    removed = conn.execute(
        empty, [[e.elder_id for elders in by_columns.values() for e in elders]]
    ).rowcount
    return _with_removed(count, removed)


def _count_regions(conn: psycopg.Connection[TupleRow]) -> int:
    row = conn.execute("SELECT count(*) FROM regions").fetchone()
    return int(row[0]) if row else 0


def _with_removed(count: TableCount, removed: int) -> TableCount:
    return TableCount(count.inserted, count.updated, count.unchanged, removed)


def import_files(dsn: str, files: list[Path]) -> ImportReport:
    """Validate all files and, only if every row is valid, apply them in one transaction."""
    report = ImportReport(files=[str(f) for f in files])
    with psycopg.connect(dsn) as conn:
        profiles = [str(r[0]) for r in conn.execute("SELECT id FROM care_profiles")]
        ledger = parse_ledger(files, profiles)
        report.rows_read = ledger.rows_read
        report.notes = list(ledger.notes)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_IMPORT_LOCK_KEY])
            report.errors = ledger.errors + ledger.localize(
                _device_conflicts(conn, ledger) + _zone_conflicts(conn, ledger)
            )
            if report.errors:
                log.warning(
                    "ledger rejected",
                    extra={"files": report.files, "errors": len(report.errors)},
                )
                return report
            report.counts = _write(conn, ledger)
    log.info(
        "ledger imported",
        extra={"files": report.files, "rows": report.rows_read}
        | {table: str(count) for table, count in report.counts.items()},
    )
    return report


def format_report(report: ImportReport, max_errors: int = MAX_PRINTED_ERRORS) -> str:
    notes = [f"note: {n}" for n in report.notes]
    if not report.ok:
        lines = [f"ledger rejected, nothing was written: {len(report.errors)} error(s)"]
        if any(e.chinese for e in report.errors):
            lines.append(f"台账未导入，没有写入任何数据：共 {len(report.errors)} 处错误")
        lines += notes
        lines += [f"  {e}" for e in report.errors[:max_errors]]
        if len(report.errors) > max_errors:
            lines.append(f"  ... and {len(report.errors) - max_errors} more")
        return "\n".join(lines)
    lines = [f"imported {report.rows_read} row(s) from {len(report.files)} file(s)", *notes]
    lines += [f"  {table}: {count}" for table, count in report.counts.items()]
    return "\n".join(lines)


def cli_import(settings: Settings, files: list[Path]) -> int:
    """`carewatch registry import FILE...`: print a summary or the errors; 0 = imported."""
    report = import_files(settings.database_url, files)
    print(report)
    return 0 if report.ok else 1
