"""Wristband health: pure table tests with a ManualClock (no servers).

The silence sweep (device_sweep.py) only arms due timers; here they are armed by
hand, as the sweep would, and test_device_health_sweep.py runs the sweep itself
against PostgreSQL.
"""

from __future__ import annotations

import pytest

from rules_engine.detectors.device_health import DeviceHealthDetector
from tests.detector_sim import TZ, Sim, Timer, local_ms, thresholds

H = 3_600_000
MIN = 60_000


def sim(**overrides: float) -> Sim:
    return Sim(DeviceHealthDetector(TZ), thresholds(**overrides))


def band(s: Sim, at_ms: int, device: str = "W1", **kw: object) -> bool:
    return s.at(at_ms, device, "wristband", **kw)


def test_last_will_opens_offline_at_once_and_reminds_every_two_hours_until_online() -> None:
    s = sim()
    assert band(s, local_ms(24, 10), state="offline")
    [opened] = s.changes
    assert (opened.kind, opened.what, opened.rule) == (
        "device_offline",
        "opened",
        "device.last_will",
    )
    s.run_until(local_ms(24, 16, 30))
    reminders = [c for c in s.changes if c.what == "reminder"]
    assert [c.at_ms for c in reminders] == [local_ms(24, h) for h in (12, 14, 16)]
    assert {c.alert_id for c in reminders} == {opened.alert_id}
    band(s, local_ms(24, 17), state="online")
    assert s.whats("device_offline") == ["opened", "reminder", "reminder", "reminder", "resolved"]
    s.run_until(local_ms(24, 23))  # the chain ends with the alert
    assert s.whats("device_offline")[-1] == "resolved"


def test_reminder_cadence_follows_the_profile() -> None:
    s = sim(device_reminder_s=30 * 60)
    band(s, local_ms(24, 10), state="offline")
    s.run_until(local_ms(24, 11, 59))
    assert s.whats("device_offline") == ["opened", "reminder", "reminder", "reminder"]


def test_silent_band_found_by_the_sweep_opens_offline_and_hearing_it_resolves() -> None:
    s = sim()
    last_seen = local_ms(24, 9)
    s.timers["device-offline:W1@1"] = Timer(
        "device-offline", local_ms(24, 9, 31), {"device_id": "W1", "last_seen_ms": last_seen}
    )
    s.run_until(local_ms(24, 9, 31))
    [opened] = s.changes
    assert (opened.rule, s.opened[opened.alert_id].device_id) == ("device.silent", "W1")
    assert s.opened[opened.alert_id].threshold == {"device_offline_s": 1800.0}
    s.timers[f"device-back:{opened.alert_id}"] = Timer(
        "device-back", local_ms(24, 10), {"alert_id": opened.alert_id, "device_id": "W1"}
    )
    s.run_until(local_ms(24, 10))
    assert s.whats("device_offline") == ["opened", "resolved"]


def test_a_second_band_coming_online_does_not_clear_the_first_bands_alert() -> None:
    s = sim()
    band(s, local_ms(24, 10), "W1", state="offline")
    band(s, local_ms(24, 10, 5), "W2", state="online")
    assert s.whats("device_offline") == ["opened"]
    band(s, local_ms(24, 10, 6), "W1", state="online")
    assert s.whats("device_offline") == ["opened", "resolved"]


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ([50, 30, 21], []),
        ([50, 19], ["opened"]),
        ([19, 15, 10], ["opened"]),  # still low: the reminders carry it, no second alert
        ([19, 22], ["opened"]),  # hysteresis: 22 % is not charged yet
        ([19, 22, 80], ["opened", "resolved"]),
        ([19, 80, 12], ["opened", "resolved", "opened"]),
    ],
)
def test_low_battery_opens_below_20_and_resolves_once_charged(
    levels: list[int], expected: list[str]
) -> None:
    s = sim()
    for i, level in enumerate(levels):
        band(s, local_ms(24, 10) + i * 10 * MIN, battery=level, hr=70)
    assert s.whats("low_battery") == expected


def test_battery_reaches_the_database_only_when_it_changes() -> None:
    s = sim()
    assert band(s, local_ms(24, 10), battery=60)
    assert not band(s, local_ms(24, 10, 1), battery=60, hr=72)
    assert not band(s, local_ms(24, 10, 2), hr=72)  # nothing for device health here
    assert band(s, local_ms(24, 10, 3), battery=59)


@pytest.mark.parametrize(
    ("off_at", "alert_at"),
    [
        (local_ms(24, 10), local_ms(24, 10, 30)),
        (local_ms(24, 20, 50), local_ms(25, 8, 20)),  # 10 min tonight, 20 min tomorrow
        (local_ms(24, 23), local_ms(25, 8, 30)),  # charging at night: counted from 08:00
    ],
)
def test_off_wrist_for_30_minutes_of_the_day_opens_off_wrist(off_at: int, alert_at: int) -> None:
    s = sim()
    band(s, off_at - MIN, worn=True)
    band(s, off_at, worn=False)
    s.run_until(alert_at - 1)
    assert s.whats("off_wrist") == []
    s.run_until(alert_at)
    assert s.whats("off_wrist") == ["opened"]


def test_worn_again_resolves_off_wrist_and_a_night_off_the_wrist_raises_nothing() -> None:
    s = sim()
    band(s, local_ms(24, 10), worn=False)
    s.run_until(local_ms(24, 12))
    band(s, local_ms(24, 12), worn=True)
    assert s.whats("off_wrist") == ["opened", "resolved"]
    band(s, local_ms(24, 22), worn=False)  # charging overnight
    band(s, local_ms(25, 7, 30), worn=True)
    s.run_until(local_ms(25, 12))
    assert s.whats("off_wrist") == ["opened", "resolved"]
