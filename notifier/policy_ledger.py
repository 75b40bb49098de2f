"""Import escalation policies, duty rosters and channel preferences from ledger files.

The administrator keeps them as spreadsheets (CSV or XLSX, read by registry.reader),
with English or Chinese headers; `carewatch notifier policies import FILE...` and
`carewatch notifier rosters import FILE...` validate every row of every file first and,
only when all are valid, replace the stored tables the files hold in one transaction:
all or nothing, every error reported with its file, line, column and reason (in
Chinese for a Chinese-header file). docs/policies.md describes the formats.

| table | key columns | Chinese header |
|---|---|---|
| policies | severity, step, targets | 级别, 步骤, 通知对象 |
| shifts | member_kind, member_id, weekdays | 类型, 编号, 星期 |
| leaves | member_kind, member_id, first_day | 类型, 编号, 请假开始 |
| channels | phone, channels | 电话, 接收渠道 |
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, TypeVar, cast

import psycopg
from psycopg import sql as pgsql
from psycopg.rows import TupleRow

from carewatch.messages import Severity
from carewatch.settings import Settings
from notifier.policies import (
    CHANNEL_NAMES,
    SEVERITIES,
    TARGET_KINDS,
    ChannelName,
    ScopedPolicy,
    Step,
    TargetKind,
)
from notifier.rosters import MEMBER_KINDS, ChannelPreference, Leave, MemberKind, Shift
from registry import chinese as registry_chinese
from registry.fields import (
    FieldError,
    parse_bool,
    parse_float,
    parse_id,
    parse_phone,
    parse_text,
    parse_time,
)
from registry.ledger import RowError
from registry.reader import RawRow, TableError, open_table

log = logging.getLogger(__name__)

T = TypeVar("T")
TableKind = Literal["policies", "shifts", "leaves", "channels"]
_IMPORT_LOCK_KEY = 0x0CA2E_9011
MAX_PRINTED_ERRORS = 50

# (English column, Chinese header, required) per table; the first column named in
# KEY_COLUMNS tells the tables apart.
COLUMNS: dict[TableKind, tuple[tuple[str, str, bool], ...]] = {
    "policies": (
        ("district", "区县", False),
        ("care_profile", "照护类型", False),
        ("severity", "级别", True),
        ("step", "步骤", True),
        ("targets", "通知对象", True),
        ("channels", "渠道", False),
        ("wait_s", "等待秒数", False),
    ),
    "shifts": (
        ("member_kind", "类型", True),
        ("member_id", "编号", True),
        ("weekdays", "星期", True),
        ("start", "开始时间", True),
        ("end", "结束时间", True),
    ),
    "leaves": (
        ("member_kind", "类型", True),
        ("member_id", "编号", True),
        ("first_day", "请假开始", True),
        ("last_day", "请假结束", True),
        ("substitute_id", "替班人编号", False),
    ),
    "channels": (
        ("phone", "电话", True),
        ("channels", "接收渠道", True),
        ("voice_for_all", "语音用于所有级别", False),
    ),
}
KEY_COLUMNS: dict[TableKind, str] = {
    "policies": "severity",
    "shifts": "weekdays",
    "leaves": "first_day",
    "channels": "phone",
}
FOR_COMMAND: dict[str, tuple[TableKind, ...]] = {
    "policies": ("policies",),
    "rosters": ("shifts", "leaves", "channels"),
}

# Values people write in Chinese, and the English ones.
SEVERITY_WORDS: dict[str, Severity] = {"紧急": "critical", "警告": "warning", "提示": "info"}
TARGET_WORDS: dict[str, TargetKind] = {
    "网格员": "grid_worker",
    "第一联系人": "family_first",
    "首位家属": "family_first",
    "全部家属": "family_all",
    "所有家属": "family_all",
    "最近服务站": "nearest_station",
    "服务站": "nearest_station",
    "区值班员": "duty_officer",
    "值班员": "duty_officer",
}
CHANNEL_WORDS: dict[str, ChannelName] = {"短信": "sms", "企业微信": "wecom", "语音": "voice"}
MEMBER_WORDS: dict[str, MemberKind] = {"网格员": "grid_worker", "服务站": "station"}
_WEEKDAY_DIGITS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "日": 7, "天": 7}
_WEEKDAY_NAMES = {"每天": "1-7", "全天": "1-7", "工作日": "1-5", "周末": "6-7"}
_LIST_SPLIT = re.compile(r"[、,，;；/\s+]+")


# --- cell parsers (English reasons; Chinese by _reason_zh) --------------------------------


def _words(value: str, words: dict[str, T], allowed: Sequence[str], what: str) -> tuple[T, ...]:
    out: list[T] = []
    for word in (w for w in _LIST_SPLIT.split(value.strip()) if w):
        found = words.get(word) or (cast(T, word.lower()) if word.lower() in allowed else None)
        if found is None:
            raise FieldError(
                f"'{word}' is not a known {what} (expected one of: {', '.join(allowed)})"
            )
        if found not in out:
            out.append(found)
    return tuple(out)


def parse_severity(value: str) -> Severity:
    return _words(value, SEVERITY_WORDS, SEVERITIES, "severity")[0]


def parse_targets(value: str) -> tuple[TargetKind, ...]:
    return _words(value, TARGET_WORDS, TARGET_KINDS, "target")


def parse_channels(value: str) -> tuple[ChannelName, ...]:
    found = _words(value, CHANNEL_WORDS, CHANNEL_NAMES, "channel")
    if not found:
        raise FieldError("no channel given")
    return found


def parse_member_kind(value: str) -> MemberKind:
    return _words(value, MEMBER_WORDS, MEMBER_KINDS, "member kind")[0]


def parse_profile(value: str) -> str:
    """A care profile id ('disabled') or its Chinese name (失能, as in the elder ledger)."""
    return parse_id(registry_chinese.CARE_TYPES.get(value.strip(), value.strip()))


def parse_step(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 20:
        raise FieldError(f"'{value}' is not a step number 1-20")
    return int(value)


def parse_wait(value: str) -> float:
    """Seconds, 0 to a day. The reasons are registry.fields.parse_float's ("wait ... is
    out of range [0, 86400]", which _ZH_REASONS below translates)."""
    return parse_float(value, "wait", 0, 86_400)


