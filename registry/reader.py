"""Read a ledger table (CSV or XLSX first sheet) as a header and text rows.

Rows are numbered as a spreadsheet user counts them: the header is line 1, so the
first data row is line 2 (blank rows still count, and are skipped).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

import openpyxl


class TableError(Exception):
    """The file cannot be read as a ledger table at all."""


@dataclass(frozen=True, slots=True)
class RawRow:
    line: int
    values: dict[str, str]  # column -> stripped text ("" when empty or missing)
    overflow: bool  # non-empty cells beyond the last header column


@dataclass(frozen=True, slots=True)
class Table:
    header: list[str]
    rows: Iterator[RawRow]  # may raise TableError while iterating (e.g. bad encoding)


def _normalise_header(cells: list[str]) -> list[str]:
    return [c.strip().lstrip("\ufeff").strip().lower() for c in cells]


def _rows(header: list[str], raw: Iterator[list[str]]) -> Iterator[RawRow]:
    for line, cells in enumerate(raw, start=2):
        values = [c.strip() for c in cells]
        if not any(values):
            continue
        row = dict.fromkeys(header, "")
        row.update(zip(header, values, strict=False))
        yield RawRow(line, row, any(values[len(header) :]))


def _csv_lines(path: Path) -> Iterator[list[str]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            try:
                yield from reader
            except csv.Error as exc:  # e.g. a cell over csv.field_size_limit() (128 KiB)
                raise TableError(f"line {reader.line_num}: not readable as CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise TableError(
            f"not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8' or as .xlsx"
        ) from None


def _cell_text(value: object) -> str:
    """Spreadsheet cells arrive typed: phone numbers as numbers, duty hours as times."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _xlsx_lines(path: Path) -> Iterator[list[str]]:
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a damaged file
        raise TableError(f"cannot open as an XLSX workbook: {exc}") from None
    try:
        sheet = book.worksheets[0]
        for cells in sheet.iter_rows(values_only=True):
            yield [_cell_text(c) for c in cells]
    except Exception as exc:  # read-only sheets are parsed lazily: damage shows up here
        raise TableError(f"damaged XLSX sheet: {type(exc).__name__}: {exc}"[:300]) from None
    finally:
        book.close()


def open_table(path: Path) -> Table:
    """Open a ledger file; raises TableError when it is unreadable or has no header."""
    if not path.is_file():
        raise TableError("no such file")
    lines = _xlsx_lines(path) if path.suffix.lower() in (".xlsx", ".xlsm") else _csv_lines(path)
    first = next(lines, None)
    if first is None or not any(c.strip() for c in first):
        raise TableError("empty file: the first line must be the header")
    header = _normalise_header(first)
    while header and not header[-1]:  # spreadsheets often carry trailing empty columns
        header.pop()
    return Table(header, _rows(header, lines))
