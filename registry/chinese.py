"""The elder ledger as street offices keep it: Chinese headers (老年人信息台账).

An elders table whose header row is in Chinese (序号, 姓名, 性别, 身份证号, 联系电话,
家庭住址, 所属社区, 网格, 照护类型, 紧急联系人 ...) is read as the same table as the English
format (registry.ledger_format), column by column, so both are validated by one parser:

- title rows above the header are skipped (registry.reader finds the header);
- columns carewatch does not know (走访情况 ...) are ignored, and the import says so;
- the medical notes and care needs (过敏史, 用药, 慢性病/病史, 行动能力, 钥匙保管人 and
  its 电话, 备注) are optional: a file without one of these columns keeps what is stored;
- 照护类型 (独居/空巢/留守/失能/高龄/认知障碍/普通, several allowed: '独居、高龄') becomes
  the care profile (the most demanding one) and, unless 是否独居 is given, lives_alone;
- errors come back in Chinese with the line, the column as the file names it (and its
  spreadsheet letter) and the reason.

Stations, duty officers and zones keep the English headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from registry.ledger_format import CARE_NOTE_COLUMNS, ELDER_COLUMNS
from registry.reader import MAX_TITLE_ROWS, RawRow, Table

# The template's columns, in order: (Chinese header, internal column; "" = not imported).
TEMPLATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("序号", ""),
    ("老人编号", "elder_id"),
    ("姓名", "name"),
    ("性别", "gender"),
    ("身份证号", "id_card"),
    ("联系电话", "phone"),
    ("区县", "district"),
    ("街道", "street"),
    ("所属社区", "community"),
    ("家庭住址", "address"),
    ("纬度", "lat"),
    ("经度", "lon"),
    ("网格编号", "grid_id"),
    ("网格", "grid_name"),
    ("网格员编号", "grid_worker_id"),
    ("网格员", "grid_worker_name"),
    ("网格员电话", "grid_worker_phone"),
    ("网格员企业微信", "grid_worker_wecom"),
    ("照护类型", "care_type"),
    ("是否独居", "lives_alone"),
    ("手环编号", "wristband_id"),
    ("传感器", "sensors"),
    ("紧急联系人", "contact1_name"),
    ("紧急联系人关系", "contact1_relation"),
    ("紧急联系人电话", "contact1_phone"),
    ("紧急联系人企业微信", "contact1_wecom"),
    ("紧急联系人2", "contact2_name"),
    ("紧急联系人2关系", "contact2_relation"),
    ("紧急联系人2电话", "contact2_phone"),
    ("紧急联系人2企业微信", "contact2_wecom"),
    ("紧急联系人3", "contact3_name"),
    ("紧急联系人3关系", "contact3_relation"),
    ("紧急联系人3电话", "contact3_phone"),
    ("紧急联系人3企业微信", "contact3_wecom"),
    ("过敏史", "allergies"),
    ("用药", "medications"),
    ("慢性病/病史", "conditions"),
    ("行动能力", "mobility"),
    ("钥匙保管人", "key_holder_name"),
    ("钥匙保管人电话", "key_holder_phone"),
    ("备注", "notes"),
)
# Other names offices give the same columns.
ALIASES: dict[str, str] = {
    "编号": "elder_id",
    "老人姓名": "name",
    "身份证号码": "id_card",
    "身份证": "id_card",
    "电话": "phone",
    "本人电话": "phone",
    "手机号码": "phone",
    "所属区县": "district",
    "区/县": "district",
    "所属街道": "street",
    "街道/乡镇": "street",
    "乡镇（街道）": "street",
    "社区": "community",
    "社区/村": "community",
    "所属社区/村": "community",
    "住址": "address",
    "居住地址": "address",
    "现住址": "address",
    "所属网格": "grid_name",
    "网格名称": "grid_name",
    "网格员姓名": "grid_worker_name",
    "老人类型": "care_type",
    "人员类别": "care_type",
    "紧急联系人姓名": "contact1_name",
    "与老人关系": "contact1_relation",
    "紧急联系电话": "contact1_phone",
    "药物过敏史": "allergies",
    "过敏": "allergies",
    "用药情况": "medications",
    "长期用药": "medications",
    "常用药": "medications",
    "慢性病": "conditions",
    "病史": "conditions",
    "既往病史": "conditions",
    "自理能力": "mobility",
    "行动情况": "mobility",
    "钥匙保管人姓名": "key_holder_name",
    "钥匙保管人联系电话": "key_holder_phone",
}
HEADERS: dict[str, str] = {**dict(TEMPLATE_COLUMNS), **ALIASES}
CHINESE_NAME: dict[str, str] = {internal: zh for zh, internal in TEMPLATE_COLUMNS if internal}
CHINESE_NAME["care_profile"] = "照护类型"
CHINESE_NAME["lives_alone"] = "是否独居（或照护类型）"

# 照护类型 words -> care profile id, most demanding first (the first one found wins).
CARE_TYPES: dict[str, str] = {
    "失能": "disabled",
    "半失能": "disabled",
    "认知障碍": "cognitive",
    "失智": "cognitive",
    "高龄": "elderly_80plus",
    "独居": "alone",
    "空巢": "empty_nest",
    "留守": "left_behind",
    "普通": "standard",
    "一般": "standard",
}
_PROFILE_RANK = ("disabled", "cognitive", "elderly_80plus", "alone", "empty_nest", "left_behind")
_CARE_SPLIT_RE = re.compile(r"[、,，/;；\s和及+]+")
# Columns a Chinese file must have; the others may be left out (their cells are optional).
REQUIRED: frozenset[str] = frozenset(
    {
        "elder_id",
        "name",
        "district",
        "street",
        "lat",
        "lon",
        "grid_id",
        "grid_name",
        "grid_worker_id",
        "grid_worker_name",
        "grid_worker_phone",
        "care_profile",
        "lives_alone",
        "contact1_name",
        "contact1_relation",
        "contact1_phone",
    }
)
_HEADER_REASONS = frozenset({"missing column", "unknown column", "column appears twice"})
MIN_RECOGNISED = 3  # Chinese header cells that make a row the header (and 姓名 among them)


def looks_like_header(cells: list[str]) -> bool:
    """Is this row a ledger header, English or Chinese? (Title rows are not.)"""
    if any(c in ("elder_id", "station_id", "officer_id", "zone_id") for c in cells):
        return True
    return is_chinese(cells)


_CJK = re.compile(r"[\u4e00-\u9fff]")
NO_HEADER = (
    f"找不到表头行：前 {MAX_TITLE_ROWS + 1} 行中没有一行含“姓名”和至少 {MIN_RECOGNISED} 个"
    "台账列名（如“老人编号”“姓名”“联系电话”）；请对照 carewatch registry template"
    " 生成的模板检查列名"
)


_FILE_REASONS = (
    (re.compile(r"^no such file$"), "找不到这个文件"),
    (
        re.compile(r"^an old Excel 97-2003 .*$"),
        "这是旧版 Excel（.xls）文件，请用 Excel 或 WPS 另存为 .xlsx",
    ),
    (
        re.compile(r"^neither UTF-8 nor GBK text.*$"),
        "不是 UTF-8 或 GBK 编码的文本，请另存为“CSV UTF-8”或 .xlsx",
    ),
    (
        re.compile(r"^cannot open as an XLSX workbook.*$"),
        "无法作为 XLSX 工作簿打开（文件可能已损坏）",
    ),
    (re.compile(r"^empty file.*$"), "文件是空的：第一行应是表头"),
)


def file_reason(text: str) -> str | None:
    """Why a whole file is unreadable, in Chinese (None when no rule knows it)."""
    for pattern, chinese in _FILE_REASONS:
        if pattern.match(text):
            return chinese
    return None


def has_chinese_text(cells: list[str]) -> bool:
    """Whether a row holds Chinese text: an office's file, whose errors are in Chinese."""
    return any(_CJK.search(c) for c in cells)


