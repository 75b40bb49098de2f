"""The region tree from the ledger and on its own (registry.regions), against a real
PostgreSQL: nodes created or matched from the ledger's columns, all or nothing, errors
in Chinese for Chinese headers."""

from __future__ import annotations

from pathlib import Path

import psycopg

from registry.importer import format_report, import_files
from registry.regions import format_tree, import_regions, region_tree

TITLE = "渝中区老年人信息台账（2026年12月）"
HEADER = (
    "序号,老人编号,姓名,区县,街道,所属社区,纬度,经度,网格编号,网格,网格员编号,网格员,"
    "网格员电话,照护类型,紧急联系人,紧急联系人关系,紧急联系人电话,备注"
)


def _elder(n: int, street: str, community: str, grid: str) -> str:
    worker_phone = 13700000000 + sum(map(ord, grid))
    return (
        f"{n},E{n:04d},老人{n},渝中区,{street},{community},29.55,106.57,{grid},{grid}网格,"
        f"W{grid},网格员{grid},{worker_phone},独居,家属{n},儿子,1360000{n:04d},"
    )


def _ledger(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "台账.csv"
    path.write_text("\n".join([TITLE, HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _tree(dsn: str) -> list[tuple[str, str]]:
    return [(n.level, n.scope) for n in region_tree(dsn)]


def test_ledger_columns_create_and_match_the_nodes(tmp_path: Path, db_dsn: str) -> None:
    rows = [
        _elder(1, "解放碑街道", "民族路社区", "G1"),
        _elder(2, "解放碑街道", "民族路社区", "G1"),
        _elder(3, "解放碑街道", "邹容路社区", "G2"),
        _elder(4, "朝天门街道", "", "G5"),
    ]
    report = import_files(db_dsn, [_ledger(tmp_path, rows)])
    assert report.ok, [str(e) for e in report.errors]
    assert "regions: 8 new" in format_report(report)
    assert _tree(db_dsn) == [
        ("city", "* (全市)"),
        ("district", "渝中区"),
        ("street", "渝中区/解放碑街道"),
        ("community", "渝中区/解放碑街道/民族路社区"),
        ("grid", "渝中区/解放碑街道/民族路社区/G1"),
        ("community", "渝中区/解放碑街道/邹容路社区"),
        ("grid", "渝中区/解放碑街道/邹容路社区/G2"),
        ("street", "渝中区/朝天门街道"),
        ("grid", "渝中区/朝天门街道/G5"),
    ]
    assert "渝中区/解放碑街道  [street: 2 grid(s), 3 elder(s)]" in format_tree(region_tree(db_dsn))
    # the same ledger again matches every node; a grid given a community moves under it
    again = import_files(
        db_dsn, [_ledger(tmp_path, [*rows[:3], _elder(4, "朝天门街道", "朝东路社区", "G5")])]
    )
    assert again.ok and again.counts["regions"].inserted == 1
    assert ("grid", "渝中区/朝天门街道/朝东路社区/G5") in _tree(db_dsn)


def test_a_grid_in_two_communities_is_refused_in_chinese_and_nothing_is_written(
    tmp_path: Path, db_dsn: str
) -> None:
    rows = [
        _elder(1, "解放碑街道", "民族路社区", "G1"),
        _elder(2, "解放碑街道", "邹容路社区", "G1"),
    ]
    report = import_files(db_dsn, [_ledger(tmp_path, rows)])
    assert not report.ok
    text = format_report(report)
    assert (
        "第 4 行，所属社区（F列）：网格“G1”在第 3 行填的是“民族路社区”，这里是“邹容路社区”，应一致"
        in text
    )
    assert _tree(db_dsn) == [("city", "* (全市)")]
    with psycopg.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM grids").fetchone() == (0,)


def test_regions_on_their_own_all_or_nothing(tmp_path: Path, db_dsn: str) -> None:
    places = tmp_path / "区划.csv"
    places.write_text(
        "重庆市街道社区一览\n市,区县,街道/乡镇,社区/村,负责人\n"
        "重庆市,渝中区,解放碑街道,民族路社区,张三\n"
        "重庆市,渝中区,解放碑街道,,\n"
        "重庆市,江北区,,,\n",
        encoding="utf-8",
    )
    first = import_regions(db_dsn, places)
    assert first.ok, [str(e) for e in first.errors]
    assert first.created == 4 and "负责人" in " ".join(first.notes)
    assert import_regions(db_dsn, places).created == 0
    assert _tree(db_dsn) == [
        ("city", "* (重庆市)"),
        ("district", "渝中区"),
        ("street", "渝中区/解放碑街道"),
        ("community", "渝中区/解放碑街道/民族路社区"),
        ("district", "江北区"),
    ]
    bad = tmp_path / "坏.csv"
    bad.write_text("市,区县,街道,社区\n重庆市,沙坪坝区,,小龙坎社区\n成都市,,,\n", encoding="utf-8")
    refused = import_regions(db_dsn, bad)
    text = str(refused)
    assert "区划未导入，没有写入任何数据：共 3 处错误" in text
    assert "第 2 行，街道：填了社区就要填所属街道" in text
    assert "第 3 行，区县：不能为空" in text
    assert "只能有一个市" in text
    assert len(_tree(db_dsn)) == 5
