"""Ledger cells that would have done harm once imported: a WeCom id of '@all' (the alert,
with its ack link, to the whole enterprise) and an XLSX formula whose result the file
does not hold (read as empty, it overwrote a good address). Each rejects the import with
an error on its line and field; the registry keeps what it had."""

from __future__ import annotations

import csv
import re
import shutil
import zipfile
from pathlib import Path

import openpyxl
import psycopg
import pytest

from registry.fields import FieldError, parse_wecom
from registry.importer import import_files
from registry.ledger_format import ELDER_COLUMNS, write_csv
from simulators.street import Street, generate_street, write_ledger


@pytest.fixture
def street(tmp_path: Path) -> tuple[Street, list[Path]]:
    generated = generate_street(None, "渝中区", 20, seed=11)
    return generated, write_ledger(generated, tmp_path / "ledger")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def _one(dsn: str, query: str, *params: object) -> object:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize("value", ["@all", "@ALL", " @all", "@abc", "-abc", ".abc", "a|b"])
def test_wecom_ids_wecom_would_not_send_to_one_person_are_refused(value: str) -> None:
    with pytest.raises(FieldError):
        parse_wecom(value.strip() if value != " @all" else value)


@pytest.mark.parametrize("value", ["zhangsan", "ZhangSan01", "zhang.san@corp", "13800000001"])
def test_ordinary_wecom_ids_are_accepted(value: str) -> None:
    assert parse_wecom(value) == value


@pytest.mark.parametrize("column", ["contact1_wecom", "grid_worker_wecom"])
def test_at_all_as_a_wecom_id_rejects_the_row(
    db_dsn: str, street: tuple[Street, list[Path]], tmp_path: Path, column: str
) -> None:
    _generated, files = street
    rows = _rows(files[2])
    rows[3][column] = "@all"
    bad = write_csv(tmp_path / "elders_at_all.csv", ELDER_COLUMNS, rows)

    report = import_files(db_dsn, [files[0], files[1], bad])

    assert not report.ok
    (error,) = report.errors
    assert (error.line, error.field) == (5, column)  # header = line 1
    assert "@all" in error.reason and "whole enterprise" in error.reason
    assert _one(db_dsn, "SELECT count(*) FROM elders") == 0  # nothing written


def _as_xlsx(rows: list[dict[str, str]], out: Path, formulas: dict[tuple[int, str], str]) -> Path:
    """The rows as an XLSX sheet; formulas[(row index, column)] replaces that cell. The file
    is written by openpyxl, which (like many export tools) saves no formula results."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(ELDER_COLUMNS))
    for i, row in enumerate(rows):
        sheet.append([formulas.get((i, c), row[c] or None) for c in ELDER_COLUMNS])
    book.save(out)
    return out


def _save_result(path: Path, cell: str, value: str) -> None:
    """Give formula cell `cell` a saved result, as Excel or WPS would on saving."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data, n = re.subn(
                    rf'<c r="{cell}"([^>]*)><f>(.*?)</f><v\s*/>'.encode(),
                    rf'<c r="{cell}"\1 t="str"><f>\2</f><v>{value}</v>'.encode(),
                    data,
                )
                assert n == 1
            dst.writestr(item, data)
    shutil.move(tmp, path)


def test_an_xlsx_formula_without_a_saved_result_does_not_overwrite_the_address(
    db_dsn: str, street: tuple[Street, list[Path]], tmp_path: Path
) -> None:
    generated, files = street
    assert import_files(db_dsn, files).ok
    rows = _rows(files[2])
    elder = rows[4]["elder_id"]
    good = _one(db_dsn, "SELECT address FROM elders WHERE id = %s", elder)
    assert good

    column = ELDER_COLUMNS.index("address")
    address_col = openpyxl.utils.get_column_letter(column + 1)
    formula = f'=B6&"{good}"'
    xlsx = _as_xlsx(rows, tmp_path / "elders.xlsx", {(4, "address"): formula})
    report = import_files(db_dsn, [xlsx])

    assert not report.ok
    (error,) = report.errors
    assert (error.line, error.field) == (6, "address")
    assert "formula" in error.reason and "save" in error.reason
    assert _one(db_dsn, "SELECT address FROM elders WHERE id = %s", elder) == good

    # the same file once saved by a spreadsheet program: the saved result is the address
    _save_result(xlsx, f"{address_col}6", "新地址8号")
    report = import_files(db_dsn, [xlsx])
    assert report.ok, report.errors[:3]
    assert _one(db_dsn, "SELECT address FROM elders WHERE id = %s", elder) == "新地址8号"
    assert len(generated.elders) == _one(db_dsn, "SELECT count(*) FROM elders")


def test_a_formula_in_an_otherwise_empty_row_is_not_skipped(
    db_dsn: str, street: tuple[Street, list[Path]], tmp_path: Path
) -> None:
    _generated, files = street
    assert import_files(db_dsn, files).ok
    rows = _rows(files[2])[:3]
    blank = dict.fromkeys(ELDER_COLUMNS, "")
    xlsx = _as_xlsx([*rows, blank], tmp_path / "elders.xlsx", {(3, "elder_id"): "=A2"})
    report = import_files(db_dsn, [xlsx])
    assert not report.ok
    assert {e.line for e in report.errors} == {5}  # read, not skipped as a blank row
    assert any(e.field == "elder_id" and "formula" in e.reason for e in report.errors)
