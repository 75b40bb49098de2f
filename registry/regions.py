"""The region tree (市 -> 区县 -> 街道/乡镇 -> 社区/村 -> 网格) on its own.

The elder ledger import places every grid in the tree by itself (migration 071: the
district, street and community columns create or match the nodes). This module is for
what comes before or beside it:

* `carewatch registry regions import FILE`: a table of places, one row each, with the
  columns 区县 (required), 街道 and 社区 (optional; a 社区 needs its 街道) and 市 (the
  city's name, the same on every row: renames the tree's root). Headers in Chinese (the
  ledger's own names and aliases) or English (district, street, community, city); other
  columns are ignored with a note. All or nothing: every row is checked first, errors
  are listed (in Chinese for a Chinese header) and nothing is written if any.
  Nodes are matched by name under their parent, so re-importing changes nothing.
  Grids are not made here: they come with the elder ledger.
* `carewatch registry regions list`: the tree, with the scope name each node is given by
  in `create-token --scope` and how many grids and elders lie under it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from carewatch.settings import Settings
from registry.chinese import HEADERS, column_letter
from registry.ledger import RowError
from registry.reader import TableError, open_table

_CITY_HEADERS = ("市", "城市", "所属市", "city")
_ENGLISH = ("district", "street", "community")
_ZH = {"city": "市", "district": "区县", "street": "街道", "community": "社区"}


@dataclass(frozen=True, slots=True)
class Place:
    line: int
    district: str
    street: str
    community: str


@dataclass
class RegionsReport:
    file: str
    places: list[Place] = field(default_factory=list)
    city: str | None = None
    errors: list[RowError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        notes = [f"note: {n}" for n in self.notes]
        if not self.ok:
            head = f"regions rejected, nothing was written: {len(self.errors)} error(s)"
            if any(e.chinese for e in self.errors):
                head += f"\n区划未导入，没有写入任何数据：共 {len(self.errors)} 处错误"
            return "\n".join([head, *notes, *(f"  {e}" for e in self.errors)])
        city = f", city named {self.city}" if self.city else ""
        return "\n".join(
            [f"regions: {len(self.places)} row(s) read, {self.created} new node(s){city}", *notes]
        )


def _column_of(name: str) -> str | None:
    if name in _CITY_HEADERS:
        return "city"
    internal = name if name in _ENGLISH else HEADERS.get(name)
    return internal if internal in _ENGLISH else None


def parse_regions(path: Path) -> RegionsReport:
    """Read and check a regions table (no database)."""
    report = RegionsReport(str(path))

    def is_header(cells: list[str]) -> bool:
        return any(_column_of(c) == "district" for c in cells)

    try:
        table = open_table(path, is_header)
    except TableError as e:
        report.errors.append(RowError(report.file, 0, None, str(e)))
        return report
    chinese = any(not c.isascii() for c in table.header)
    where: dict[str, str] = {}
    for index, name in enumerate(table.header):
        column = _column_of(name)
        if column is None or column in where:
            if name:
                report.notes.append(f"ignored column {name!r} ({column_letter(index)})")
            continue
        where[column] = name

    def error(line: int, column: str | None, english: str, zh: str) -> None:
        if chinese:
            label = f"{where.get(column, _ZH[column])}" if column else None
            report.errors.append(RowError(report.file, line, label, zh, chinese=True))
        else:
            report.errors.append(RowError(report.file, line, column, english))

    if "district" not in where:
        error(table.header_line, "district", "missing column", "缺少这一列")
        return report
    cities: set[str] = set()
    for row in table.rows:
        cell = {c: row.values.get(name, "").strip() for c, name in where.items()}
        if not any(cell.values()):
            continue
        if not cell["district"]:
            error(row.line, "district", "required", "不能为空")
        if cell.get("community") and not cell.get("street"):
            error(row.line, "street", "a community needs its street", "填了社区就要填所属街道")
        if cell.get("city"):
            cities.add(cell["city"])
        report.places.append(
            Place(row.line, cell["district"], cell.get("street", ""), cell.get("community", ""))
        )
    if len(cities) > 1:
        names = "、".join(sorted(cities))
        error(0, "city", f"one city per tree, found {names}", f"只能有一个市，这里有：{names}")
    report.city = next(iter(cities), None)
    return report


def import_regions(dsn: str, path: Path) -> RegionsReport:
    """Check the file and, only if every row is valid, create the missing nodes."""
    report = parse_regions(path)
    if not report.ok:
        return report
    with psycopg.connect(dsn) as conn, conn.transaction():
        before = _count(conn)
        if report.city:
            conn.execute(
                "UPDATE regions SET name = %s WHERE level = 'city' AND name <> %s",
                (report.city, report.city),
            )
        for place in report.places:
            conn.execute(
                "SELECT carewatch_place_region(%s, %s, %s)",
                (place.district, place.street or None, place.community or None),
            )
        report.created = _count(conn) - before
    return report


def _count(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute("SELECT count(*) FROM regions").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True, slots=True)
class Node:
    depth: int
    level: str
    scope: str  # the names below the city, '/'-separated: what create-token takes
    grids: int
    elders: int


def region_tree(dsn: str) -> list[Node]:
    """Every node in tree order, with the grids and elders in its subtree."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT r.level, r.path,"
            " (SELECT string_agg(a.name, '/' ORDER BY length(a.path)) FROM regions a"
            "   WHERE r.path LIKE a.path || '%' AND a.level <> 'city') AS scope,"
            " (SELECT count(*) FROM grids g JOIN regions gr ON gr.id = g.region_id"
            "   WHERE gr.path LIKE r.path || '%') AS grids,"
            " (SELECT count(*) FROM elders e JOIN grids g ON g.id = e.grid_id"
            "   JOIN regions gr ON gr.id = g.region_id WHERE gr.path LIKE r.path || '%')"
            "   AS elders,"
            " r.name FROM regions r ORDER BY r.path"
        ).fetchall()
    return [
        Node(path.count("/") - 2, level, scope or f"* ({name})", grids, elders)
        for level, path, scope, grids, elders, name in rows
    ]


def format_tree(nodes: Iterable[Node]) -> str:
    return "\n".join(
        f"{'  ' * n.depth}{n.scope}  [{n.level}: {n.grids} grid(s), {n.elders} elder(s)]"
        for n in nodes
    )


def cli_regions(settings: Settings, command: str, file: Path | None) -> int:
    """`carewatch registry regions list` / `... regions import FILE`."""
    if command == "list" or file is None:
        print(format_tree(region_tree(settings.database_url)))
        return 0
    report = import_regions(settings.database_url, file)
    print(report)
    return 0 if report.ok else 1
