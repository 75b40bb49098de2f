"""Read a ledger table (CSV or XLSX first sheet) as a header and text rows.

Rows are numbered as a spreadsheet user counts them: the header is line 1, so the
first data row is line 2 (blank rows still count, and are skipped). A caller that knows
what its headers look like may let title rows stand above the header (offices put the
ledger's name there): then the header is the first of the first MAX_TITLE_ROWS + 1 lines
it recognises, and line numbers still count every line of the file.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

import openpyxl

MAX_TITLE_ROWS = 5


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
    header_line: int = 1  # > 1 when title rows stand above the header


def _normalise_header(cells: list[str]) -> list[str]:
    return [c.strip().lstrip("\ufeff").strip().lower() for c in cells]


def _rows(header: list[str], raw: Iterator[list[str]], start: int = 2) -> Iterator[RawRow]:
    for line, cells in enumerate(raw, start=start):
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


def open_table(path: Path, is_header: Callable[[list[str]], bool] | None = None) -> Table:
    """Open a ledger file; raises TableError when it is unreadable or has no header.

    With `is_header`, up to MAX_TITLE_ROWS lines before the first line it accepts are
    title rows and skipped; when none of those lines is accepted, line 1 is the header
    (and the caller reports what is wrong with it)."""
    if not path.is_file():
        raise TableError("no such file")
    lines = _xlsx_lines(path) if path.suffix.lower() in (".xlsx", ".xlsm") else _csv_lines(path)
    first = next(lines, None)
    if first is None or not any(c.strip() for c in first):
        raise TableError("empty file: the first line must be the header")
    header_cells, header_line = first, 1
    if is_header is not None and not is_header(_normalise_header(first)):
        looked_at = [first]
        for candidate in lines:
            looked_at.append(candidate)
            if is_header(_normalise_header(candidate)):
                header_cells, header_line = candidate, len(looked_at)
                break
            if len(looked_at) > MAX_TITLE_ROWS:
                break
        if header_line == 1:  # nothing recognisable: line 1 is the header after all
            lines = itertools.chain(looked_at[1:], lines)
    header = _normalise_header(header_cells)
    while header and not header[-1]:  # spreadsheets often carry trailing empty columns
        header.pop()
    return Table(header, _rows(header, lines, header_line + 1), header_line)
