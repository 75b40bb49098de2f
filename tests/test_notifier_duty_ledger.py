"""Policies, rosters and channel preferences imported into a real PostgreSQL database,
used by the running notifier, and `carewatch notifier check` (also on the demo street)."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from carewatch.settings import Settings
from harness.services import await_until
from notifier import targets
from notifier.check import _Reach, cli_check, load_snapshot, run_check
from notifier.policies import TargetKind
from notifier.policy_ledger import import_files
from registry import importer
from registry.ledger_format import write_csv
from simulators.demo import DISTRICT
from simulators.street import generate_street, write_ledger
from tests.fake_provider_server import running_fake_providers
from tests.support.notifier import (
    DUTY_OFFICER_ID,
    ELDER_ID,
    FAMILY_1_PHONE,
    FAMILY_2_PHONE,
    FAR_STAFFED,
    GRID_WORKER_ID,
    change,
    insert_alert,
    notifier_settings,
    publish_changes,
    query,
    running_notifier,
    seed_registry,
)

ROSTER_KINDS = ("shifts", "leaves", "channels")
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
SUBSTITUTE_ID = "GW2"
LEAVE_FOREVER = {"first_day": "2000-01-01", "last_day": "2099-12-31"}


def _add_substitute(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO grids (id, name, district, street) VALUES"
            " ('G2', '较场口网格', '渝中区', '解放碑街道')"
        )
        conn.execute(
            "INSERT INTO grid_workers (id, name, phone, wecom_userid, grid_id)"
            " VALUES (%s, '孙七', '13800000011', 'sunqi', 'G2')",
            (SUBSTITUTE_ID,),
        )


def _policies(tmp: Path, rows: list[dict[str, str]]) -> Path:
    columns = ["district", "care_profile", "severity", "step", "targets", "channels", "wait_s"]
    return write_csv(tmp / "policies.csv", columns, rows)


def _leave(tmp: Path, substitute: str = "") -> Path:
    return write_csv(
        tmp / "leaves.csv",
        ["member_kind", "member_id", "first_day", "last_day", "substitute_id"],
        [{"member_kind": "grid_worker", "member_id": GRID_WORKER_ID, **LEAVE_FOREVER,
          "substitute_id": substitute}],
    )  # fmt: skip


def test_import_is_all_or_nothing_and_checks_the_registry(db_dsn: str, tmp_path: Path) -> None:
    seed_registry(db_dsn)
    good = _policies(tmp_path, [
        {"district": "渝中区", "severity": "critical", "step": "1", "targets": "grid_worker"},
        {"district": "渝中区", "severity": "critical", "step": "2", "targets": "duty_officer",
         "channels": "sms;voice", "wait_s": "60"},
    ])  # fmt: skip
    bad_leave = _leave(tmp_path, substitute="NOBODY")
    result = import_files(db_dsn, [good, bad_leave], ("policies", "shifts", "leaves"))
    assert not result.ok
    assert [(e.line, e.field) for e in result.errors] == [(2, "substitute_id")]
    assert "no grid worker 'NOBODY' in the registry" in str(result)
    assert query(db_dsn, "SELECT count(*) FROM escalation_policy_steps") == [(0,)]
    # a policies table is refused by the rosters command, a shifts table by this one
    assert not import_files(db_dsn, [good], ROSTER_KINDS).ok

    result = import_files(db_dsn, [good], ("policies",))
    assert result.ok, result.errors
    assert query(
        db_dsn, "SELECT district, severity, step, targets, channels, wait_s"
        " FROM escalation_policy_steps ORDER BY step"
    ) == [
        ("渝中区", "critical", 1, ["grid_worker"], ["sms", "wecom"], None),
        ("渝中区", "critical", 2, ["duty_officer"], ["sms", "voice"], 60.0),
    ]  # fmt: skip
    # a Chinese file with an unknown district: Chinese errors, the stored policy stays
    zh = write_csv(
        tmp_path / "策略.csv",
        ["区县", "级别", "步骤", "通知对象"],
        [{"区县": "江北区", "级别": "紧急", "步骤": "1", "通知对象": "网格员"}],
    )
    result = import_files(db_dsn, [zh], ("policies",))
    assert [str(e) for e in result.errors] == [
        f"{zh}：第 2 行，区县（A列）：登记信息中没有区县“江北区”"
    ]
    assert "未导入，没有写入任何数据" in str(result)
    assert query(db_dsn, "SELECT count(*) FROM escalation_policy_steps") == [(2,)]


async def _opened(s: Settings, kind: str = "sos") -> str:
    alert_id = insert_alert(s.database_url, kind=kind)
    await publish_changes(s, change(alert_id, kind=kind))
    return alert_id


def _alert_rows(dsn: str, alert_id: str) -> set[tuple[int, str, str, str]]:
    rows = query(
        dsn,
        "SELECT step, recipient_kind, recipient_id, channel FROM notifications"
        " WHERE alert_id = %s AND purpose = 'alert'",
        alert_id,
    )
    return {(r[0], r[1], r[2], r[3]) for r in rows}


async def test_empty_steps_are_skipped_and_a_substitute_stands_in(
    settings: Settings, tmp_path: Path
) -> None:
    """Step 1 has no targets and step 2 reaches the grid worker's substitute: both happen
    at once, though every step's wait is an hour. Without a substitute the grid worker's
    step reaches nobody and is skipped too."""
    dsn = settings.database_url
    seed_registry(dsn)
    _add_substitute(dsn)
    policy = _policies(tmp_path, [
        {"district": "渝中区", "severity": "critical", "step": "1", "targets": "", "wait_s": "3600"},
        {"district": "渝中区", "severity": "critical", "step": "2", "targets": "grid_worker",
         "wait_s": "3600"},
        {"district": "渝中区", "severity": "critical", "step": "3", "targets": "duty_officer"},
    ])  # fmt: skip
    assert import_files(dsn, [policy, _leave(tmp_path, SUBSTITUTE_ID)], ("policies", "leaves")).ok
    s = notifier_settings(settings, escalation_wait_s=3600.0)
    async with running_fake_providers(s) as fake, running_notifier(fake.settings):
        first = await _opened(fake.settings)

        async def reached(alert_id: str) -> bool:
            return bool(_alert_rows(dsn, alert_id))

        await await_until(lambda: reached(first), 10, "the substitute's step")
        assert _alert_rows(dsn, first) == {
            (1, "grid_worker", SUBSTITUTE_ID, "sms"),
            (1, "grid_worker", SUBSTITUTE_ID, "wecom"),
        }
        assert query(dsn, "SELECT policy, step FROM escalations WHERE alert_id = %s", first) == [
            ("critical@渝中区/*", 1)
        ]
        skipped = query(
            dsn,
            "SELECT details->>'step' FROM alert_events WHERE alert_id = %s"
            " AND action = 'escalation_step_skipped'",
            first,
        )
        assert skipped == [("0",)]

        # the leave names nobody now: the grid worker's step is skipped as well
        assert import_files(dsn, [_leave(tmp_path)], ROSTER_KINDS).ok
        second = await _opened(fake.settings, "fall")
        await await_until(lambda: reached(second), 10, "the duty officer's step")
        assert _alert_rows(dsn, second) == {
            (2, "duty_officer", DUTY_OFFICER_ID, "sms"),
            (2, "duty_officer", DUTY_OFFICER_ID, "wecom"),
        }


def _check_args(start: str, days: int = 7) -> argparse.Namespace:
    return argparse.Namespace(json=True, start=start, days=days)


def test_check_finds_a_grid_with_no_grid_worker_on_duty_and_no_substitute(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    assert cli_check(settings, _check_args("2026-12-07")) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True

    shifts = write_csv(
        tmp_path / "值班表.csv",
        ["类型", "编号", "星期", "开始时间", "结束时间"],
        [
            {"类型": "网格员", "编号": GRID_WORKER_ID, "星期": "工作日", "开始时间": "08:00",
             "结束时间": "20:00"},
            {"类型": "服务站", "编号": FAR_STAFFED, "星期": "工作日", "开始时间": "08:00",
             "结束时间": "20:00"},
        ],
    )  # fmt: skip
    # the family take calls only, and a warning calls nobody
    channels = write_csv(
        tmp_path / "渠道.csv",
        ["电话", "接收渠道"],
        [
            {"电话": FAMILY_1_PHONE, "接收渠道": "语音"},
            {"电话": FAMILY_2_PHONE, "接收渠道": "语音"},
        ],
    )
    assert import_files(dsn, [shifts, channels], ROSTER_KINDS).ok
    assert cli_check(settings, _check_args("2026-12-07")) == 1
    found = json.loads(capsys.readouterr().out)
    assert [g["grid_id"] for g in found["grids_without_cover"]] == ["G1"]
    nights = found["grids_without_cover"][0]["windows"]
    assert nights[0] == {"start": "2026-12-07T00:00+08:00", "end": "2026-12-07T08:00+08:00"}
    assert nights[-1] == {"start": "2026-12-11T20:00+08:00", "end": "2026-12-14T00:00+08:00"}
    assert [(u["elder_id"], u["severity"]) for u in found["unreached"]] == [("E1", "warning")]
    assert found["unreached"][0]["windows"] == nights  # the station keeps the same hours

    # human-readable
    assert cli_check(settings, argparse.Namespace(json=False, start="2026-12-07", days=1)) == 1
    text = capsys.readouterr().out
    assert "grid G1: 2026-12-07T00:00+08:00 → 2026-12-07T08:00+08:00" in text
    assert "UNREACHED: 1 elder/severity pair(s) reach nobody" in text


async def test_check_passes_on_the_demo_street_and_its_example_rosters(
    settings: Settings, tmp_path: Path
) -> None:
    """The demo street as `./run demo` builds it reaches someone for every elder; with the
    example policies and rosters of docs/examples the only gaps are the known ones: the
    grid worker's nights, Sunday and the day of leave, which family and stations cover."""
    dsn = settings.database_url
    plan = Path(str(resources.files("simulators") / "data" / "chongqing_facility_plan.csv"))
    street = generate_street(plan, DISTRICT, 60, 1)
    files = write_ledger(street, tmp_path / "ledger")
    assert importer.import_files(dsn, files).ok
    week = date(2026, 12, 21)  # a Monday
    plain = await run_check(settings, week, 7)
    assert plain.ok and plain.grids_without_cover == [] and plain.elders_checked == 60

    examples = sorted(EXAMPLES.glob("*.csv"))
    assert import_files(dsn, [p for p in examples if "polic" in p.name], ("policies",)).ok
    assert import_files(dsn, [p for p in examples if "polic" not in p.name], ROSTER_KINDS).ok
    result = await run_check(settings, week, 7)
    assert result.unreached == []
    assert [g.grid_id for g in result.grids_without_cover] == [street.elders[0].grid_id]
    assert [(w.start[5:16], w.end[5:16]) for w in result.grids_without_cover[0].windows] == [
        ("12-21T00:00", "12-21T08:00"),
        ("12-21T20:00", "12-22T08:00"),
        ("12-22T20:00", "12-24T08:00"),  # Wednesday 23rd: on leave, nobody named
        ("12-24T20:00", "12-25T08:00"),
        ("12-25T20:00", "12-26T09:00"),
        ("12-26T17:00", "12-28T00:00"),
    ]