def is_chinese(header: list[str]) -> bool:
    known = [c for c in header if c in HEADERS]
    return "姓名" in known and len(known) >= MIN_RECOGNISED


def column_letter(index: int) -> str:
    """Spreadsheet column name of a 0-based index: 0 -> A, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def care_profile(text: str) -> tuple[str, bool]:
    """(care profile id, lives alone) of a 照护类型 cell; an unknown word comes back as
    it is, for the parser to refuse with the list of known ones."""
    words = [w for w in _CARE_SPLIT_RE.split(text) if w]
    unknown = [w for w in words if w not in CARE_TYPES]
    if unknown:
        return unknown[0], "独居" in words
    profiles = {CARE_TYPES[w] for w in words}
    chosen = next((p for p in _PROFILE_RANK if p in profiles), "standard")
    return chosen, "独居" in words


@dataclass
class Localizer:
    """What a Chinese-header file needs to speak Chinese: where each column is."""

    file: str
    columns: dict[str, str] = field(default_factory=dict)  # internal -> '联系电话（F列）'
    ignored: list[str] = field(default_factory=list)  # '备注（AB列）'

    def column(self, internal: str | None) -> str | None:
        if internal is None:
            return None
        return self.columns.get(internal) or CHINESE_NAME.get(internal, internal)

    def error(
        self, line: int, column: str | None, why: str, header_line: int
    ) -> tuple[int, str | None, str]:
        """(line, column, reason) of an error, in Chinese; header problems are placed on
        the header's own line."""
        if line == 1 and why in _HEADER_REASONS:
            line = header_line
        return line, self.column(column), reason(why)

    def notes(self) -> list[str]:
        if not self.ignored:
            return []
        return [f"{self.file}：已忽略不认识的列：{'、'.join(self.ignored)}"]


