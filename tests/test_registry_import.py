"""Ledger import against a real, fresh PostgreSQL database."""

from __future__ import annotations

import csv
from datetime import time
from pathlib import Path

import openpyxl
import psycopg
import pytest
from psycopg import sql

from carewatch.settings import Settings
from registry.importer import cli_import, import_files
from registry.ledger_format import ELDER_COLUMNS, write_csv
from simulators.street import Street, generate_street, write_ledger

TABLES = ("stations", "duty_officers", "grids", "grid_workers", "elders", "contacts", "devices")


def _counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        query = sql.SQL("SELECT count(*) FROM {}")
        counts = {}
        for table in TABLES:
            row = conn.execute(query.format(sql.Identifier(table))).fetchone()
            assert row is not None
            counts[table] = int(row[0])
        return counts


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _rewrite(path: Path, edits: dict[int, dict[str, str]], out: Path | None = None) -> Path:
    """Copy a ledger CSV, changing cells of the given spreadsheet lines (header = 1)."""
    rows = _read(path)
    columns = list(rows[0])
    for line, changes in edits.items():
        rows[line - 2].update(changes)
    return write_csv(out or path, columns, rows)


@pytest.fixture
def street(tmp_path: Path) -> tuple[Street, list[Path]]:
    generated = generate_street(None, "渝中区", 120, seed=7)
    return generated, write_ledger(generated, tmp_path / "ledger")


def test_generated_ledger_imports_cleanly_and_counts_match(
    db_dsn: str, street: tuple[Street, list[Path]]
) -> None:
    generated, files = street
    report = import_files(db_dsn, files)

    assert report.ok, report.errors[:5]
    assert report.counts["elders"].inserted == 120
    assert _counts(db_dsn) == {
        "stations": len(generated.stations),
        "duty_officers": len(generated.officers),
        "grids": generated.grid_count,
        "grid_workers": generated.grid_count,
        "elders": 120,
        "contacts": sum(len(e.contacts) for e in generated.elders),
        "devices": sum(len(e.devices()) for e in generated.elders),
    }
    with psycopg.connect(db_dsn) as conn:
        centre = conn.execute(
            "SELECT staffed, duty_start, duty_end FROM stations WHERE kind = 'street_centre'"
        ).fetchone()
    assert centre == (True, time(0, 0), time(23, 59))


def test_bad_rows_are_all_reported_and_nothing_is_written(
    db_dsn: str, street: tuple[Street, list[Path]], tmp_path: Path
) -> None:
    generated, (stations, officers, elders) = street
    assert import_files(db_dsn, [stations, officers, elders]).ok
    before = _counts(db_dsn)
    first = generated.elders[0]
    bad = tmp_path / "bad"
    bad.mkdir()
    bad_elders = _rewrite(
        elders,
        {
            2: {"phone": "13900001111"},  # a valid change, must not be applied either
            3: {"contact1_phone": "1381234"},
            5: {"lat": "95.5", "lives_alone": "maybe"},
            6: {"care_profile": "vip"},
            7: {"elder_id": first.elder_id},
            8: {"sensors": "pir:BAD ID;lamp:L1"},
            9: {"wristband_id": first.wristband_id or ""},
        },
        bad / "elders.csv",
    )
    bad_stations = _rewrite(
        stations, {2: {"kind": "hospital"}, 3: {"duty_end": "25:00"}}, bad / "stations.csv"
    )
    bad_officers = _rewrite(officers, {2: {"phone": "12345"}}, bad / "duty_officers.csv")

    report = import_files(db_dsn, [bad_stations, bad_officers, bad_elders])

    assert not report.ok
    found = {(Path(e.file).name, e.line, e.field) for e in report.errors}
    assert found == {
        ("elders.csv", 3, "contact1_phone"),
        ("elders.csv", 5, "lat"),
        ("elders.csv", 5, "lives_alone"),
        ("elders.csv", 6, "care_profile"),
        ("elders.csv", 7, "elder_id"),
        ("elders.csv", 8, "sensors"),  # bad id
        ("stations.csv", 2, "kind"),
        ("stations.csv", 3, "duty_end"),
        ("duty_officers.csv", 2, "phone"),
        ("elders.csv", 9, "wristband_id"),
    }
    messages = [str(e) for e in report.errors]
    assert (
        f"{bad_elders}: line 3, field contact1_phone: '1381234' is not a valid phone number"
        in messages
    )
    assert sum(1 for e in report.errors if e.field == "sensors") == 2  # bad id and unknown kind
    assert _counts(db_dsn) == before
    with psycopg.connect(db_dsn) as conn:
        phone = conn.execute("SELECT phone FROM elders WHERE id = %s", [first.elder_id]).fetchone()
    assert phone == (first.phone,)