async def test_resolve_applies_rosters_given_a_date_and_keeps_old_hours_given_a_time(
    db_dsn: str, tmp_path: Path
) -> None:
    """The station on leave passes on to its substitute in another district; the grid
    worker on leave to theirs, shown as 代班网格员. A time of day alone: no rosters."""
    seed_registry(db_dsn)
    _add_substitute(db_dsn)
    with psycopg.connect(db_dsn) as conn:
        conn.execute(
            "INSERT INTO stations (id, name, kind, district, lat, lon, phone, staffed,"
            " duty_start, duty_end) VALUES ('ST_JB', '江北养老服务中心', 'street_centre',"
            " '江北区', 29.60, 106.55, '023-67701234', true, '00:00', '00:00')"
        )
    leaves = write_csv(
        tmp_path / "leaves.csv",
        ["member_kind", "member_id", "first_day", "last_day", "substitute_id"],
        [
            {"member_kind": "station", "member_id": FAR_STAFFED, **LEAVE_FOREVER,
             "substitute_id": "ST_JB"},
            {"member_kind": "grid_worker", "member_id": GRID_WORKER_ID, **LEAVE_FOREVER,
             "substitute_id": SUBSTITUTE_ID},
        ],
    )  # fmt: skip
    assert import_files(db_dsn, [leaves], ROSTER_KINDS).ok
    kinds: tuple[TargetKind, ...] = ("grid_worker", "nearest_station")
    async with await psycopg.AsyncConnection.connect(db_dsn) as conn:
        elder = await targets.load_elder(conn, ELDER_ID)
        assert elder is not None
        when = datetime(2026, 12, 9, 3, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
        found = await targets.resolve(conn, elder, kinds, when)
        assert [(r.kind, r.id, r.role) for r in found] == [
            ("grid_worker", SUBSTITUTE_ID, "代班网格员"),
            ("station", "ST_JB", "养老服务中心"),
        ]
        old = await targets.resolve(conn, elder, kinds, when.time())
        assert [(r.kind, r.id) for r in old] == [
            ("grid_worker", GRID_WORKER_ID),
            ("station", FAR_STAFFED),
        ]
        # `carewatch notifier check` finds the same recipients over what it loads
        reach = _Reach(await load_snapshot(conn, Settings(database_url=db_dsn)))
        assert [r for kind in kinds for r in reach.targets(elder, kind, when)] == found
