"""The gateways' ledger files: validated with file/line/field/reason, all or nothing."""

from __future__ import annotations

from pathlib import Path

import psycopg

from gateways.ledger import import_files
from registry.importer import import_files as import_ledger
from tests import ledger


def _setup(dsn: str, folder: Path) -> None:
    assert import_ledger(dsn, ledger.write_ledger(folder / "ledger")).ok


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_bad_cell_is_reported_and_nothing_is_written(db_dsn: str, tmp_path: Path) -> None:
    _setup(db_dsn, tmp_path)
    devices = _write(
        tmp_path,
        "devices.csv",
        "device_id,protocol,imei,product\n"
        "WB0001,watch3g,8800000001,\n"  # fine on its own
        "WB0002,nbiot,8800000002,\n"  # line 3: unknown protocol
        "PIR0001,watch3g,8800000003,\n"  # line 4: a PIR cannot be a watch
        "NOPE01,iw,353456789012345,\n"  # line 5: not in the ledger
        "DOOR0001,ctwing,860000000000001,\n"  # line 6: ctwing without product
        "WB0002,iw,8800000001 x,\n",  # line 7: bad imei, and WB0002 listed twice
    )
    products = _write(
        tmp_path,
        "products.csv",
        "platform,product,field,meaning,alarm_values\n"
        "ctwing,P1,smoke_state,smoke,\n"  # line 2: alarm without values
        "ctwing,P1,smoke_state,battery,\n"  # line 3: mapped twice
        "onenet,P2,temp,humidity,\n",  # line 4: unknown meaning
    )
    report = import_files(db_dsn, [devices, products])
    where = {(Path(e.file).name, e.line, e.field) for e in report.errors}
    assert where == {
        ("devices.csv", 3, "protocol"),
        ("devices.csv", 4, "protocol"),
        ("devices.csv", 5, "device_id"),
        ("devices.csv", 6, "product"),
        ("devices.csv", 7, "imei"),
        ("devices.csv", 7, "device_id"),
        ("products.csv", 2, "alarm_values"),
        ("products.csv", 3, "field"),
        ("products.csv", 4, "meaning"),
    }, report.errors
    assert all(e.reason for e in report.errors)
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM devices WHERE protocol IS NOT NULL"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM gateway_product_fields").fetchone() == (0,)


def test_a_valid_import_writes_and_a_reimport_replaces(db_dsn: str, tmp_path: Path) -> None:
    _setup(db_dsn, tmp_path)
    devices = _write(
        tmp_path,
        "devices.csv",
        "device_id,protocol,imei,product\nWB0001,watch3g,8800000001,\nDOOR0001,ctwing,8600001,P1\n",
    )
    products = _write(
        tmp_path,
        "products.csv",
        "platform,product,field,meaning,alarm_values\nctwing,P1,door,leak,1|true\n",
    )
    report = import_files(db_dsn, [devices, products])
    assert report.ok and (report.devices, report.fields) == (2, 1)
    # the two watches swap ids in one import: allowed
    swap = _write(
        tmp_path,
        "swap.csv",
        "device_id,protocol,imei,product\nWB0001,watch3g,8800000002,\nWB0002,watch3g,8800000001,\n",
    )
    assert import_files(db_dsn, [swap]).ok
    # an id another device holds is refused
    clash = _write(
        tmp_path, "clash.csv", "device_id,protocol,imei,product\nWB0002,watch3g,8800000002,\n"
    )
    (error,) = import_files(db_dsn, [clash]).errors
    assert (error.line, error.field) == (2, "imei") and "WB0001" in error.reason
    with psycopg.connect(db_dsn) as conn:
        rows = conn.execute(
            "SELECT id, protocol, imei FROM devices WHERE protocol IS NOT NULL ORDER BY id"
        ).fetchall()
        fields = conn.execute(
            "SELECT field, meaning, alarm_values FROM gateway_product_fields"
        ).fetchall()
    assert rows == [
        ("DOOR0001", "ctwing", "8600001"),
        ("WB0001", "watch3g", "8800000002"),
        ("WB0002", "watch3g", "8800000001"),
    ]
    assert fields == [("door", "leak", ["1", "true"])]


def test_reimporting_the_elder_ledger_keeps_the_gateway_columns(
    db_dsn: str, tmp_path: Path
) -> None:
    _setup(db_dsn, tmp_path)
    devices = _write(
        tmp_path, "devices.csv", "device_id,protocol,imei,product\nWB0001,watch3g,8800000001,\n"
    )
    assert import_files(db_dsn, [devices]).ok
    assert import_ledger(db_dsn, ledger.write_ledger(tmp_path / "again")).ok
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute("SELECT protocol, imei FROM devices WHERE id = 'WB0001'").fetchone()
    assert row == ("watch3g", "8800000001")
