"""A tiny, hand-written elder ledger in the import format (docs/registry.md) for e2e tests."""

from __future__ import annotations

from pathlib import Path

STATIONS = """station_id,name,kind,district,street,lat,lon,phone,wecom_userid,staffed,duty_start,duty_end
ST-NEAR-CLOSED,七星岗社区养老服务站,community_station,渝中区,七星岗街道,29.5580,106.5620,13960000001,st_near,false,08:00,20:00
ST-24H,七星岗街道养老服务中心,street_centre,渝中区,七星岗街道,29.5600,106.5700,13960000002,st_24h,true,00:00,23:59
ST-FAR,解放碑街道养老服务中心,street_centre,渝中区,解放碑街道,29.5800,106.6000,13960000003,st_far,true,00:00,23:59
"""

OFFICERS = """officer_id,district,name,phone,wecom_userid
DO-YZ,渝中区,区值班员周强,13900000009,duty_yz
"""

ELDERS = (
    "elder_id,name,phone,district,street,address,lat,lon,grid_id,grid_name,grid_worker_id,"
    "grid_worker_name,grid_worker_phone,grid_worker_wecom,care_profile,lives_alone,wristband_id,"
    "sensors,contact1_name,contact1_relation,contact1_phone,contact1_wecom,contact2_name,"
    "contact2_relation,contact2_phone,contact2_wecom\n"
    "E0001,王秀英,13800000001,渝中区,七星岗街道,七星岗街道金汤街12号3-2,29.5585,106.5625,G01,"
    "金汤街网格,GW01,李建国,13700000001,gw_li,alone,true,WB0001,pir:PIR0001;door:DOOR0001,"
    "张伟,儿子,13600000001,fam_zhang,张丽,女儿,13600000002,fam_zhangli\n"
    "E0002,刘桂兰,13800000002,渝中区,七星岗街道,七星岗街道中山一路8号,29.5590,106.5630,G01,"
    "金汤街网格,GW01,李建国,13700000001,gw_li,elderly_80plus,false,WB0002,,"
    "刘洋,儿子,13600000003,fam_liu,,,,\n"
)


def write_ledger(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in (("stations", STATIONS), ("duty_officers", OFFICERS), ("elders", ELDERS)):
        path = folder / f"{name}.csv"
        path.write_text(text, encoding="utf-8")
        files.append(path)
    return files
