"""Read a ledger table (CSV or XLSX first sheet) as a header and text rows.

Rows are numbered as a spreadsheet user counts them: the header is line 1, so the
first data row is line 2 (blank rows still count, and are skipped). A caller that knows
what its headers look like may let title rows stand above the header (offices put the
ledger's name there): then the header is the first of the first MAX_TITLE_ROWS + 1 lines
it recognises, and line numbers still count every line of the file.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

import openpyxl

MAX_TITLE_ROWS = 5
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .xls (Excel 97-2003), .et, .doc
OLD_EXCEL = "an old Excel 97-2003 (.xls) workbook: open it in Excel or WPS and save it as .xlsx"


class TableError(Exception):
    """The file cannot be read as a ledger table at all."""


@dataclass(frozen=True, slots=True)
class RawRow:
    line: int
    values: dict[str, str]  # column -> stripped text ("" when empty or missing)
    overflow: bool  # non-empty cells beyond the last header column
    # columns whose cell is a formula the file holds no result for: its text reads as ""
    # but is not known to be empty (see _xlsx_lines)
    uncomputed: tuple[str, ...] = ()


class FormulaWithoutValue(str):
    """An XLSX cell with a formula and no saved result (the file was written by a
    program that does not calculate, not saved by Excel/WPS); its text is the formula."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Table:
    header: list[str]
    rows: Iterator[RawRow]  # may raise TableError while iterating (e.g. bad encoding)
    header_line: int = 1  # > 1 when title rows stand above the header


def _normalise_header(cells: list[str]) -> list[str]:
    return [c.strip().lstrip("\ufeff").strip().lower() for c in cells]


def _rows(header: list[str], raw: Iterator[list[str]], start: int = 2) -> Iterator[RawRow]:
    for line, cells in enumerate(raw, start=start):
        uncomputed = tuple(
            column
            for column, cell in zip(header, cells, strict=False)
            if isinstance(cell, FormulaWithoutValue) and column
        )
        values = ["" if isinstance(c, FormulaWithoutValue) else c.strip() for c in cells]
        if not any(values) and not uncomputed:
            continue
        row = dict.fromkeys(header, "")
        row.update(zip(header, values, strict=False))
        yield RawRow(line, row, any(values[len(header) :]), uncomputed)


def _csv_text(path: Path) -> str:
    """The CSV's text: UTF-8 (with or without BOM) or, failing that, GB18030, the
    encoding Excel and WPS on Chinese Windows use for a plain "CSV (逗号分隔)" save."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            raise TableError(
                f"neither UTF-8 nor GBK text (byte {exc.start}); save it as 'CSV UTF-8' or as .xlsx"
            ) from None


def _csv_lines(path: Path) -> Iterator[list[str]]:
    reader = csv.reader(io.StringIO(_csv_text(path), newline=""))
    try:
        yield from reader
    except csv.Error as exc:  # e.g. a cell over csv.field_size_limit() (128 KiB)
        raise TableError(f"line {reader.line_num}: not readable as CSV: {exc}") from None


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


_FORMULA_TAG = re.compile(rb"<(?:\w+:)?f[ >/]")


def _has_formulas(path: Path) -> bool:
    """Whether any sheet of the workbook holds a formula (a cheap scan of its XML)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.startswith("xl/worksheets/") and name.endswith(".xml"):
                    with archive.open(name) as sheet:
                        tail = b""
                        while chunk := sheet.read(1 << 20):
                            if _FORMULA_TAG.search(tail + chunk):
                                return True
                            tail = chunk[-16:]
    except (zipfile.BadZipFile, OSError, KeyError, ValueError):
        return False  # openpyxl reports the damage
    return False


def _xlsx_lines(path: Path) -> Iterator[list[str]]:
    """The first sheet's rows as text. A formula cell reads as its saved result; one
    without (files written by programs that do not calculate) becomes a
    FormulaWithoutValue, never "": an empty cell would overwrite a good address."""
    books = []
    try:
        books.append(openpyxl.load_workbook(path, read_only=True, data_only=True))
        if _has_formulas(path):
            books.append(openpyxl.load_workbook(path, read_only=True, data_only=False))
    except Exception as exc:  # openpyxl raises many types for a damaged file
        for book in books:
            book.close()
        raise TableError(f"cannot open as an XLSX workbook: {exc}") from None
    try:
        values = books[0].worksheets[0].iter_rows(values_only=True)
        if len(books) == 1:
            for cells in values:
                yield [_cell_text(c) for c in cells]
            return
        formulas = books[1].worksheets[0].iter_rows(values_only=True)
        for cells, written in zip(values, formulas, strict=False):
            row = [_cell_text(c) for c in cells]
            for i, source in enumerate(written):
                unsaved = isinstance(source, str) and source.startswith("=")
                if unsaved and (i >= len(cells) or cells[i] is None):
                    row += [""] * (i + 1 - len(row))
                    row[i] = FormulaWithoutValue(source)
            yield row
    except Exception as exc:  # read-only sheets are parsed lazily: damage shows up here
        raise TableError(f"damaged XLSX sheet: {type(exc).__name__}: {exc}"[:300]) from None
    finally:
        for book in books:
            book.close()


def open_table(path: Path, is_header: Callable[[list[str]], bool] | None = None) -> Table:
    """Open a ledger file; raises TableError when it is unreadable or has no header.

    With `is_header`, up to MAX_TITLE_ROWS lines before the first line it accepts are
    title rows and skipped; when none of those lines is accepted, line 1 is the header
    (and the caller reports what is wrong with it)."""
    if not path.is_file():
        raise TableError("no such file")
    with path.open("rb") as f:
        if f.read(len(_OLE_MAGIC)) == _OLE_MAGIC:
            raise TableError(OLD_EXCEL)
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
