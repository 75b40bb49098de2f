"""An administrator's one-shot commands against a database that is missing, not
migrated or empty: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import openpyxl
import psycopg

from harness.pipeline import CAREWATCH
from notifier.policy_ledger import import_files
from tests.support.notifier import GRID_WORKER_ID, seed_registry


def _carewatch(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREWATCH_")}
    env["CAREWATCH_DATABASE_URL"] = dsn
    return subprocess.run(
        [CAREWATCH, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _complaints(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the JSON log lines."""
    return [line for line in done.stderr.splitlines() if not line.startswith("{")]


def test_missing_database_is_one_line_not_a_traceback(db_dsn: str, tmp_path: Path) -> None:
    missing = psycopg.conninfo.make_conninfo(
        db_dsn, dbname=psycopg.conninfo.conninfo_to_dict(db_dsn)["dbname"] + "_missing"
    )
    ledger = tmp_path / "台账.csv"
    ledger.write_text("老人编号,姓名\n", encoding="utf-8")
    for args in (("notifier", "check"), ("registry", "import", str(ledger))):
        done = _carewatch(missing, *args)
        assert done.returncode == 1, done
        lines = _complaints(done)
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith("cannot reach the database (CAREWATCH_DATABASE_URL):")
        assert "_missing" in lines[0]


def test_unmigrated_database_names_the_migrate_command(db_dsn: str) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    done = _carewatch(db_dsn, "notifier", "check")
    assert done.returncode == 1
    assert _complaints(done) == [
        'the database is not migrated (relation "elders" does not exist):'
        " run `carewatch db migrate` first"
    ], done.stderr


def test_check_on_an_empty_ledger_does_not_say_ok(db_dsn: str) -> None:
    done = _carewatch(db_dsn, "notifier", "check")
    assert done.returncode == 1
    assert "ok:" not in done.stdout
    assert "nothing checked: the ledger has no elders" in done.stdout

    done = _carewatch(db_dsn, "notifier", "check", "--json")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert (result["elders_checked"], result["ok"]) == (0, False)


EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def test_a_table_given_to_the_wrong_import_names_the_right_command(
    db_dsn: str, tmp_path: Path
) -> None:
    done = _carewatch(db_dsn, "notifier", "policies", "import", str(EXAMPLES / "shifts_zh.csv"))
    assert done.returncode == 1
    assert "这是值班、请假或接收渠道表，请用 carewatch notifier rosters import 导入" in done.stdout

    done = _carewatch(db_dsn, "notifier", "rosters", "import", str(EXAMPLES / "policies_zh.csv"))
    assert done.returncode == 1
    assert "这是通知策略表，请用 carewatch notifier policies import 导入" in done.stdout

    # the elder ledger template (its title row above the header) is a Chinese file too
    template = tmp_path / "台账.csv"
    assert _carewatch(db_dsn, "registry", "template", "--out", str(template)).returncode == 0
    done = _carewatch(db_dsn, "notifier", "rosters", "import", str(template))
    assert done.returncode == 1
    assert "第 1 行：无法识别的表格" in done.stdout
    assert "unknown table" not in done.stdout
    with psycopg.connect(db_dsn) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM elders), (SELECT count(*) FROM escalation_policy_steps)"
        ).fetchone()
    assert counts == (0, 0)


def test_template_keeps_an_existing_file_unless_forced(db_dsn: str, tmp_path: Path) -> None:
    filled = tmp_path / "老年人信息台账模板.xlsx"
    filled.write_bytes(b"the office's filled-in ledger")
    done = _carewatch(db_dsn, "registry", "template", "--out", str(filled))
    assert done.returncode == 1
    assert _complaints(done) == [
        f"{filled} already exists (a filled-in ledger?): not overwritten;"
        " choose another --out or add --force"
    ]
    assert filled.read_bytes() == b"the office's filled-in ledger"
    done = _carewatch(db_dsn, "registry", "template", "--out", str(filled), "--force")
    assert done.returncode == 0, done.stderr
    assert filled.read_bytes().startswith(b"PK")  # an XLSX (zip) now


def test_roster_xlsx_with_a_title_row_imports(db_dsn: str, tmp_path: Path) -> None:
    seed_registry(db_dsn)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["七星岗街道网格员值班表（2026年12月）"])
    sheet.append(["类型", "编号", "星期", "开始时间", "结束时间"])
    sheet.append(["网格员", GRID_WORKER_ID, "周一至周五", "08:00", "20:00"])
    sheet.append(["网格员", GRID_WORKER_ID, "周六", "09:00", "17:00x"])
    path = tmp_path / "值班表.xlsx"
    book.save(path)

    report = import_files(db_dsn, [path], ("shifts", "leaves", "channels"))
    assert [str(e) for e in report.errors] == [
        f"{path}：第 4 行，结束时间（E列）：“17:00x”不是时间（应写成 08:00）"
    ]  # line numbers count the title row

    sheet.delete_rows(4)
    book.save(path)
    report = import_files(db_dsn, [path], ("shifts", "leaves", "channels"))
    assert report.ok, [str(e) for e in report.errors]
    with psycopg.connect(db_dsn) as conn:
        shifts = conn.execute("SELECT count(*) FROM duty_shifts").fetchone()
    assert shifts == (1,)


def test_check_rejects_bad_arguments_on_stderr(db_dsn: str) -> None:
    done = _carewatch(db_dsn, "notifier", "check", "--from", "2026-13-01")
    assert (done.returncode, done.stdout) == (2, "")
    assert _complaints(done) == ["--from: '2026-13-01' is not a date YYYY-MM-DD"]
    done = _carewatch(db_dsn, "notifier", "check", "--days", "0")
    assert (done.returncode, _complaints(done)) == (2, ["--days must be at least 1"])
