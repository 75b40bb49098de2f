"""Decoded protocol messages -> carewatch's device contract (schema v1), pure.

Every gateway ends here: what a watch or a platform said becomes the DeviceEvent,
Telemetry and DeviceStatus payloads a native device would publish on
cw/v1/dev/{id}/event|telemetry|status, so ingest validates, deduplicates and routes
them exactly as it does for native devices (docs/adr/0004-device-gateways.md).

Sequence numbers. Ingest deduplicates by (device, seq), so a gateway must give the same
seq to the same message delivered twice, and different seqs to different messages:

    seq = time_ms * 1000 + (discriminator % 250) * 4 + slot

`time_ms` is the message's own time where it has one that a retry repeats (a CTWing
push's timestamp, a OneNET datapoint's `at`), `discriminator` tells apart messages of
the same millisecond (CTWing's upPacketSN, a hash of the OneNET datastream, or a
per-connection counter for watches), and `slot` (0..3) the several payloads one message
becomes (an alarm and its position). The result stays below 2**53 until 2255.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from carewatch.messages import DeviceEvent, DeviceStatus, EventType, Telemetry

UplinkKind = Literal["event", "telemetry", "status"]

# A device clock further than this from the gateway's receive time is not trusted.
MAX_CLOCK_SKEW_MS = 24 * 3600 * 1000
MAX_CLOCK_AHEAD_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Uplink:
    kind: UplinkKind
    payload: DeviceEvent | Telemetry | DeviceStatus


def seq_for(time_ms: int, discriminator: int, slot: int) -> int:
    return time_ms * 1000 + (discriminator % 250) * 4 + (slot & 3)


def text_discriminator(text: str) -> int:
    return zlib.crc32(text.encode())


def device_ms(device_time: datetime | None, received_ms: int) -> int:
    """The device's time when it is plausible, else the gateway's receive time."""
    if device_time is None:
        return received_ms
    ms = int(device_time.timestamp() * 1000)
    if ms > received_ms + MAX_CLOCK_AHEAD_MS or ms < received_ms - MAX_CLOCK_SKEW_MS:
        return received_ms
    return ms


@dataclass(frozen=True, slots=True)
class Reading:
    """What one protocol message says, in carewatch's words (before seq/ts)."""

    events: tuple[EventType, ...] = ()
    hr: int | None = None
    temp: float | None = None
    steps: int | None = None
    battery: int | None = None
    worn: bool | None = None
    lat: float | None = None
    lon: float | None = None
    presence: bool | None = None
    offline: bool = False  # the device says it is switching off (power cut)

    def has_telemetry(self) -> bool:
        return any(
            v is not None
            for v in (
                self.hr,
                self.temp,
                self.steps,
                self.battery,
                self.worn,
                self.lat,
                self.presence,
            )
        )


def _clean_hr(hr: int | None) -> int | None:
    return hr if hr is not None and 0 < hr <= 300 else None


def _clean_temp(temp: float | None) -> float | None:
    return temp if temp is not None and 25 <= temp <= 45 else None


def uplinks(
    reading: Reading,
    *,
    time_ms: int,
    discriminator: int,
    always_telemetry: bool = False,
) -> list[Uplink]:
    """The payloads of one reading: events first (they take the fast lane), then one
    telemetry (position, vitals, battery), then a status when the device switches off.
    `always_telemetry`: send an empty telemetry as a sign of life when nothing else
    would be sent (heartbeats)."""
    out: list[Uplink] = []
    slot = 0
    for event in reading.events[:2]:
        seq = seq_for(time_ms, discriminator, slot)
        out.append(Uplink("event", DeviceEvent(v=1, seq=seq, ts=time_ms, type=event)))
        slot += 1
    if reading.has_telemetry() or (always_telemetry and not out):
        seq = seq_for(time_ms, discriminator, slot)
        has_position = reading.lat is not None and reading.lon is not None
        out.append(
            Uplink(
                "telemetry",
                Telemetry(
                    v=1,
                    seq=seq,
                    ts=time_ms,
                    hr=_clean_hr(reading.hr),
                    temp=_clean_temp(reading.temp),
                    steps=reading.steps,
                    battery=reading.battery,
                    worn=reading.worn,
                    lat=reading.lat if has_position else None,
                    lon=reading.lon if has_position else None,
                    presence=reading.presence,
                ),
            )
        )
        slot += 1
    if reading.offline:
        seq = seq_for(time_ms, discriminator, 3)
        out.append(
            Uplink(
                "status",
                DeviceStatus(v=1, state="offline", seq=seq, ts=time_ms, battery=reading.battery),
            )
        )
    return out