def translate(file: str, table: Table) -> tuple[Table, Localizer]:
    """The Chinese-header table as the English-format table of the same rows."""
    local = Localizer(file)
    header: list[str] = []
    for index, name in enumerate(table.header):
        internal = HEADERS.get(name)
        where = f"{name}（{column_letter(index)}列）"
        if internal is None:
            if name:
                local.ignored.append(where)
            header.append("")
            continue
        if internal and internal in local.columns:  # two names for one column
            local.ignored.append(f"{where}（与{local.columns[internal]}重复）")
            header.append("")
            continue
        if internal:
            local.columns[internal] = where
            if internal == "care_type":
                local.columns.setdefault("care_profile", where)
        header.append(internal)
    has_lives_alone = "lives_alone" in header
    out_header = [c for c in dict.fromkeys(header) if c and c != "care_type"]
    if "care_type" in header:
        out_header.append("care_profile")
        if not has_lives_alone:
            out_header.append("lives_alone")
    left_out = [
        c
        for c in ELDER_COLUMNS
        # a care note column the file lacks stays absent: the import keeps what is stored
        if c not in out_header and c not in REQUIRED and c not in CARE_NOTE_COLUMNS
    ]
    out_header += left_out  # empty in every row

    def rows() -> Iterator[RawRow]:
        for raw in table.rows:
            values: dict[str, str] = {}
            for name, internal in zip(table.header, header, strict=True):
                if internal and internal not in values:
                    values[internal] = raw.values.get(name, "")
            values.update(dict.fromkeys(left_out, ""))
            care = values.pop("care_type", None)
            if care is not None:
                profile, alone = care_profile(care) if care else ("", False)
                values["care_profile"] = profile
                if not has_lives_alone:
                    values["lives_alone"] = "是" if alone else ("否" if care else "")
            uncomputed = tuple(  # formula cells without a result, by internal column
                internal
                for name, internal in zip(table.header, header, strict=True)
                if internal and name in raw.uncomputed
            )
            yield replace(raw, values=values, overflow=False, uncomputed=uncomputed)

    return Table(out_header, rows(), table.header_line), local


