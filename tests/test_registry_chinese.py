"""The elder ledger as street offices keep it: Chinese headers, a title row, extra
columns, 照护类型, 身份证号 stored masked, errors in Chinese, the template; parsing on its
own and imports into a real PostgreSQL (all or nothing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openpyxl
import psycopg
import pytest

from registry.chinese import TEMPLATE_COLUMNS, care_profile, column_letter, reason
from registry.fields import FieldError, parse_id_card
from registry.importer import format_report, import_files
from registry.ledger import parse_ledger
from registry.template import write_template

PROFILES = (
    "standard",
    "elderly_80plus",
    "alone",
    "disabled",
    "cognitive",
    "empty_nest",
    "left_behind",
)
ID_WANG = "500103194305120021"  # synthetic, valid check character, a woman
ID_LIU = "50010319380101029X"  # synthetic, valid check character, a man
TITLE = "七星岗街道老年人信息台账（2026年11月）"
HEADER = [
    "序号", "老人编号", "姓名", "性别", "身份证号", "联系电话", "区县", "街道", "所属社区",
    "家庭住址", "纬度", "经度", "网格编号", "网格", "网格员编号", "网格员", "网格员电话",
    "照护类型", "手环编号", "紧急联系人", "紧急联系人关系", "紧急联系人电话", "户籍类别", "走访情况",
]  # fmt: skip


def _row(**changes: str) -> list[str]:
    row = {
        "序号": "1", "老人编号": "E0001", "姓名": "王秀英", "性别": "女", "身份证号": ID_WANG,
        "联系电话": "13800000001", "区县": "渝中区", "街道": "七星岗街道", "所属社区": "金汤街社区",
        "家庭住址": "金汤街12号3-2", "纬度": "29.5585", "经度": "106.5625", "网格编号": "G01",
        "网格": "金汤街网格", "网格员编号": "GW01", "网格员": "李建国", "网格员电话": "13700000001",
        "照护类型": "独居、高龄", "手环编号": "WB0001", "紧急联系人": "张伟",
        "紧急联系人关系": "儿子", "紧急联系人电话": "13600000001", "户籍类别": "城镇",
        "走访情况": "每周二走访",
    }  # fmt: skip
    row.update(changes)
    return [row[h] for h in HEADER]


def _liu(**changes: str) -> list[str]:
    base = {
        "序号": "2", "老人编号": "E0002", "姓名": "刘建华", "性别": "男", "身份证号": ID_LIU,
        "联系电话": "", "家庭住址": "中山一路8号", "照护类型": "空巢", "手环编号": "WB0002",
        "紧急联系人": "刘洋", "紧急联系人电话": "13600000003", "户籍类别": "",
    }  # fmt: skip
    base.update(changes)
    return _row(**base)


def _xlsx(path: Path, rows: list[list[str]], numbers: bool = True) -> Path:
    """An office's workbook: a merged title row, the header, rows; phone numbers typed in
    as numbers, the way Excel stores them when nobody formats the column as text."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append([TITLE])
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(HEADER))
    sheet.append(HEADER)
    for row in rows:
        typed: list[object] = list(row)
        if numbers:
            for column in ("联系电话", "网格员电话", "紧急联系人电话"):
                i = HEADER.index(column)
                typed[i] = int(row[i]) if row[i].isdigit() else row[i]
        sheet.append(typed)
    book.save(path)
    return path


def test_chinese_xlsx_with_title_row_and_extra_columns_parses(tmp_path: Path) -> None:
    path = _xlsx(tmp_path / "台账.xlsx", [_row(), _liu()])
    ledger = parse_ledger([path], PROFILES)
    assert ledger.errors == []
    wang, liu = ledger.elders
    assert (wang.elder_id, wang.name, wang.phone, wang.community) == (
        "E0001",
        "王秀英",
        "13800000001",
        "金汤街社区",
    )
    # 独居、高龄: the most demanding profile, and she lives alone
    assert (wang.care_profile, wang.lives_alone) == ("elderly_80plus", True)
    assert (liu.care_profile, liu.lives_alone) == ("empty_nest", False)
    # the ID card number is masked as it is parsed: the full number is in no record
    assert wang.id_card_masked == "500103********0021" and wang.gender == "女"
    assert ID_WANG not in repr(ledger.elders)
    assert [(c.name, c.relation, c.phone) for c in wang.contacts] == [
        ("张伟", "儿子", "13600000001")
    ]
    # columns carewatch does not know are ignored, and the import says which
    (note,) = ledger.notes
    assert "已忽略" in note and "户籍类别（W列）" in note and "走访情况（X列）" in note


