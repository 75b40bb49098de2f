"""Medical notes and care needs per elder (过敏史, 用药, 慢性病/病史, 行动能力, 钥匙保管人,
备注): imported from the office ledger's Chinese columns into a real PostgreSQL (all or
nothing, errors in Chinese), shown on the console's alert card and the elder endpoint
(phones masked by role), and on the ack page only to the person who acknowledged."""

from __future__ import annotations

import csv
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest

from carewatch.settings import Settings
from harness.services import Proc, free_port
from notifier.ack_links import sign
from registry.chinese import column_letter
from registry.importer import format_report, import_files
from registry.ledger import parse_ledger
from registry.ledger_format import ELDER_COLUMNS, write_csv
from registry.template import EXAMPLE, TITLE, write_template
from tests.operator_support import A1, Tokens, seed, serving
from tests.support.ack import running_ack_app
from tests.support.notifier import GRID_WORKER_ID, insert_alert, seed_registry

KEY_HOLDER_PHONE = "13500000001"  # the template example's
PROFILES = ("standard", "elderly_80plus", "alone", "disabled", "cognitive")


def _ledger(path: Path, drop: tuple[str, ...] = (), **changes: str) -> Path:
    """The template's CSV (title row, Chinese header, example row), changed."""
    write_template(path)
    with path.open(encoding="utf-8-sig", newline="") as f:
        title, header, example = list(csv.reader(f))
    assert title == [TITLE]
    row = dict(zip(header, example, strict=True)) | changes
    header = [h for h in header if h not in drop]
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([[TITLE], header, [row[h] for h in header]])
    return path


def _stored(dsn: str) -> tuple[object, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT allergies, medications, conditions, mobility, key_holder_name,"
            " key_holder_phone, notes FROM elder_care_notes WHERE elder_id = 'E0001'"
        ).fetchone()


def test_chinese_ledger_care_columns_import_and_a_left_out_column_keeps(
    tmp_path: Path, db_dsn: str
) -> None:
    report = import_files(db_dsn, [_ledger(tmp_path / "a.csv")])
    assert report.ok, [str(e) for e in report.errors]
    assert "已忽略" not in format_report(report)  # 备注 and the others are known columns
    assert _stored(db_dsn) == (
        EXAMPLE["过敏史"],
        EXAMPLE["用药"],
        EXAMPLE["慢性病/病史"],
        "需搀扶",
        EXAMPLE["钥匙保管人"],
        KEY_HOLDER_PHONE,
        EXAMPLE["备注"],
    )
    # an older ledger without the columns keeps the notes; an empty cell clears one;
    # the English word for a mobility level is stored in Chinese
    older = _ledger(
        tmp_path / "b.csv", drop=("用药", "慢性病/病史", "备注"), 过敏史="", 行动能力="wheelchair"
    )
    assert import_files(db_dsn, [older]).ok
    assert _stored(db_dsn) == (
        None,
        EXAMPLE["用药"],
        EXAMPLE["慢性病/病史"],
        "轮椅",
        EXAMPLE["钥匙保管人"],
        KEY_HOLDER_PHONE,
        EXAMPLE["备注"],
    )


def test_english_header_aliases(tmp_path: Path, db_dsn: str) -> None:
    row = {
        "elder_id": "E0001", "name": "王秀英", "district": "渝中区", "street": "七星岗街道",
        "lat": "29.5585", "lon": "106.5625", "grid_id": "G01", "grid_name": "金汤街网格",
        "grid_worker_id": "GW01", "grid_worker_name": "李建国",
        "grid_worker_phone": "13700000001", "care_profile": "alone", "lives_alone": "true",
        "contact1_name": "张伟", "contact1_relation": "儿子", "contact1_phone": "13600000001",
        "allergies": "磺胺类", "mobility": "bedridden", "key_holder_name": "张伟",
        "key_holder_phone": "13600000001",
    }  # fmt: skip
    left_out = {"medications", "conditions", "notes"}
    columns = [c for c in ELDER_COLUMNS if c not in left_out]
    path = write_csv(tmp_path / "elders.csv", columns, [{c: row.get(c, "") for c in columns}])
    report = import_files(db_dsn, [path])
    assert report.ok, [str(e) for e in report.errors]
    assert _stored(db_dsn) == ("磺胺类", None, None, "卧床", "张伟", "13600000001", None)


