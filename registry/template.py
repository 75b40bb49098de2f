"""`carewatch registry template`: the office ledger's template (老年人信息台账模板).

An XLSX (or CSV, by the file's suffix) with a title row, the Chinese header of
registry.chinese and one example row that imports as it is; the XLSX has a second sheet
(填写说明) saying what each column takes. An office fills it in, deletes the example and
imports it with `carewatch registry import`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import openpyxl
from openpyxl.styles import Alignment, Font, PatternFill

from registry.chinese import TEMPLATE_COLUMNS

TITLE = "××街道老年人信息台账（填写后删除示例行；标题行可保留）"
# One made-up elder; the ID card number is synthetic (valid check character).
EXAMPLE: dict[str, str] = {
    "序号": "1",
    "老人编号": "E0001",
    "姓名": "王秀英（示例）",
    "性别": "女",
    "身份证号": "500103194305120021",
    "联系电话": "13800000001",
    "区县": "渝中区",
    "街道": "七星岗街道",
    "所属社区": "金汤街社区",
    "家庭住址": "七星岗街道金汤街12号3-2",
    "纬度": "29.5585",
    "经度": "106.5625",
    "网格编号": "G01",
    "网格": "金汤街网格",
    "网格员编号": "GW01",
    "网格员": "李建国",
    "网格员电话": "13700000001",
    "网格员企业微信": "",
    "照护类型": "独居、高龄",
    "是否独居": "是",
    "手环编号": "WB0001",
    "传感器": "pir:PIR0001;door:DOOR0001",
    "紧急联系人": "张伟",
    "紧急联系人关系": "儿子",
    "紧急联系人电话": "13600000001",
    "过敏史": "青霉素过敏",
    "用药": "硝苯地平缓释片 每日2次",
    "慢性病/病史": "高血压；2019年脑梗",
    "行动能力": "需搀扶",
    "钥匙保管人": "赵桂兰（邻居，3-1）",
    "钥匙保管人电话": "13500000001",
    "备注": "听力较差，敲门要大声",
}
# (必填?, 说明) per column, for the 填写说明 sheet.
HELP: dict[str, tuple[str, str]] = {
    "序号": ("否", "不导入，可随意编号"),
    "老人编号": ("是", "本台账内唯一，字母、数字、“_”和“-”，如 E0001；再次导入时按编号更新"),
    "姓名": ("是", ""),
    "性别": ("否", "男 / 女；填了身份证号可不填"),
    "身份证号": (
        "否",
        "18位，会校验；系统只保存前6位和后4位（如 500103********0021），不保存完整号码",
    ),
    "联系电话": ("否", "老人本人电话：11位手机号或带区号的固定电话（023-12345678）"),
    "区县": ("是", "如 渝中区"),
    "街道": ("是", "如 七星岗街道"),
    "所属社区": ("否", "社区或村"),
    "家庭住址": ("否", "上门时找得到的地址"),
    "纬度": ("是", "家的位置，十进制度（WGS-84），如 29.5585"),
    "经度": ("是", "如 106.5625"),
    "网格编号": ("是", "字母、数字、“_”和“-”，同一网格每行一致"),
    "网格": ("是", "网格名称，同一网格每行一致"),
    "网格员编号": ("是", "同一网格员每行一致"),
    "网格员": ("是", "网格员姓名"),
    "网格员电话": ("是", "告警短信发到这个号码"),
    "网格员企业微信": ("否", "企业微信账号"),
    "照护类型": ("是", "独居、空巢、留守、失能、高龄、认知障碍、普通，可填多个，用“、”隔开"),
    "是否独居": ("否", "是 / 否；不填时照护类型含“独居”即为独居"),
    "手环编号": ("否", "设备上的编号"),
    "传感器": ("否", "类型:编号，多个用“;”隔开，如 pir:PIR0001;door:DOOR0001"),
    "紧急联系人": ("是", "第一位紧急联系人的姓名，告警时最先通知"),
    "紧急联系人关系": ("是", "如 儿子、女儿、邻居"),
    "紧急联系人电话": ("是", ""),
    "过敏史": ("否", "药物、食物过敏，如 青霉素过敏；告警时给上门的人看，不发短信"),
    "用药": ("否", "长期用药及用法"),
    "慢性病/病史": ("否", "如 高血压、糖尿病、脑梗史"),
    "行动能力": ("否", "自理 / 需搀扶 / 轮椅 / 卧床"),
    "钥匙保管人": ("否", "谁有老人家门钥匙（姓名，可注明关系）；填了就要填电话"),
    "钥匙保管人电话": ("否", "11位手机号或带区号的固定电话"),
    "备注": (
        "否",
        "上门时要知道的其他情况。这几列可整列删掉：删掉的列保留系统中已有的内容，列在而格子空着则清除",
    ),
}


def _help(header: str) -> tuple[str, str]:
    if header in HELP:
        return HELP[header]
    if header.startswith("紧急联系人"):
        return "否", "第二、三位紧急联系人，填了就要填姓名、关系、电话"
    return "否", ""


def write_template(path: Path) -> Path:
    headers = [zh for zh, _ in TEMPLATE_COLUMNS]
    example = [EXAMPLE.get(h, "") for h in headers]
    if path.suffix.lower() == ".csv":
        with path.open("w", encoding="utf-8-sig", newline="") as f:  # BOM: Excel reads it
            writer = csv.writer(f)
            writer.writerow([TITLE])
            writer.writerow(headers)
            writer.writerow(example)
        return path
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "老年人信息台账"
    sheet.append([TITLE])
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(headers))
    sheet["A1"].font = Font(bold=True, size=14)
    sheet.append(headers)
    required = PatternFill("solid", fgColor="FDE8E7")
    optional = PatternFill("solid", fgColor="EEF0F4")
    for cell in sheet[2]:
        cell.font = Font(bold=True)
        cell.alignment = Alignment(horizontal="center")
        cell.fill = required if _help(str(cell.value))[0] == "是" else optional
    sheet.append(example)
    for cell in sheet[3]:
        cell.number_format = "@"  # text: phone and ID numbers keep every digit
    for index, header in enumerate(headers, start=1):
        letter = openpyxl.utils.get_column_letter(index)
        sheet.column_dimensions[letter].width = max(10, len(header) * 2 + 4)
        for row in range(3, 1003):  # the rows an office fills: text, not numbers
            sheet.cell(row=row, column=index).number_format = "@"
    sheet.freeze_panes = "C3"
    notes = book.create_sheet("填写说明")
    notes.append(["列名", "必填", "说明"])
    for cell in notes[1]:
        cell.font = Font(bold=True)
    for header in headers:
        notes.append([header, *_help(header)])
    notes.append([])
    notes.append(
        [
            "说明",
            "",
            "第一行标题可保留；表头必须在前6行内。不认识的列（如 走访情况）会被忽略并提示。",
        ]
    )
    notes.append(["", "", "有任何一行出错时整份台账都不导入，错误会列出行号、列名和原因。"])
    notes.column_dimensions["A"].width = 22
    notes.column_dimensions["C"].width = 90
    book.save(path)
    return path


def cli_template(args: argparse.Namespace) -> int:
    """`carewatch registry template [--out FILE] [--force]`: an existing file (perhaps
    the office's filled-in ledger under the default name) is kept unless --force."""
    out = Path(args.out)
    if out.exists() and not getattr(args, "force", False):
        print(
            f"{out} already exists (a filled-in ledger?): not overwritten;"
            " choose another --out or add --force",
            file=sys.stderr,
        )
        return 1
    path = write_template(out)
    print(f"wrote {path}")
    return 0