def test_bad_rows_are_reported_in_chinese_with_line_column_and_reason(tmp_path: Path) -> None:
    rows = [
        _row(),
        _liu(联系电话="1380000"),  # line 4
        _row(**{"序号": "3", "老人编号": "E0003", "身份证号": "500103194305120022"}),
        _row(**{"序号": "4", "老人编号": "E0004", "照护类型": "五保"}),
        _row(**{"序号": "5", "老人编号": "E0005", "姓名": ""}),
        _row(**{"序号": "6", "老人编号": "E0006", "性别": "男", "手环编号": "WB0006"}),
    ]
    path = _xlsx(tmp_path / "台账.xlsx", rows, numbers=False)
    ledger = parse_ledger([path], PROFILES)
    found = {(e.line, e.field): e.reason for e in ledger.errors}
    assert all(e.chinese for e in ledger.errors)
    assert "不是有效的电话号码" in found[(4, "联系电话（F列）")]
    assert "校验位" in found[(5, "身份证号（E列）")]
    assert "不是可识别的照护类型" in found[(6, "照护类型（R列）")]
    assert found[(7, "姓名（C列）")] == "必须填写"
    assert "身份证号码显示为“女”" in found[(8, "性别（D列）")]
    # duplicated device ids point at the first row, by its line
    assert any("第 3 行已有" in r for r in found.values())
    text = str(next(e for e in ledger.errors if e.line == 4))
    assert text.startswith(f"{path}：第 4 行，联系电话（F列）：")


def test_missing_column_is_named_in_chinese_on_the_header_line(tmp_path: Path) -> None:
    path = tmp_path / "台账.csv"
    header = [h for h in HEADER if h != "网格员电话"]
    row = _row()
    del row[HEADER.index("网格员电话")]
    path.write_text(
        "\n".join(",".join(r) for r in ([TITLE], header, row)) + "\n", encoding="utf-8-sig"
    )
    ledger = parse_ledger([path], PROFILES)
    assert [str(e) for e in ledger.errors] == [f"{path}：第 2 行，网格员电话：缺少这一列"]


def test_header_without_name_column_is_a_chinese_error(tmp_path: Path, db_dsn: str) -> None:
    path = tmp_path / "台账.csv"
    header = ["名字" if h == "姓名" else h for h in HEADER]
    path.write_text(
        "\n".join(",".join(r) for r in ([TITLE], header, _row())) + "\n", encoding="utf-8"
    )
    report = import_files(db_dsn, [path])
    assert not report.ok
    text = format_report(report)
    assert "台账未导入，没有写入任何数据：共 1 处错误" in text
    assert f"{path}：整个文件：找不到表头行：前 6 行中没有一行含“姓名”" in text
    assert "unknown table" not in text


def test_unreadable_office_files_get_one_chinese_line_each(tmp_path: Path, db_dsn: str) -> None:
    xls = tmp_path / "台账.xls"  # Excel 97-2003: an OLE compound file
    xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    renamed = tmp_path / "台账（改名）.xlsx"  # the same file, renamed by hand
    renamed.write_bytes(xls.read_bytes())
    broken = tmp_path / "坏.xlsx"
    broken.write_bytes(b"not a workbook")
    missing = tmp_path / "没有.csv"
    english = tmp_path / "old.xls"
    english.write_bytes(xls.read_bytes())

    report = import_files(db_dsn, [xls, renamed, broken, missing, english])

    assert [str(e) for e in report.errors] == [
        f"{xls}：整个文件：这是旧版 Excel（.xls）文件，请用 Excel 或 WPS 另存为 .xlsx",
        f"{renamed}：整个文件：这是旧版 Excel（.xls）文件，请用 Excel 或 WPS 另存为 .xlsx",
        f"{broken}：整个文件：无法作为 XLSX 工作簿打开（文件可能已损坏）",
        f"{missing}：整个文件：找不到这个文件",
        f"{english}: file: an old Excel 97-2003 (.xls) workbook: open it in Excel or WPS"
        " and save it as .xlsx",
    ]


def test_chinese_ledger_imports_and_keeps_only_the_masked_id(tmp_path: Path, db_dsn: str) -> None:
    path = _xlsx(tmp_path / "台账.xlsx", [_row(), _liu()])
    report = import_files(db_dsn, [path])
    assert report.ok, [str(e) for e in report.errors]
    assert "已忽略" in format_report(report)
    with psycopg.connect(db_dsn) as conn:
        rows = conn.execute(
            "SELECT id, gender, id_card_masked, community, care_profile_id, lives_alone"
            " FROM elders ORDER BY id"
        ).fetchall()
        everything = conn.execute("SELECT row_to_json(e)::text FROM elders e").fetchall()
    assert rows == [
        ("E0001", "女", "500103********0021", "金汤街社区", "elderly_80plus", True),
        ("E0002", "男", "500103********029X", "金汤街社区", "empty_nest", False),
    ]
    assert not any(ID_WANG in r[0] or ID_LIU in r[0] for r in everything)


