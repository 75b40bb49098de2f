"""Synthetic street generator: determinism, plan-driven sizes, importer-valid output."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import psycopg

from registry.ledger import parse_ledger
from simulators import geo
from simulators.street import (
    FacilityCounts,
    cli_generate,
    generate_street,
    load_plan,
    street_facility_counts,
    write_ledger,
)


def test_same_seed_same_street_other_seed_other_street() -> None:
    a = generate_street(None, "南岸区", 80, seed=11)
    b = generate_street(None, "南岸区", 80, seed=11)
    c = generate_street(None, "南岸区", 80, seed=12)

    assert a == b
    assert a.elders != c.elders
    assert {e.elder_id for e in a.elders}.isdisjoint(e.elder_id for e in c.elders)


def test_plan_uses_the_latest_year_of_each_facility(tmp_path: Path) -> None:
    plan = tmp_path / "plan.csv"
    plan.write_text(
        "district,street_centers_2019,street_centers_2020,community_stations_2020,"
        "township_centers_2022,village_points_2021,village_points_2022\n"
        "甲区,1,3,9,1,12,\n",
        encoding="utf-8",
    )

    assert load_plan(plan) == {
        "甲区": {
            "street_centers": 3,
            "community_stations": 9,
            "township_centers": 1,
            "village_points": 12,
        }
    }
    # 4 streets/townships share 9 stations and 12 village points
    assert street_facility_counts(load_plan(plan)["甲区"]) == FacilityCounts(1, 2, 3)


def test_station_counts_follow_the_shipped_plan() -> None:
    # 渝中区: 6 street centres, no townships, 14 community stations, no village points
    yuzhong = generate_street(None, "渝中区", 10, seed=1)
    # 万州区: 7 street + 12 township centres share 80 stations and 80 village points
    wanzhou = generate_street(None, "万州区", 10, seed=1)
    # 长寿区 plans no community stations for 2020: a street still gets one
    changshou = generate_street(None, "长寿区", 10, seed=1)

    def kinds(street_stations: list[str]) -> Counter[str]:
        return Counter(street_stations)

    assert kinds([s.kind for s in yuzhong.stations]) == {"street_centre": 1, "community_station": 2}
    assert kinds([s.kind for s in wanzhou.stations]) == {
        "street_centre": 1,
        "community_station": 4,
        "village_point": 4,
    }
    assert kinds([s.kind for s in changshou.stations])["community_station"] == 1
    centre = next(s for s in wanzhou.stations if s.kind == "street_centre")
    assert centre.staffed and centre.duty_start.hour == 0 and centre.duty_end.hour == 23
    stations = [s for s in wanzhou.stations if s.kind == "community_station"]
    assert all((s.duty_start.hour, s.duty_end.hour) == (8, 20) for s in stations)


def test_homes_grids_devices_and_contacts_are_plausible() -> None:
    street = generate_street(None, "沙坪坝区", 230, seed=5)
    centre = geo.DISTRICTS["沙坪坝区"]

    assert geo.distance_m(street.lat, street.lon, centre.lat, centre.lon) < 2100
    assert all(geo.distance_m(e.lat, e.lon, street.lat, street.lon) <= 1501 for e in street.elders)
    grid_sizes = Counter(e.grid_id for e in street.elders)
    assert len(grid_sizes) == 3 and all(50 <= n <= 100 for n in grid_sizes.values())
    workers = {(e.grid_id, e.grid_worker_id) for e in street.elders}
    assert len(workers) == len(grid_sizes)  # one grid worker per grid
    assert all(e.wristband_id for e in street.elders)
    for elder in street.elders:
        kinds = {d.kind for d in elder.sensors}
        if elder.lives_alone:
            assert {"pir", "door", "water_meter"} <= kinds
            assert "配偶" not in {c.relation for c in elder.contacts}
        else:
            assert not kinds
        assert 1 <= len(elder.contacts) <= 3
    profiles = Counter(e.care_profile for e in street.elders)
    assert set(profiles) == {"standard", "elderly_80plus", "alone", "disabled", "cognitive"}
    assert any(d.kind == "radar" for e in street.elders for d in e.sensors)


def test_unknown_district_gets_a_deterministic_point_near_the_default() -> None:
    a, b = geo.district("不存在区"), geo.district("不存在区")

    assert a == b
    assert geo.distance_m(a.lat, a.lon, *geo.DEFAULT_CENTRE) < 40_000
    assert geo.district("另一个区") != a


def test_every_generated_row_passes_the_importer_validation(db_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(db_dsn) as conn:
        profiles = [r[0] for r in conn.execute("SELECT id FROM care_profiles")]
    street = generate_street(None, "万州区", 150, seed=9)

    ledger = parse_ledger(write_ledger(street, tmp_path), profiles)

    assert ledger.errors == []
    assert ledger.elders == street.elders
    assert ledger.stations == street.stations
    assert ledger.officers == street.officers


def test_cli_writes_the_three_files(tmp_path: Path) -> None:
    args = argparse.Namespace(district="渝中区", elders=20, seed=3, plan=None, out=tmp_path)

    assert cli_generate(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "duty_officers.csv",
        "elders.csv",
        "stations.csv",
    ]
    assert cli_generate(argparse.Namespace(**{**vars(args), "district": "火星区"})) == 2