def test_cli_prints_errors_and_fails(
    db_dsn: str, street: tuple[Street, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, (_, _, elders) = street
    _rewrite(elders, {4: {"contact1_phone": "1381234"}})
    settings = Settings(database_url=db_dsn, _env_file=None)

    assert cli_import(settings, [elders]) == 1
    out = capsys.readouterr().out
    assert "nothing was written" in out
    assert "line 4, field contact1_phone: '1381234' is not a valid phone number" in out
    assert _counts(db_dsn)["elders"] == 0


def test_reimport_updates_changed_values_and_removes_dropped_contacts_and_devices(
    db_dsn: str, street: tuple[Street, list[Path]]
) -> None:
    generated, (stations, officers, elders) = street
    assert import_files(db_dsn, [stations, officers, elders]).ok
    line_of = {e.elder_id: n for n, e in enumerate(generated.elders, start=2)}
    with_three = next(e for e in generated.elders if len(e.contacts) == 3)
    with_sensors = next(e for e in generated.elders if e.sensors)
    _rewrite(
        elders,
        {
            line_of[with_three.elder_id]: {
                "contact1_phone": "+86 139 0000 2222",
                "contact3_name": "",
                "contact3_relation": "",
                "contact3_phone": "",
                "contact3_wecom": "",
            },
            line_of[with_sensors.elder_id]: {"sensors": ""},
        },
    )

    report = import_files(db_dsn, [elders])

    assert report.ok, report.errors
    assert report.counts["contacts"].updated == 1
    assert report.counts["contacts"].removed == 1
    assert report.counts["devices"].removed == len(with_sensors.sensors)
    assert report.counts["elders"].unchanged == len(generated.elders)
    with psycopg.connect(db_dsn) as conn:
        contacts = conn.execute(
            "SELECT priority, phone FROM contacts WHERE elder_id = %s ORDER BY priority",
            [with_three.elder_id],
        ).fetchall()
        kinds = conn.execute(
            "SELECT kind FROM devices WHERE elder_id = %s", [with_sensors.elder_id]
        ).fetchall()
    assert contacts == [(1, "13900002222"), (2, with_three.contacts[1].phone)]
    assert kinds == [("wristband",)]


def test_xlsx_with_typed_cells_imports(db_dsn: str, street: tuple[Street, list[Path]]) -> None:
    generated, files = street
    xlsx_files = []
    for path in files:
        book = openpyxl.Workbook()
        sheet = book.active
        assert sheet is not None
        rows = _read(path)
        sheet.append(list(rows[0]))
        for row in rows:
            # what a spreadsheet makes of typed columns: numbers, times, booleans
            cells: list[object] = []
            for column, value in row.items():
                if value and column.endswith("phone") and value.isdigit():
                    cells.append(int(value))
                elif value and column in ("duty_start", "duty_end"):
                    cells.append(time.fromisoformat(value))
                elif column in ("staffed", "lives_alone"):
                    cells.append(value == "true")
                elif column in ("lat", "lon"):
                    cells.append(float(value))
                else:
                    cells.append(value or None)
            sheet.append(cells)
        out = path.with_suffix(".xlsx")
        book.save(out)
        xlsx_files.append(out)

    report = import_files(db_dsn, xlsx_files)

    assert report.ok, report.errors[:5]
    assert _counts(db_dsn)["elders"] == len(generated.elders)
    assert _counts(db_dsn)["stations"] == len(generated.stations)
    with psycopg.connect(db_dsn) as conn:
        phone = conn.execute(
            "SELECT phone FROM grid_workers WHERE id = %s", [generated.elders[0].grid_worker_id]
        ).fetchone()
    assert phone == (generated.elders[0].grid_worker_phone,)


def test_device_of_another_elder_is_rejected(
    db_dsn: str, street: tuple[Street, list[Path]], tmp_path: Path
) -> None:
    generated, files = street
    assert import_files(db_dsn, files).ok
    before = _counts(db_dsn)
    rows = _read(files[2])
    owner = generated.elders[0]
    newcomer = dict(rows[1], elder_id="NEW-E1", wristband_id=owner.wristband_id or "", sensors="")
    twin = dict(rows[2], elder_id="NEW-E2", wristband_id="NEW-WB2", sensors="pir:NEW-WB2")
    extra = write_csv(tmp_path / "new.csv", ELDER_COLUMNS, [newcomer, twin])

    report = import_files(db_dsn, [extra])

    assert [(e.line, e.field) for e in report.errors] == [(3, "sensors"), (2, "wristband_id")]
    assert f"already registered to elder '{owner.elder_id}'" in report.errors[1].reason
    assert _counts(db_dsn) == before


def test_device_may_move_between_elders_of_one_import(
    db_dsn: str, street: tuple[Street, list[Path]]
) -> None:
    generated, (_, _, elders) = street
    assert import_files(db_dsn, [elders]).ok
    a, b = generated.elders[0], generated.elders[1]
    _rewrite(elders, {2: {"wristband_id": ""}, 3: {"wristband_id": a.wristband_id or ""}})

    report = import_files(db_dsn, [elders])

    assert report.ok, report.errors
    with psycopg.connect(db_dsn) as conn:
        owner = conn.execute(
            "SELECT elder_id FROM devices WHERE id = %s", [a.wristband_id]
        ).fetchone()
        gone = conn.execute(
            "SELECT count(*) FROM devices WHERE id = %s", [b.wristband_id]
        ).fetchone()
    assert owner == (b.elder_id,)
    assert gone == (0,)