def parse_weekdays(value: str) -> frozenset[int]:
    """'1-5', '1,3,5', '一至五', '周一至周五', '每天', '工作日', '周末' (1 = Monday)."""
    text = _WEEKDAY_NAMES.get(value.strip(), value.strip())
    text = text.replace("星期", "").replace("周", "")
    for zh, digit in _WEEKDAY_DIGITS.items():
        text = text.replace(zh, str(digit))
    text = re.sub(r"\s*(?:至|到|~|～|—|－)\s*", "-", text)
    days: set[int] = set()
    for part in (p for p in _LIST_SPLIT.split(text) if p):
        first, dash, last = part.partition("-")
        if not (first.isdigit() and (not dash or last.isdigit())):
            raise FieldError(f"'{value}' is not a list of weekdays (e.g. 1-5, 6,7, 周一至周五)")
        lo, hi = int(first), int(last) if dash else int(first)
        if not (1 <= lo <= 7 and 1 <= hi <= 7 and lo <= hi):
            raise FieldError(f"'{value}' is not a list of weekdays (e.g. 1-5, 6,7, 周一至周五)")
        days.update(range(lo, hi + 1))
    if not days:
        raise FieldError(f"'{value}' is not a list of weekdays (e.g. 1-5, 6,7, 周一至周五)")
    return frozenset(days)


def parse_day(value: str) -> date:
    text = value.strip()[:10].replace("/", "-").replace(".", "-")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FieldError(f"'{value}' is not a date YYYY-MM-DD") from None


