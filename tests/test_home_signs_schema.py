"""The home sensors' messages (contact, switch, plug, electricity meter) through ingest's
validation: accepted as typed events, bad values rejected with a counted reason."""

from __future__ import annotations

import msgspec
import pytest

from carewatch.db.registry import DeviceInfo
from ingest.validate import Accepted, Rejection, validate

NOW = 1_795_000_000_000
REGISTRY = {
    "c1": DeviceInfo("c1", "E1", "contact"),
    "s1": DeviceInfo("s1", "E1", "switch"),
    "tv": DeviceInfo("tv", "E1", "plug"),
    "m1": DeviceInfo("m1", "E1", "power_meter"),
}


def check(device: str, kind: str, payload: dict[str, object]) -> Accepted | Rejection:
    raw = msgspec.json.encode({"v": 1, "seq": 7, "ts": NOW, **payload})
    return validate(
        f"cw/v1/dev/{device}/{kind}", raw, REGISTRY, received_ms=NOW, max_payload_bytes=4096
    )


@pytest.mark.parametrize(
    ("device", "event"),
    [("c1", "contact_open"), ("c1", "contact_close"), ("s1", "switch_on"), ("s1", "switch_off")],
)
def test_contact_and_switch_events_are_accepted(device: str, event: str) -> None:
    got = check(device, "event", {"type": event})
    assert isinstance(got, Accepted)
    assert got.event.event == event and got.event.device_kind == REGISTRY[device].kind


def test_power_readings_are_accepted_as_telemetry() -> None:
    got = check("m1", "telemetry", {"power_w": 1850.5, "energy_kwh": 10234.7})
    assert isinstance(got, Accepted)
    assert got.event.data == {"power_w": 1850.5, "energy_kwh": 10234.7}


@pytest.mark.parametrize(
    "payload",
    [{"power_w": -1.0}, {"power_w": 200_000.0}, {"energy_kwh": -0.1}, {"power_w": "on"}],
)
def test_bad_power_readings_are_rejected(payload: dict[str, object]) -> None:
    got = check("tv", "telemetry", payload)
    assert isinstance(got, Rejection) and got.reason == "schema_invalid"


def test_an_unknown_event_type_is_rejected() -> None:
    got = check("c1", "event", {"type": "contact_ajar"})
    assert isinstance(got, Rejection) and got.reason == "schema_invalid"
