"""`carewatch eval homes` on a small synthetic log in the layout of data/homes/."""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from carewatch.cli import main
from carewatch.settings import get_settings
from rules_engine.evaluation.homes import evaluate
from simulators.home_log import read_log

TZ = ZoneInfo("Asia/Shanghai")


def _day(d: datetime) -> list[tuple[datetime, str, str, str]]:
    """One ordinary day: bed, a toilet trip at 02:00, breakfast, an armchair afternoon,
    a walk through the front door, dinner, bed."""
    at = lambda h, m: d + timedelta(hours=h, minutes=m)  # noqa: E731
    rows = [(at(0, m), "Bedroom", "Bedroom", "ON") for m in (10, 50)]
    rows += [(at(1, 30), "Bedroom", "Bedroom", "ON"), (at(2, 0), "Bathroom", "Bathroom", "ON")]
    rows += [(at(2, 4), "Bathroom", "Bathroom", "ON"), (at(2, 8), "Bedroom", "Bedroom", "ON")]
    rows += [(at(4, 0), "Bedroom", "Bedroom", "ON"), (at(7, 0), "Bedroom", "Bedroom", "ON")]
    rows += [(at(7, m), "Bathroom", "Bathroom", "ON") for m in (5, 10, 15)]
    rows += [(at(7, m), "Kitchen", "Kitchen", "ON") for m in (20, 30, 40, 50)]
    rows += [(at(h, 0), "Kitchen", "Kitchen", "ON") for h in (9, 10, 11, 12)]
    rows += [
        (at(12, 30), "LivingRoom", "LoungeChair", "ON"),
        (at(15, 0), "Kitchen", "Kitchen", "ON"),
    ]
    rows += [
        (at(15, 30), "OutsideDoor", "FrontDoor", "OPEN"),
        (at(17, 0), "OutsideDoor", "FrontDoor", "CLOSE"),
    ]
    rows += [(at(17, m), "Kitchen", "Kitchen", "ON") for m in (5, 30)]
    rows += [(at(h, 0), "LivingRoom", "LivingRoom", "ON") for h in (18, 19, 20, 21)]
    rows += [(at(22, 0), "Bedroom", "Bedroom", "ON"), (at(23, 0), "Bedroom", "Bedroom", "ON")]
    return rows


def _log(path: Path, days: int) -> Path:
    start = datetime(2026, 11, 2)
    lines = []
    for n in range(days):
        for t, area, sensor, state in _day(start + timedelta(days=n)):
            lines.append(f"{t:%Y-%m-%d %H:%M:%S.%f} {area} {sensor} {state} Other")
            if state == "ON":
                off = t + timedelta(seconds=2)
                lines.append(f"{off:%Y-%m-%d %H:%M:%S.%f} {area} {sensor} OFF Other")
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_the_log_maps_to_sensors_in_rooms(tmp_path: Path) -> None:
    events, sensors = read_log(_log(tmp_path / "home.txt.gz", 1), TZ)
    kinds = {s.device_id: (s.kind, s.room) for s in sensors}
    assert kinds["HOME-OutsideDoor-FrontDoor"] == ("door", "门口")
    assert kinds["HOME-LivingRoom-LoungeChair"] == ("pir", "客厅")
    assert kinds["HOME-Bathroom-Bathroom"] == ("pir", "卫生间")
    assert events == sorted(events, key=lambda e: e.at_ms)


def test_normal_days_stay_quiet_and_a_night_toilet_with_no_return_is_caught(
    tmp_path: Path,
) -> None:
    log = _log(tmp_path / "home.txt.gz", 8)
    ev = evaluate(log, get_settings(), TZ, per_category=1, skip_days=5)
    assert [f for f in ev.false_alerts if f.at >= "2026-11-05"] == []  # once learned
    by = {o.category: o for o in ev.outcomes}
    assert set(by) >= {"night_exit", "bathroom", "day"}
    exit_ = by["night_exit"]
    assert exit_.caught and exit_.delay_s is not None and exit_.delay_s <= 3600
    assert by["day"].caught


def test_cli_reports_and_refuses_a_bad_log(tmp_path: Path, capsys: object) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("not a sensor log\n", encoding="utf-8")
    assert main(["eval", "homes", str(bad), "--incidents", "0"]) == 2
    log = _log(tmp_path / "home.txt.gz", 4)
    out = tmp_path / "figures.json"
    assert main(["eval", "homes", str(log), "--incidents", "0", "--json", str(out)]) == 0
    assert "false_alerts_per_resident_month" in out.read_text(encoding="utf-8")