_ZH_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), zh)
    for p, zh in (
        (r"^'(.*)' is not a known severity .*$", "“\\1”不是可识别的级别（紧急、警告、提示）"),
        (
            r"^'(.*)' is not a known target .*$",
            "“\\1”不是可识别的通知对象（网格员、第一联系人、全部家属、最近服务站、区值班员）",
        ),
        (r"^'(.*)' is not a known channel .*$", "“\\1”不是可识别的渠道（短信、企业微信、语音）"),
        (r"^'(.*)' is not a known member kind .*$", "“\\1”应填“网格员”或“服务站”"),
        (r"^no channel given$", "至少填写一个渠道"),
        (r"^'(.*)' is not a step number 1-20$", "“\\1”不是1至20的步骤序号"),
        (r"^wait (\S+) is out of range .*$", "等待时间 \\1 超出范围（0 至 86400 秒）"),
        (
            r"^'(.*)' is not a list of weekdays .*$",
            "“\\1”不是有效的星期（如 1-5、6,7、周一至周五）",
        ),
        (r"^'(.*)' is not a date YYYY-MM-DD$", "“\\1”不是日期（应写成 2026-12-01）"),
        (r"^'(.*)' is not a time of day HH:MM$", "“\\1”不是时间（应写成 08:00）"),
        (r"^the leave ends before it starts$", "请假结束日期早于开始日期"),
        (
            r"^steps of (.*) are not numbered 1, 2, 3 \.\.\. \(missing (\d+)\)$",
            "\\1 的步骤序号不连续（缺少第 \\2 步）",
        ),
        (
            r"^duplicate step (\d+) of (.*) \(first at line (\d+)\)$",
            "\\2 的第 \\1 步重复（第 \\3 行已有）",
        ),
        (r"^duplicate phone '(.*)' \(first at line (\d+)\)$", "电话“\\1”重复（第 \\2 行已有）"),
        (r"^no grid worker '(.*)' in the registry$", "登记信息中没有网格员“\\1”"),
        (r"^no station '(.*)' in the registry$", "登记信息中没有服务站“\\1”"),
        (r"^no district '(.*)' in the registry$", "登记信息中没有区县“\\1”"),
        (r"^no care profile '(.*)'.*$", "没有照护类型“\\1”"),
        (r"^a member cannot stand in for itself$", "替班人不能是本人"),
        (r"^unknown table: .*$", "无法识别的表格：表头应包含 级别、星期、请假开始 或 电话 之一"),
        (
            r"^(?:a|an) policies table cannot be imported here.*$",
            "这是通知策略表，请用 carewatch notifier policies import 导入",
        ),
        (
            r"^(?:a|an) (\S+) table cannot be imported here.*$",
            "这是值班、请假或接收渠道表，请用 carewatch notifier rosters import 导入",
        ),
        (r"^unknown column$", "无法识别的列"),
    )
)


def _reason_zh(reason: str) -> str:
    for pattern, zh in _ZH_REASONS:
        if pattern.match(reason):
            return pattern.sub(zh, reason)
    return registry_chinese.reason(reason)


# --- parsed files -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class At:
    file: str
    line: int


@dataclass
class ParsedTables:
    policies: list[tuple[At, ScopedPolicy, int, Step]] = field(default_factory=list)  # step no.
    shifts: list[tuple[At, Shift]] = field(default_factory=list)
    leaves: list[tuple[At, Leave]] = field(default_factory=list)
    channels: list[tuple[At, ChannelPreference]] = field(default_factory=list)
    kinds: set[TableKind] = field(default_factory=set)  # the tables the files hold
    errors: list[RowError] = field(default_factory=list)
    rows_read: int = 0
    # file -> its Chinese column names (internal -> '星期（C列）'); absent: English file
    chinese: dict[str, dict[str, str]] = field(default_factory=dict)

    def error(self, at: At, column: str | None, reason: str) -> None:
        names = self.chinese.get(at.file)
        if names is None:
            self.errors.append(RowError(at.file, at.line, column, reason))
            return
        where = names.get(column, column) if column else None
        self.errors.append(RowError(at.file, at.line, where, _reason_zh(reason), chinese=True))


class _Row:
    def __init__(self, out: ParsedTables, at: At, raw: RawRow) -> None:
        self.out, self.at, self.raw, self.ok = out, at, raw, True
        if raw.overflow:
            self.fail(None, "cells beyond the last header column (a stray comma?)")

    def fail(self, column: str | None, reason: str) -> None:
        self.ok = False
        self.out.error(self.at, column, reason)

    def get(self, column: str, parse: Callable[[str], T], required: bool = True) -> T | None:
        text = self.raw.values.get(column, "")
        if not text:
            if required:
                self.fail(column, "a value is required")
            return None
        try:
            return parse(text)
        except FieldError as exc:
            self.fail(column, str(exc))
            return None


