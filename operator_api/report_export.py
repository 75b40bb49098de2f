"""The street/district report as the civil-affairs office files it: a table with Chinese
headers, as CSV (UTF-8 with a BOM, so Excel opens it in Chinese) or XLSX (a title row,
then the header). Pure: report in, bytes out."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from openpyxl import Workbook
from openpyxl.styles import Font

from operator_api.models import AreaReport, AreaReportRow

XLSX_MEDIA = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PERIOD_LABELS = {"week": "本周", "month": "本月"}
HEADERS: tuple[str, ...] = (
    "区县",
    "街道",
    "老人数",
    "应访人数（独居/空巢）",
    "已访人数",
    "走访完成率",
    "走访登记次数",
    "告警数",
    "接单用时中位数（分钟）",
    "接单用时P90（分钟）",
    "到达用时中位数（分钟）",
    "到达用时P90（分钟）",
    "误报数",
    "误报率",
    "离线设备数",
)
TOTAL = "合计"

Cell = str | int | float | None


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _percent(share: float | None) -> str | None:
    return None if share is None else f"{share * 100:.1f}%"


def row_cells(row: AreaReportRow) -> list[Cell]:
    return [
        row.district,
        row.street if row.street is not None else TOTAL,
        row.elders,
        row.visits_due,
        row.visits_done,
        _percent(row.visit_rate),
        row.checkins,
        row.alerts,
        _minutes(row.time_to_acknowledge.median_s),
        _minutes(row.time_to_acknowledge.p90_s),
        _minutes(row.time_to_arrive.median_s),
        _minutes(row.time_to_arrive.p90_s),
        row.false_alarms,
        _percent(row.false_alarm_rate),
        row.devices_offline,
    ]


def title(report: AreaReport) -> str:
    label = PERIOD_LABELS.get(report.period, report.period)
    return f"巡访与告警统计（{label}：{report.start.isoformat()} 至 {report.end.isoformat()}）"


def table(report: AreaReport) -> list[list[Cell]]:
    return [row_cells(r) for r in report.rows]


def filename(report: AreaReport, ext: str) -> str:
    return f"visits-report-{report.period}-{report.start.isoformat()}.{ext}"


def to_csv(report: AreaReport) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADERS)
    writer.writerows(["" if c is None else c for c in cells] for cells in table(report))
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(report: AreaReport) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "巡访统计"
    sheet.append([title(report)])
    sheet["A1"].font = Font(bold=True, size=14)
    sheet.append(list(HEADERS))
    for cell in sheet[2]:
        cell.font = Font(bold=True)
    rows: Sequence[list[Cell]] = table(report)
    for cells in rows:
        sheet.append(cells)
    for column, width in zip(
        "ABCDEFGHIJKLMNO", (10, 14, 8, 12, 10, 10, 12, 8, 12, 12, 12, 12, 8, 8, 10), strict=True
    ):
        sheet.column_dimensions[column].width = width
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