def test_bad_mobility_and_a_key_holder_without_phone_are_refused_in_chinese(
    tmp_path: Path, db_dsn: str
) -> None:
    bad = _ledger(tmp_path / "台账.csv", 行动能力="偶尔拄拐", 钥匙保管人电话="")
    header = next(r for r in csv.reader(bad.open(encoding="utf-8-sig")) if "姓名" in r)
    mobility = f"行动能力（{column_letter(header.index('行动能力'))}列）"
    phone = f"钥匙保管人电话（{column_letter(header.index('钥匙保管人电话'))}列）"
    found = {(e.line, e.field): e.reason for e in parse_ledger([bad], PROFILES).errors}
    assert found == {
        (3, mobility): "“偶尔拄拐”不是可识别的行动能力（可填：自理、需搀扶、轮椅、卧床）",
        (3, phone): "填了钥匙保管人就要填钥匙保管人电话",
    }
    report = import_files(db_dsn, [bad])
    assert not report.ok
    assert f"第 3 行，{mobility}：“偶尔拄拐”不是可识别的行动能力" in format_report(report)
    with psycopg.connect(db_dsn) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM elders), (SELECT count(*) FROM elder_care_notes)"
        ).fetchone()
    assert counts == (0, 0)  # nothing half-imported


def _add_notes(dsn: str, elder_id: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO elder_care_notes (elder_id, allergies, medications, mobility,"
            " key_holder_name, key_holder_phone) VALUES (%s, '青霉素过敏', '硝苯地平',"
            " '轮椅', '赵桂兰', %s)",
            (elder_id, KEY_HOLDER_PHONE),
        )


@pytest.fixture
async def operator_site(db_dsn: str, redis_server: Proc) -> AsyncIterator[tuple[str, Tokens]]:
    tokens = seed(db_dsn)
    _add_notes(db_dsn, "E1")
    async with serving(db_dsn, redis_server.port) as base:
        yield base, tokens


async def test_console_card_and_elder_endpoint_show_the_notes(
    operator_site: tuple[str, Tokens],
) -> None:
    base, tokens = operator_site
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        entry = await http.get("/console", params={"token": tokens.operator_yuzhong})
        assert entry.status_code == 303
        card = await http.get(f"/console/api/alerts/{A1}", headers={"X-Carewatch-Console": "1"})
        assert card.status_code == 200, card.text

        async def elder(token: str) -> dict[str, object]:
            got = await http.get("/api/elders/E1", headers={"Authorization": f"Bearer {token}"})
            assert got.status_code == 200, got.text
            notes: dict[str, object] = got.json()["care_notes"]
            return notes

        as_worker = await elder(tokens.gw1)
        as_admin = await elder(tokens.admin)
    body = card.json()
    assert body["care_needs"]["allergies"] == "青霉素过敏"
    assert body["care_needs"]["mobility"] == "轮椅"
    assert body["care_needs_missing"] == []
    # a dispatcher calls the key holder like the family: the full number
    assert body["dial"]["key_holder"] == {"name": "赵桂兰", "phone": KEY_HOLDER_PHONE}
    # the elder endpoint masks it for everyone but admins
    assert as_worker["key_holder_phone"] == "135****0001"
    assert as_worker["allergies"] == "青霉素过敏"
    assert as_admin["key_holder_phone"] == KEY_HOLDER_PHONE


async def test_the_ack_page_shows_the_notes_only_to_whoever_acknowledged(
    settings: Settings,
) -> None:
    dsn = settings.database_url
    seed_registry(dsn)
    alert_id = insert_alert(dsn)
    _add_notes(dsn, "E1")
    port = free_port()
    s = settings.model_copy(update={"ack_port": port, "ack_base_url": f"http://127.0.0.1:{port}"})
    future = int(time.time() * 1000) + 3_600_000
    secret = s.ack_secret.get_secret_value()
    mine = f"/ack/{sign(alert_id, 'grid_worker', GRID_WORKER_ID, future, secret)}"
    other = f"/ack/{sign(alert_id, 'family', '1', future, secret)}"
    async with running_ack_app(s) as http:
        before = await http.get(mine)
        forged = await http.get(mine[:-4] + "AAAA")
        acked = await http.post(
            mine, data={"action": "acknowledge"}, headers={"origin": s.ack_base_url}
        )
        again = await http.get(mine)
        someone_else = await http.get(other)
    assert before.status_code == 200 and "我来处理" in before.text
    assert forged.status_code == 403
    assert acked.status_code == 200, acked.text
    for page in (before, forged, someone_else):
        assert "青霉素过敏" not in page.text and KEY_HOLDER_PHONE not in page.text
    for page in (acked, again):
        assert "医疗与照护需求" in page.text and "青霉素过敏" in page.text
        assert "轮椅" in page.text and "赵桂兰" in page.text
        assert f'href="tel:{KEY_HOLDER_PHONE}"' in page.text
        assert "台账中尚未登记" not in page.text