def _header(
    file: str, header: list[str], out: ParsedTables, line: int = 1
) -> tuple[TableKind, list[str]] | None:
    """The table's kind and its header in English columns; None (and errors) when unknown."""
    zh_to_en = {zh: en for cols in COLUMNS.values() for en, zh, _ in cols}
    zh = sum(1 for h in header if h in zh_to_en)
    if zh or registry_chinese.has_chinese_text(header):  # Chinese file: Chinese errors
        out.chinese[file] = {}
        english = []
        for index, h in enumerate(header):
            en = zh_to_en.get(h, h)
            out.chinese[file].setdefault(en, f"{h}（{registry_chinese.column_letter(index)}列）")
            english.append(en)
        header = english
    kind = next((k for k, key in KEY_COLUMNS.items() if key in header), None)
    if kind is None:
        keys = ", ".join(KEY_COLUMNS.values())
        out.error(At(file, 1), None, f"unknown table: the header needs one of {keys}")
        return None
    known = {en for en, _, _ in COLUMNS[kind]}
    problems = [(en, "missing column") for en, _, req in COLUMNS[kind] if req and en not in header]
    problems += [(h, "unknown column") for h in header if h and h not in known]
    problems += [(h, "column appears twice") for h in set(header) if h and header.count(h) > 1]
    for column, reason in problems:
        out.error(At(file, line), column, reason)
    return None if problems else (kind, header)


def _is_header(cells: list[str]) -> bool:
    """A row naming a table's key column, in English or Chinese: rows above it are the
    title rows offices put over a table (七星岗街道网格员值班表)."""
    zh_keys = {zh for kind, cols in COLUMNS.items() for en, zh, _ in cols
               if en == KEY_COLUMNS[kind]}  # fmt: skip
    return any(c in zh_keys or c in KEY_COLUMNS.values() for c in cells)


def parse_files(files: Sequence[Path], allowed: Sequence[TableKind]) -> ParsedTables:
    """Read and validate every file (no database); every problem is in `errors`."""
    out = ParsedTables()
    for path in files:
        name = str(path)
        try:
            table = open_table(path, is_header=_is_header)
        except TableError as exc:
            out.errors.append(RowError(name, 0, None, str(exc)))
            continue
        found = _header(name, table.header, out, table.header_line)
        if found is None:
            continue
        kind, header = found
        if kind not in allowed:
            out.error(
                At(name, table.header_line),
                None,
                f"a {kind} table cannot be imported here (this command takes"
                f" {', '.join(allowed)}): import it with `carewatch notifier"
                f" {'policies' if kind == 'policies' else 'rosters'} import`",
            )
            continue
        out.kinds.add(kind)
        renamed = dict(zip(table.header, header, strict=True))
        try:
            for raw in table.rows:
                values = {renamed[k]: v for k, v in raw.values.items() if renamed.get(k)}
                row = _Row(out, At(name, raw.line), RawRow(raw.line, values, raw.overflow))
                _PARSERS[kind](row)
                out.rows_read += 1
        except TableError as exc:
            out.errors.append(RowError(name, 0, None, str(exc)))
    _check_steps(out)
    return out


def _policy(row: _Row) -> None:
    district = row.get("district", lambda v: parse_text(v, 100), required=False)
    profile = row.get("care_profile", parse_profile, required=False)
    severity = row.get("severity", parse_severity)
    number = row.get("step", parse_step)
    targets = row.get("targets", parse_targets, required=False) or ()
    channels = row.get("channels", parse_channels, required=False) or ("sms", "wecom")
    wait_s = row.get("wait_s", parse_wait, required=False)
    if row.ok and severity is not None and number is not None:
        scope = ScopedPolicy(severity, district or None, profile or None, ())
        row.out.policies.append((row.at, scope, number, Step(targets, channels, wait_s)))


def _shift(row: _Row) -> None:
    kind = row.get("member_kind", parse_member_kind)
    member = row.get("member_id", parse_id)
    days = row.get("weekdays", parse_weekdays)
    start = row.get("start", parse_time)
    end = row.get("end", parse_time)
    if row.ok and kind and member and days and start is not None and end is not None:
        row.out.shifts.append((row.at, Shift(kind, member, days, start, end)))