# -- reasons -----------------------------------------------------------------------------

_WHAT = {
    "care profile": "照护类型（可填：独居、空巢、留守、失能、高龄、认知障碍、普通）",
    "sensor kind": "传感器类型（pir、door、water_meter、radar、smoke、gas、leak）",
    "mobility": "行动能力（可填：自理、需搀扶、轮椅、卧床）",
}
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), chinese)
    for pattern, chinese in (
        (r"^a value is required$", "必须填写"),
        (r"^missing column$", "缺少这一列"),
        (r"^column appears twice$", "这一列出现了两次"),
        (
            r"^'(.*)' is not a valid phone number$",
            "“\\1”不是有效的电话号码（11位手机号，或带区号的固定电话如 023-12345678）",
        ),
        (
            r"^'(.*)' is not a valid id .*$",
            "“\\1”不是有效的编号（只能用字母、数字、“_”和“-”，最多64个字符）",
        ),
        (r"^'(.*)' is not a valid WeCom userid.*$", "“\\1”不是有效的企业微信账号"),
        (r"^'(.*)' is not a yes/no value.*$", "“\\1”应填“是”或“否”"),
        (r"^'(.*)' is not a number$", "“\\1”不是数字"),
        (
            r"^(?:latitude|longitude) (\S+) is out of range \[(\S+), (\S+)\]$",
            "\\1 超出范围（\\2 至 \\3）",
        ),
        (r"^text longer than (\d+) characters$", "内容超过 \\1 个字"),
        (r"^'(.*)' is not a gender.*$", "“\\1”应填“男”或“女”"),
        (r"^not an 18-character ID card number$", "不是18位身份证号码"),
        (
            r"^the ID card number's check character does not match.*$",
            "身份证号码校验位不对，请核对是否填错",
        ),
        (r"^'(.*)' but the ID card number says '(.*)'$", "填的是“\\1”，但身份证号码显示为“\\2”"),
        (r"^duplicate \S+ '(.*)' \(first at .* line (\d+)\)$", "编号“\\1”重复（第 \\2 行已有）"),
        (
            r"^duplicate device id '(.*)' \(first at .* line (\d+)\)$",
            "设备编号“\\1”重复（第 \\2 行已有）",
        ),
        (r"^device id '(.*)' is listed twice in this row$", "设备编号“\\1”在本行出现了两次"),
        (
            r"^device '(.*)' is already registered to elder '(.*)'$",
            "设备“\\1”已登记在老人“\\2”名下",
        ),
        (r"^at least one family contact .*$", "至少要填写一位紧急联系人"),
        (r"^a key holder needs a phone number$", "填了钥匙保管人就要填钥匙保管人电话"),
        (
            r"^a key holder's phone needs the holder's name$",
            "填了钥匙保管人电话就要填钥匙保管人姓名",
        ),
        (r"^'(.*)' is not kind:device_id$", "“\\1”应写成“类型:设备编号”"),
        (
            r"^grid '(.*)' has \S+ '(.*)' at .* line (\d+), here '(.*)'$",
            "网格“\\1”在第 \\3 行填的是“\\2”，这里是“\\4”，应一致",
        ),
        (
            r"^grid worker '(.*)' has \S+ '(.*)' at .* line (\d+), here '(.*)'$",
            "网格员“\\1”在第 \\3 行填的是“\\2”，这里是“\\4”，应一致",
        ),
    )
)
_CHOICE_RE = re.compile(r"^'(.*)' is not a known (.+?) \(expected one of: .*\)$")


def reason(text: str) -> str:
    """A parser's English reason in Chinese (the English kept when no rule knows it)."""
    choice = _CHOICE_RE.match(text)
    if choice:
        return f"“{choice.group(1)}”不是可识别的{_WHAT.get(choice.group(2), choice.group(2))}"
    for pattern, chinese in _REASONS:
        if pattern.match(text):
            return pattern.sub(chinese, text)
    return f"内容有误（{text}）"
