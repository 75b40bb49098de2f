"""A home sensor's room in the ledger (`kind:device_id@room`), imported into devices.room,
and read back by the rules engine's RoomBook, against a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from registry.importer import import_files
from registry.ledger_format import write_csv
from rules_engine.home_routine import RoomBook
from simulators.street import generate_street, write_ledger


def _elders_file(files: list[Path]) -> Path:
    for path in files:
        with path.open(encoding="utf-8-sig", newline="") as f:
            if "sensors" in (csv.DictReader(f).fieldnames or ()):
                return path
    raise AssertionError("no elders table")


def _set_sensors(path: Path, sensors: str, line: int = 2) -> str:
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[line - 2]["sensors"] = sensors
    write_csv(path, list(rows[0]), rows)
    return rows[line - 2]["elder_id"]


def test_rooms_import_into_devices_and_reach_the_room_book(db_dsn: str, tmp_path: Path) -> None:
    files = write_ledger(generate_street(None, "渝中区", 5, seed=3), tmp_path / "ledger")
    sensors = "pir:R-P1@卫生间;pir：R-P2＠bedroom;door:R-D1@门口;plug:R-TV@客厅;power_meter:R-M1"
    elder_id = _set_sensors(_elders_file(files), sensors)
    report = import_files(db_dsn, files)
    assert report.ok, report.errors[:5]
    with psycopg.connect(db_dsn) as conn:
        rows = conn.execute(
            "SELECT id, kind, room FROM devices WHERE elder_id = %s AND id LIKE 'R-%%' ORDER BY id",
            [elder_id],
        ).fetchall()
    assert rows == [
        ("R-D1", "door", "门口"),
        ("R-M1", "power_meter", None),
        ("R-P1", "pir", "卫生间"),
        ("R-P2", "pir", "卧室"),  # an English alias, full-width separators
        ("R-TV", "plug", "客厅"),
    ]

    async def rooms() -> RoomBook:
        book = RoomBook()
        async with AsyncConnectionPool(db_dsn, open=False) as pool:
            await book.refresh(pool, 0)
        return book

    book = asyncio.run(rooms())
    assert (book.room("R-P1"), book.room("R-P2"), book.room("R-M1")) == ("卫生间", "卧室", None)
    placed = book.get("R-D1")
    assert placed is not None and placed.kind == "door"


@pytest.mark.parametrize("sensors", ["pir:R-P1@", "pir:R-P1@ "])
def test_an_empty_room_is_a_row_error(db_dsn: str, tmp_path: Path, sensors: str) -> None:
    files = write_ledger(generate_street(None, "渝中区", 3, seed=3), tmp_path / "ledger")
    _set_sensors(_elders_file(files), sensors)
    report = import_files(db_dsn, files)
    assert not report.ok
    assert any("no room after @" in e.reason for e in report.errors)