def _leave(row: _Row) -> None:
    kind = row.get("member_kind", parse_member_kind)
    member = row.get("member_id", parse_id)
    first = row.get("first_day", parse_day)
    last = row.get("last_day", parse_day)
    substitute = row.get("substitute_id", parse_id, required=False)
    if first and last and last < first:
        row.fail("last_day", "the leave ends before it starts")
    if substitute and substitute == member:
        row.fail("substitute_id", "a member cannot stand in for itself")
    if row.ok and kind and member and first and last:
        row.out.leaves.append((row.at, Leave(kind, member, first, last, substitute)))


def _channel(row: _Row) -> None:
    phone = row.get("phone", parse_phone)
    channels = row.get("channels", parse_channels)
    voice_all = row.get("voice_for_all", parse_bool, required=False)
    if row.ok and phone and channels:
        first = next((at for at, p in row.out.channels if p.phone == phone), None)
        if first is not None:
            row.fail("phone", f"duplicate phone '{phone}' (first at line {first.line})")
            return
        pref = ChannelPreference(phone, frozenset(channels), bool(voice_all))
        row.out.channels.append((row.at, pref))


_PARSERS: dict[TableKind, Callable[[_Row], None]] = {
    "policies": _policy,
    "shifts": _shift,
    "leaves": _leave,
    "channels": _channel,
}


def _check_steps(out: ParsedTables) -> None:
    """Each policy's steps are numbered 1, 2, 3 ... once each."""
    seen: dict[str, dict[int, At]] = {}
    for at, scope, number, _ in out.policies:
        first = seen.setdefault(scope.name, {}).setdefault(number, at)
        if first != at:
            out.error(
                at, "step", f"duplicate step {number} of {scope.name} (first at line {first.line})"
            )
    for name, steps in seen.items():
        missing = next((n for n in range(1, max(steps) + 1) if n not in steps), None)
        if missing is not None:
            last = steps[max(steps)]
            out.error(
                last, "step", f"steps of {name} are not numbered 1, 2, 3 ... (missing {missing})"
            )


def policies_of(parsed: ParsedTables) -> list[ScopedPolicy]:
    """The parsed step rows as whole policies, steps in order."""
    grouped: dict[str, tuple[ScopedPolicy, dict[int, Step]]] = {}
    for _, scope, number, step in parsed.policies:
        grouped.setdefault(scope.name, (scope, {}))[1][number] = step
    return [
        ScopedPolicy(s.severity, s.district, s.care_profile, tuple(steps[n] for n in sorted(steps)))
        for s, steps in grouped.values()
    ]


# --- the import ---------------------------------------------------------------------------


def _known(conn: psycopg.Connection[TupleRow], query: str) -> set[str]:
    return {str(r[0]) for r in conn.execute(query)}


def _registry_errors(conn: psycopg.Connection[TupleRow], parsed: ParsedTables) -> None:
    """What only the database can tell: unknown districts, profiles, members."""
    districts = _known(
        conn,
        "SELECT district FROM grids UNION SELECT district FROM stations"
        " UNION SELECT district FROM duty_officers",
    )
    profiles = _known(conn, "SELECT id FROM care_profiles")
    for at, scope, _, _ in parsed.policies:
        if scope.district and scope.district not in districts:
            parsed.error(at, "district", f"no district '{scope.district}' in the registry")
        if scope.care_profile and scope.care_profile not in profiles:
            parsed.error(at, "care_profile", f"no care profile '{scope.care_profile}'")
    members: dict[MemberKind, set[str]] = {
        "grid_worker": _known(conn, "SELECT id FROM grid_workers"),
        "station": _known(conn, "SELECT id FROM stations"),
    }
    label = {"grid_worker": "grid worker", "station": "station"}
    refs = [(at, s.member_kind, s.member_id, "member_id") for at, s in parsed.shifts]
    refs += [(at, lv.member_kind, lv.member_id, "member_id") for at, lv in parsed.leaves]
    refs += [
        (at, lv.member_kind, lv.substitute_id, "substitute_id")
        for at, lv in parsed.leaves
        if lv.substitute_id
    ]
    for at, kind, member_id, column in refs:
        if member_id not in members[kind]:
            parsed.error(at, column, f"no {label[kind]} '{member_id}' in the registry")