# ---------------------------------------------------------------------------------
# Watch flags -> readings
# ---------------------------------------------------------------------------------


def watch_reading(
    flags: frozenset[str],
    *,
    lat: float | None,
    lon: float | None,
    battery: int | None,
    steps: int | None,
    alarm_frame: bool,
) -> Reading:
    """A 3G-watch position or alarm. Every decoded flag lands somewhere:

    - sos -> event "sos" (with or without a GPS fix), fall -> event "fall";
    - strap_removed -> worn False, the "worn" state bit -> worn True;
    - low_battery -> the battery level goes with the telemetry (the rules engine's
      low-battery check decides on it, as for native wristbands);
    - geofence_exit / geofence_enter -> the position goes with the telemetry: zones are
      carewatch's own (the geofence detector), not the watch's;
    - power_cut -> status "offline".
    """
    events: list[EventType] = []
    if "sos" in flags:
        events.append("sos")
    if "fall" in flags:
        events.append("fall")
    worn: bool | None = None
    if "strap_removed" in flags and alarm_frame:
        worn = False
    elif "worn" in flags:
        worn = True
    return Reading(
        events=tuple(events),
        battery=battery,
        steps=steps,
        worn=worn,
        lat=lat,
        lon=lon,
        offline="power_cut" in flags,
    )


def iw_alarm_reading(
    alarm: str | None, *, lat: float | None, lon: float | None, battery: int | None
) -> Reading:
    """An IW AP10 alarm code (gateways.iw.ALARM_CODES) or an AP01 position (None)."""
    events: tuple[EventType, ...] = ()
    worn: bool | None = None
    if alarm == "sos":
        events = ("sos",)
    elif alarm == "fall":
        events = ("fall",)
    elif alarm == "strap_removed":
        worn = False
    return Reading(events=events, battery=battery, worn=worn, lat=lat, lon=lon)


# ---------------------------------------------------------------------------------
# Platform fields -> readings (the per-product mapping is data: gateways.products)
# ---------------------------------------------------------------------------------

ALARM_MEANINGS: dict[str, EventType] = {
    "smoke": "smoke",
    "gas": "gas",
    "leak": "leak",
    "sos": "sos",
    "fall": "fall",
}


@dataclass(frozen=True, slots=True)
class FieldRule:
    meaning: str
    alarm_values: frozenset[str]


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def platform_reading(
    fields: Mapping[str, object], rules: Mapping[str, FieldRule]
) -> tuple[Reading, list[str]]:
    """Map a platform's field values through the product's rules. Returns the reading
    and the fields it did not know (counted, not an error: products report more than
    carewatch needs)."""
    events: list[EventType] = []
    values: dict[str, object] = {}
    unknown: list[str] = []
    for name, value in fields.items():
        rule = rules.get(name)
        if rule is None:
            unknown.append(name)
            continue
        if rule.meaning in ALARM_MEANINGS:
            if _text(value) in rule.alarm_values:
                events.append(ALARM_MEANINGS[rule.meaning])
        elif rule.meaning == "battery":
            number = _number(value)
            if number is not None and 0 <= number <= 100:
                values["battery"] = int(number)
        elif rule.meaning == "hr":
            number = _number(value)
            values["hr"] = int(number) if number is not None else None
        elif rule.meaning == "temp":
            values["temp"] = _number(value)
        elif rule.meaning == "presence":
            values["presence"] = _text(value) in (rule.alarm_values or {"1"})
    return (
        Reading(
            events=tuple(dict.fromkeys(events)),
            battery=values.get("battery"),  # type: ignore[arg-type]
            hr=values.get("hr"),  # type: ignore[arg-type]
            temp=values.get("temp"),  # type: ignore[arg-type]
            presence=values.get("presence"),  # type: ignore[arg-type]
        ),
        unknown,
    )
