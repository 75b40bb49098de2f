"""Geofence zones (防走失) in the ledger: parsing table tests (no database), then the
import against a real PostgreSQL, read back the way the rules engine reads zones."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import msgspec
import openpyxl
import psycopg
import pytest

from carewatch.db.migrate import migrate
from carewatch.db.pool import open_pool
from carewatch.settings import Settings
from registry.fields import FieldError, parse_polygon
from registry.importer import cli_import, import_files
from registry.ledger import parse_ledger
from registry.ledger_format import (
    ELDER_COLUMNS,
    ZONE_COLUMNS,
    ZoneRecord,
    ZoneRemoval,
    write_csv,
    zone_row,
)
from rules_engine import store
from rules_engine.decisions import OpenAlert
from rules_engine.detectors.base import ElderView
from rules_engine.detectors.geofence import GeofenceDetector
from rules_engine.engine import Engine
from rules_engine.geo import LatLon, Zone
from simulators.street import Street, generate_street, write_ledger
from tests.events import EngineRun, telemetry_event

PROFILES = ("standard", "cognitive")
SQUARE = "29.55,106.55; 29.56,106.55; 29.56,106.56; 29.55,106.56"
SQUARE_POINTS = ((29.55, 106.55), (29.56, 106.55), (29.56, 106.56), (29.55, 106.56))
CIRCLE_ROW = {
    "zone_id": "E1-Z1",
    "elder_id": "E1",
    "name": "家",
    "shape": "circle",
    "lat": "29.563",
    "lon": "106.5516",
    "radius_m": "500",
    "polygon": "",
    "delete": "",
}
# the cells that turn CIRCLE_ROW into a polygon row (without its points)
POLYGON = {"shape": "polygon", "lat": "", "lon": "", "radius_m": ""}


def _zones_file(
    path: Path, rows: Sequence[Mapping[str, str]], columns: tuple[str, ...] = ZONE_COLUMNS
) -> Path:
    return write_csv(path, columns, rows)


# --- parsing ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        (
            {},
            ZoneRecord("E1-Z1", "E1", "家", (29.563, 106.5516), 500.0, ()),
        ),
        (
            {"shape": "Circle", "radius_m": "50000", "delete": "否"},
            ZoneRecord("E1-Z1", "E1", "家", (29.563, 106.5516), 50_000.0, ()),
        ),
        (
            POLYGON | {"polygon": SQUARE},
            ZoneRecord("E1-Z1", "E1", "家", None, None, SQUARE_POINTS),
        ),
        (  # full-width separators, the ring closed, a trailing separator
            POLYGON | {"polygon": SQUARE.replace(",", "，").replace(";", "；") + "；29.55,106.55;"},
            ZoneRecord("E1-Z1", "E1", "家", None, None, SQUARE_POINTS),
        ),
        (
            POLYGON | {"polygon": "[[29.55, 106.55], [29.56, 106.55], [29.56, 106.56]]"},
            ZoneRecord("E1-Z1", "E1", "家", None, None, SQUARE_POINTS[:3]),
        ),
    ],
    ids=["circle", "circle-bounds-and-delete-no", "polygon", "polygon-fullwidth", "polygon-json"],
)
def test_good_zone_rows(tmp_path: Path, cells: dict[str, str], expected: ZoneRecord) -> None:
    ledger = parse_ledger([_zones_file(tmp_path / "z.csv", [CIRCLE_ROW | cells])], PROFILES)

    assert ledger.errors == []
    assert ledger.zones == [expected]


@pytest.mark.parametrize(
    ("cells", "field", "reason"),
    [
        ({"zone_id": ""}, "zone_id", "a value is required"),
        ({"zone_id": "Z 1"}, "zone_id", "not a valid id"),
        ({"elder_id": ""}, "elder_id", "a value is required"),
        ({"name": ""}, "name", "a value is required"),
        ({"shape": "square"}, "shape", "'square' is not a known zone shape"),
        ({"lat": ""}, "lat", "a value is required"),
        ({"lon": "east"}, "lon", "'east' is not a number"),
        ({"radius_m": ""}, "radius_m", "a value is required"),
        ({"radius_m": "20"}, "radius_m", "radius (metres) 20 is out of range [50, 50000]"),
        ({"radius_m": "60000"}, "radius_m", "out of range [50, 50000]"),
        ({"radius_m": "nan"}, "radius_m", "out of range"),
        ({"polygon": SQUARE}, "polygon", "a circle zone leaves polygon empty"),
        ({"delete": "maybe"}, "delete", "not a yes/no value"),
        (POLYGON, "polygon", "a value is required"),
        (POLYGON | {"polygon": SQUARE, "radius_m": "500"}, "radius_m", "leaves radius_m empty"),
        (
            POLYGON | {"polygon": "29.55,106.55; 29.56,106.55"},
            "polygon",
            "a polygon needs at least 3 points, got 2",
        ),
        (  # a closed ring of two points is still two points
            POLYGON | {"polygon": "29.55,106.55; 29.56,106.55; 29.55,106.55"},
            "polygon",
            "at least 3 points, got 2",
        ),
        (
            POLYGON | {"polygon": "29.55 106.55; 29.56,106.55; 29.56,106.56"},
            "polygon",
            "point 1: '29.55 106.55' is not lat,lon",
        ),
        (  # lat and lon swapped
            POLYGON | {"polygon": "106.55,29.55; 106.55,29.56; 106.56,29.56"},
            "polygon",
            "point 1: latitude 106.55 is out of range [-90, 90]",
        ),
        (POLYGON | {"polygon": "[[29.55, 106.55], [29.56"}, "polygon", "not a JSON array"),
        (POLYGON | {"polygon": '{"lat": 29.55}'}, "polygon", "not a JSON array"),
        (
            POLYGON | {"polygon": "[[29.55], [29.56, 106.55], [29.56, 106.56]]"},
            "polygon",
            "point 1: [29.55] is not [lat, lon]",
        ),
        (  # corners not in order around the area: a bow tie
            POLYGON | {"polygon": "29.55,106.55; 29.56,106.56; 29.56,106.55; 29.55,106.56"},
            "polygon",
            "edges 1-2 and 3-4 cross",
        ),
        (
            POLYGON | {"polygon": "29.55,106.55; 29.5501,106.55; 29.5501,106.5501"},
            "polygon",
            "the polygon encloses",
        ),
        (  # one point on a line with the others: no area at all
            POLYGON | {"polygon": "29.55,106.55; 29.56,106.55; 29.57,106.55"},
            "polygon",
            "encloses 0 m²",
        ),
        (
            POLYGON | {"polygon": "29.55,106.55; 29.56,106.55; 30.55,107.56"},
            "polygon",
            "km from its first point",
        ),
    ],
)
def test_bad_zone_cells_are_row_errors(
    tmp_path: Path, cells: dict[str, str], field: str, reason: str
) -> None:
    path = _zones_file(tmp_path / "z.csv", [CIRCLE_ROW, CIRCLE_ROW | {"zone_id": "E1-Z2"} | cells])

    ledger = parse_ledger([path], PROFILES)

    assert [(e.file, e.line, e.field) for e in ledger.errors] == [(str(path), 3, field)]
    assert reason in ledger.errors[0].reason
    assert [z.zone_id for z in ledger.zones] == ["E1-Z1"]  # the bad row is dropped


def test_polygon_of_too_many_points() -> None:
    ring = "; ".join(f"{29.55 + i * 1e-5:.5f},106.55" for i in range(501))
    with pytest.raises(FieldError, match="at most 500 points, got 502"):
        parse_polygon(ring + "; 29.56,106.56")


def test_delete_rows_read_only_ids_and_duplicates_are_caught(tmp_path: Path) -> None:
    rows = [
        # other cells of a deleted row are not checked: the administrator marks a row
        CIRCLE_ROW | {"radius_m": "1", "delete": "是"},
        CIRCLE_ROW | {"zone_id": "E1-Z2", "elder_id": "E2", "delete": "TRUE"},
        CIRCLE_ROW | {"zone_id": "E1-Z2"},
    ]
    ledger = parse_ledger([_zones_file(tmp_path / "z.csv", rows)], PROFILES)

    assert ledger.zone_removals == [ZoneRemoval("E1-Z1", "E1"), ZoneRemoval("E1-Z2", "E2")]
    assert [(e.line, e.field) for e in ledger.errors] == [(4, "zone_id")]
    assert "duplicate zone_id 'E1-Z2' (first at" in ledger.errors[0].reason


def test_zones_header_is_told_apart_and_delete_may_be_left_out(tmp_path: Path) -> None:
    without_delete = ZONE_COLUMNS[:-1]
    row = {c: v for c, v in CIRCLE_ROW.items() if c in without_delete}
    good = _zones_file(tmp_path / "zones.csv", [row], without_delete)
    bad = tmp_path / "bad.csv"
    bad.write_text("zone_id,elder_id,name,shape,lat,lon,radius\n", encoding="utf-8")

    ledger = parse_ledger([good, bad], PROFILES)

    assert [z.zone_id for z in ledger.zones] == ["E1-Z1"]
    assert ledger.elders == []
    assert {(e.field, e.reason) for e in ledger.errors} == {
        ("radius_m", "missing column"),
        ("polygon", "missing column"),
        ("radius", "unknown column"),
    }


def test_zone_rows_written_by_zone_row_parse_back(tmp_path: Path) -> None:
    zones = [
        ZoneRecord("E1-Z1", "E1", "家", (29.563, 106.5516), 750.5, ()),
        ZoneRecord("E1-Z2", "E1", "公园", None, None, SQUARE_POINTS),
    ]
    path = _zones_file(tmp_path / "z.csv", [zone_row(z) for z in zones])

    assert parse_ledger([path], PROFILES).zones == zones


# --- import into PostgreSQL ---------------------------------------------------------


@pytest.fixture
def street(db_dsn: str, tmp_path: Path) -> tuple[Street, list[Path]]:
    generated = generate_street(None, "渝中区", 12, seed=3)
    files = write_ledger(generated, tmp_path / "ledger")
    assert import_files(db_dsn, files).ok
    return generated, files


def _stored(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT zone_id, elder_id, name, centre_lat, centre_lon, radius_m, polygon"
            " FROM geofence_zones ORDER BY zone_id"
        ).fetchall()


def _circle(zone_id: str, elder_id: str, radius_m: str = "500") -> dict[str, str]:
    return CIRCLE_ROW | {"zone_id": zone_id, "elder_id": elder_id, "radius_m": radius_m}


def _polygon(zone_id: str, elder_id: str) -> dict[str, str]:
    return CIRCLE_ROW | POLYGON | {"zone_id": zone_id, "elder_id": elder_id, "polygon": SQUARE}


def test_reimport_updates_leaves_unchanged_and_deletes(
    db_dsn: str, street: tuple[Street, list[Path]], tmp_path: Path
) -> None:
    a, b = (e.elder_id for e in street[0].elders[:2])
    zones = tmp_path / "zones.csv"

    first = import_files(db_dsn, [_zones_file(zones, [_circle("A-1", a), _polygon("B-1", b)])])
    again = import_files(db_dsn, [zones])
    changed = import_files(
        db_dsn, [_zones_file(zones, [_circle("A-1", a, "800"), _polygon("B-1", b)])]
    )

    assert str(first.counts["geofence_zones"]) == "2 new, 0 updated, 0 unchanged"
    assert str(again.counts["geofence_zones"]) == "0 new, 0 updated, 2 unchanged"
    assert str(changed.counts["geofence_zones"]) == "0 new, 1 updated, 1 unchanged"
    assert _stored(db_dsn) == [
        ("A-1", a, "家", 29.563, 106.5516, 800.0, None),
        ("B-1", b, "家", None, None, None, [list(p) for p in SQUARE_POINTS]),
    ]

    _zones_file(zones, [_circle("A-1", a, "800"), _polygon("B-1", b) | {"delete": "true"}])
    removed = import_files(db_dsn, [zones])
    # the same file again: the delete row stays valid, there is just nothing to delete
    removed_again = import_files(db_dsn, [zones])

    assert str(removed.counts["geofence_zones"]) == "0 new, 0 updated, 1 unchanged, 1 removed"
    assert removed_again.ok and removed_again.counts["geofence_zones"].removed == 0
    assert [r[0] for r in _stored(db_dsn)] == ["A-1"]


def test_all_files_or_nothing_and_elders_of_the_same_import(
    db_dsn: str, street: tuple[Street, list[Path]], tmp_path: Path
) -> None:
    generated, (_, _, elders) = street
    with elders.open(encoding="utf-8-sig", newline="") as f:
        template = next(csv.DictReader(f))
    newcomer = template | {"elder_id": "NEW-E1", "wristband_id": "NEW-WB1", "sensors": ""}
    new_elders = write_csv(tmp_path / "new_elders.csv", ELDER_COLUMNS, [newcomer])
    existing = generated.elders[0].elder_id
    zones = _zones_file(
        tmp_path / "zones.csv",
        [
            _circle("NEW-Z1", "NEW-E1"),  # an elder of this same import: fine
            _circle("OLD-Z1", existing),
            _circle("GHOST-Z1", "NO-SUCH-ELDER"),
            _circle("SQL-Z", existing) | {"zone_id": "sql-99"},
        ],
    )

    report = import_files(db_dsn, [new_elders, zones])

    assert not report.ok
    assert [(Path(e.file).name, e.line, e.field) for e in report.errors] == [
        ("zones.csv", 4, "elder_id"),
        ("zones.csv", 5, "zone_id"),
    ]
    assert report.errors[0].reason == "no elder 'NO-SUCH-ELDER' in the registry"
    assert "reserved for zones added with SQL" in report.errors[1].reason
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM elders WHERE id = 'NEW-E1'").fetchone() == (0,)
    assert _stored(db_dsn) == []

    _zones_file(zones, [_circle("NEW-Z1", "NEW-E1"), _circle("OLD-Z1", existing)])
    report = import_files(db_dsn, [zones, new_elders])  # file order does not matter

    assert report.ok, report.errors
    assert [(r[0], r[1]) for r in _stored(db_dsn)] == [("NEW-Z1", "NEW-E1"), ("OLD-Z1", existing)]


def test_a_zone_id_cannot_move_to_another_elder(
    db_dsn: str, street: tuple[Street, list[Path]], tmp_path: Path
) -> None:
    a, b = (e.elder_id for e in street[0].elders[:2])
    zones = tmp_path / "zones.csv"
    assert import_files(db_dsn, [_zones_file(zones, [_circle("Z-1", a)])]).ok

    moved = import_files(db_dsn, [_zones_file(zones, [_circle("Z-1", b)])])
    deleted_as_b = import_files(
        db_dsn, [_zones_file(zones, [_circle("Z-1", b, "1") | {"delete": "1"}])]
    )

    for report in (moved, deleted_as_b):
        [error] = report.errors
        assert (error.line, error.field) == (2, "zone_id")
        assert f"zone 'Z-1' belongs to elder '{a}'" in error.reason
    assert [(r[0], r[1]) for r in _stored(db_dsn)] == [("Z-1", a)]


def test_xlsx_zones_with_numeric_cells_and_the_cli_summary(
    db_dsn: str,
    street: tuple[Street, list[Path]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a = street[0].elders[0].elder_id
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Zone_ID", "elder_id", "name", "shape", "lat", "lon", "radius_m", "polygon"])
    sheet.append(["A-1", a, "家", "circle", 29.563, 106.5516, 500, None])
    sheet.append(["A-2", a, "公园", "polygon", None, None, None, SQUARE])
    path = tmp_path / "zones.xlsx"
    book.save(path)

    assert cli_import(Settings(database_url=db_dsn, _env_file=None), [path]) == 0

    assert "geofence_zones: 2 new, 0 updated, 0 unchanged" in capsys.readouterr().out
    assert [r[5] for r in _stored(db_dsn)] == [500.0, None]


# --- what the geofence detector then uses -----------------------------------------------


async def _view(dsn: str, elder_id: str) -> ElderView:
    """The elder's view as the rules engine's store loads it (zones included)."""
    pool = await open_pool(dsn, max_size=1)
    try:
        view = await store.load_view(pool, elder_id, Settings(_env_file=None))
    finally:
        await pool.close()
    assert view is not None
    return view


class _Run(EngineRun):
    def __init__(self, view: ElderView) -> None:
        super().__init__(Engine([GeofenceDetector("Asia/Shanghai")]))
        self.loaded = view

    def view(self) -> ElderView:
        return replace(self.loaded, active=dict(self.active))


async def test_imported_zones_are_what_the_geofence_detector_watches(
    db_dsn: str, street: tuple[Street, list[Path]], tmp_path: Path
) -> None:
    standard = next(e for e in street[0].elders if e.care_profile == "standard")
    zones = _zones_file(
        tmp_path / "zones.csv",
        [
            _circle("S-1", standard.elder_id) | {"name": "菜市场", "radius_m": "300"},
            _polygon("S-2", standard.elder_id) | {"name": "小区"},
        ],
    )
    assert import_files(db_dsn, [zones]).ok

    view = await _view(db_dsn, standard.elder_id)

    assert view.zones == (
        Zone("菜市场", centre=LatLon(29.563, 106.5516), radius_m=300.0),
        Zone("小区", points=tuple(LatLon(lat, lon) for lat, lon in SQUARE_POINTS)),
    )
    # a standard elder is watched once zones are defined: inside the square, inside the
    # market circle, then two fixes outside both
    start = 1_764_036_000_000  # 2025-11-25 10:00 in Chongqing: day, a warning
    fixes = [(29.555, 106.555), (29.563, 106.5516), (29.58, 106.58), (29.59, 106.59)]
    events = [  # the elder's own fixes: the detector learns its zones by elder id
        msgspec.structs.replace(
            telemetry_event({"lat": lat, "lon": lon}, start + i * 60_000, seq=i + 1),
            elder_id=standard.elder_id,
        )
        for i, (lat, lon) in enumerate(fixes)
    ]
    [alert] = [d for d in _Run(view).feed(events) if isinstance(d, OpenAlert)]
    assert (alert.kind, alert.severity) == ("geofence", "warning")
    assert alert.details["zones"] == ["菜市场", "小区"]

    _zones_file(zones, [_circle("S-1", standard.elder_id) | {"delete": "true"}])
    assert import_files(db_dsn, [zones]).ok
    assert [z.name for z in (await _view(db_dsn, standard.elder_id)).zones] == ["小区"]


# --- migration 012 ------------------------------------------------------------------------


def test_migration_gives_existing_and_hand_made_zones_an_id(
    db_dsn: str, street: tuple[Street, list[Path]]
) -> None:
    elder = street[0].elders[0].elder_id
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        # back to the schema before 012, with a zone made with SQL in it
        conn.execute("ALTER TABLE geofence_zones DROP COLUMN zone_id")
        conn.execute("DELETE FROM schema_migrations WHERE version = 12")
        conn.execute(
            "INSERT INTO geofence_zones (elder_id, name, centre_lat, centre_lon, radius_m)"
            " VALUES (%s, 'old', 29.56, 106.55, 400)",
            [elder],
        )
    assert migrate(db_dsn) == ["012_geofence_zone_ids.sql"]
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO geofence_zones (elder_id, name, centre_lat, centre_lon, radius_m)"
            " VALUES (%s, 'by hand', 29.56, 106.55, 400)",
            [elder],
        )
        ids = conn.execute("SELECT id, zone_id FROM geofence_zones ORDER BY id").fetchall()
    [(old_id, old_zone), (_, new_zone)] = ids
    assert old_zone == f"sql-{old_id}"
    assert new_zone.startswith("sql-") and new_zone != old_zone


def test_the_documented_zones_example_parses(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs/registry.md").read_text(encoding="utf-8")
    example = doc.split("```\nzone_id,", 1)[1].split("```", 1)[0]
    path = tmp_path / "zones.csv"
    path.write_text("zone_id," + example, encoding="utf-8")

    ledger = parse_ledger([path], PROFILES)

    assert ledger.errors == []
    assert [z.shape for z in ledger.zones] == ["circle", "circle", "polygon", "polygon"]