# table kind -> (stored table, its columns)
_STORED: dict[TableKind, tuple[str, tuple[str, ...]]] = {
    "policies": (
        "escalation_policy_steps",
        ("district", "care_profile", "severity", "step", "targets", "channels", "wait_s"),
    ),
    "shifts": ("duty_shifts", ("member_kind", "member_id", "weekdays", "start_time", "end_time")),
    "leaves": (
        "duty_leaves",
        ("member_kind", "member_id", "first_day", "last_day", "substitute_id"),
    ),
    "channels": ("channel_preferences", ("phone", "channels", "voice_for_all")),
}


def _stored_rows(parsed: ParsedTables, kind: TableKind) -> list[tuple[object, ...]]:
    if kind == "policies":
        return [
            (p.district or "", p.care_profile or "", p.severity, n, list(s.targets),
             list(s.channels), s.wait_s)
            for p in policies_of(parsed)
            for n, s in enumerate(p.steps, start=1)
        ]  # fmt: skip
    if kind == "shifts":
        return [
            (s.member_kind, s.member_id, sorted(s.weekdays), s.start, s.end)
            for _, s in parsed.shifts
        ]
    if kind == "leaves":
        return [
            (lv.member_kind, lv.member_id, lv.first_day, lv.last_day, lv.substitute_id)
            for _, lv in parsed.leaves
        ]
    return [(p.phone, sorted(p.channels), p.voice_for_all) for _, p in parsed.channels]


def _write(conn: psycopg.Connection[TupleRow], parsed: ParsedTables) -> dict[str, int]:
    """Replace each stored table the files hold; the others are left alone."""
    counts: dict[str, int] = {}
    for kind in sorted(parsed.kinds):
        table, columns = _STORED[kind]
        rows = _stored_rows(parsed, kind)
        conn.execute(pgsql.SQL("DELETE FROM {}").format(pgsql.Identifier(table)))
        insert = pgsql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            pgsql.Identifier(table),
            pgsql.SQL(", ").join(map(pgsql.Identifier, columns)),
            pgsql.SQL(", ").join(pgsql.Placeholder() * len(columns)),
        )
        with conn.cursor() as cur:
            cur.executemany(insert, rows)
        counts[table] = len(rows)
    return counts


@dataclass
class ImportResult:
    files: list[str]
    rows_read: int = 0
    errors: list[RowError] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        if not self.ok:
            n = len(self.errors)
            lines = [f"rejected, nothing was written: {n} error(s)"]
            if any(e.chinese for e in self.errors):
                lines.append(f"未导入，没有写入任何数据：共 {n} 处错误")
            lines += [f"  {e}" for e in self.errors[:MAX_PRINTED_ERRORS]]
            if n > MAX_PRINTED_ERRORS:
                lines.append(f"  ... and {n - MAX_PRINTED_ERRORS} more")
            return "\n".join(lines)
        lines = [f"imported {self.rows_read} row(s) from {len(self.files)} file(s)"]
        return "\n".join(lines + [f"  {t}: {n} row(s)" for t, n in self.counts.items()])


def import_files(dsn: str, files: Sequence[Path], allowed: Sequence[TableKind]) -> ImportResult:
    """Validate every file and, only if every row is valid, replace the tables they hold."""
    result = ImportResult([str(f) for f in files])
    parsed = parse_files(files, allowed)
    result.rows_read = parsed.rows_read
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_IMPORT_LOCK_KEY])
        if not parsed.errors:
            _registry_errors(conn, parsed)
        result.errors = parsed.errors
        if parsed.errors:
            log.warning(
                "duty ledger rejected", extra={"files": result.files, "errors": len(parsed.errors)}
            )
            return result
        result.counts = _write(conn, parsed)
    log.info("duty ledger imported", extra={"files": result.files, "rows": result.rows_read})
    return result


def cli_import(settings: Settings, what: str, files: list[Path]) -> int:
    """`carewatch notifier policies|rosters import FILE...`: 0 = imported."""
    result = import_files(settings.database_url, files, FOR_COMMAND[what])
    print(result)
    return 0 if result.ok else 1