def test_one_bad_row_imports_nothing(tmp_path: Path, db_dsn: str) -> None:
    stations = tmp_path / "stations.csv"
    stations.write_text(
        "station_id,name,kind,district,street,lat,lon,phone,wecom_userid,staffed,duty_start,duty_end\n"
        "ST1,七星岗街道养老服务中心,street_centre,渝中区,七星岗街道,29.56,106.57,13960000002,,true,00:00,23:59\n",
        encoding="utf-8",
    )
    elders = _xlsx(tmp_path / "台账.xlsx", [_row(), _liu(紧急联系人电话="123")])
    report = import_files(db_dsn, [stations, elders])
    assert not report.ok
    text = format_report(report)
    assert "台账未导入，没有写入任何数据：共 1 处错误" in text
    assert "第 4 行，紧急联系人电话（V列）：“123”不是有效的电话号码" in text
    with psycopg.connect(db_dsn) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM elders), (SELECT count(*) FROM stations),"
            " (SELECT count(*) FROM grids)"
        ).fetchone()
    assert counts == (0, 0, 0)


def test_gbk_csv_as_excel_saves_it_on_chinese_windows_imports(tmp_path: Path, db_dsn: str) -> None:
    path = tmp_path / "台账.csv"
    path.write_bytes(
        "\r\n".join(",".join(r) for r in ([TITLE], HEADER, _row(), _liu())).encode("gbk")
    )
    report = import_files(db_dsn, [path])
    assert report.ok, [str(e) for e in report.errors]
    with psycopg.connect(db_dsn) as conn:
        names = conn.execute("SELECT name, address FROM elders ORDER BY id").fetchall()
    assert names == [("王秀英", "金汤街12号3-2"), ("刘建华", "中山一路8号")]


def test_reimport_without_id_keeps_the_stored_masked_number(tmp_path: Path, db_dsn: str) -> None:
    assert import_files(db_dsn, [_xlsx(tmp_path / "a.xlsx", [_row()])]).ok
    assert import_files(db_dsn, [_xlsx(tmp_path / "b.xlsx", [_row(身份证号="", 性别="")])]).ok
    with psycopg.connect(db_dsn) as conn:
        stored = conn.execute("SELECT id_card_masked, gender FROM elders").fetchone()
    assert stored == ("500103********0021", None)


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
def test_template_is_written_and_its_example_imports(
    tmp_path: Path, db_dsn: str, suffix: str
) -> None:
    out = tmp_path / f"模板{suffix}"
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("carewatch")),
            "registry",
            "template",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if suffix == ".xlsx":
        book = openpyxl.load_workbook(out)
        assert book.sheetnames == ["老年人信息台账", "填写说明"]
        sheet = book["老年人信息台账"]
        assert "老年人信息台账" in str(sheet["A1"].value)
        assert [c.value for c in sheet[2]] == [zh for zh, _ in TEMPLATE_COLUMNS]
        assert "不保存完整号码" in str([c.value for c in book["填写说明"]["C"]])
    report = import_files(db_dsn, [out])
    assert report.ok, [str(e) for e in report.errors]
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT name, care_profile_id, lives_alone, id_card_masked FROM elders"
        ).fetchone()
    assert row == ("王秀英（示例）", "elderly_80plus", True, "500103********0021")
    write_template(tmp_path / "again.xlsx")  # the function the command runs


def test_units_care_types_letters_reasons_id_cards() -> None:
    assert care_profile("失能/独居") == ("disabled", True)
    assert care_profile("留守") == ("left_behind", False)
    assert care_profile("独居 五保") == ("五保", True)
    assert [column_letter(i) for i in (0, 25, 26, 27, 51)] == ["A", "Z", "AA", "AB", "AZ"]
    assert reason("a value is required") == "必须填写"
    assert reason("'abc' is not a valid phone number").startswith("“abc”不是有效的电话号码")
    assert reason("something new") == "内容有误（something new）"
    assert parse_id_card("50010319380101029x") == "500103********029X"
    with pytest.raises(FieldError):
        parse_id_card("500103193801010290")  # check character wrong
    with pytest.raises(FieldError):
        parse_id_card("5001031938010100")  # 16 characters
