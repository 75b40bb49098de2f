"""Periodic I/O of the rules engine, outside the detectors: what it reads reaches the
detectors as data.

The timer loop calls `Inputs.refresh` every `timer_poll_ms`; each part keeps its own
pace and a failing part is logged and retried on the next call, without holding up
timers or the other parts:

- learned routines (rules_engine.routine), rooms and home routines
  (rules_engine.home_routine): the books the inactivity and home-sensor detectors read;
- the whereabouts of elders first seen by this process (InactivityDetector.to_recall ->
  stored signs -> recalled) and their home sensors' last reports
  (HomeSensorHealthDetector.to_recall -> stored reports -> recalled);
- the silence sweep (rules_engine.device_sweep, once a minute): silent wristbands and
  bands heard again become due timers, which the device-health detector decides.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping

from psycopg_pool import AsyncConnectionPool

from carewatch.clock import Clock
from carewatch.settings import Settings
from rules_engine import device_sweep
from rules_engine.detectors.home_sensors import (
    EXPECTED,
    RECALL_DAYS,
    HomeSensorHealthDetector,
    Report,
    stored_state,
)
from rules_engine.detectors.inactivity import InactivityDetector
from rules_engine.engine import Engine
from rules_engine.home_routine import RECALL_MS, load_signs
from rules_engine.thresholds import resolve_thresholds
from rules_engine.timeconv import ms_to_dt

log = logging.getLogger(__name__)

SWEEP_EVERY_MS = 60_000

# The last report of each of an elder's home sensors (one index probe per sensor on
# telemetry_device_ts); a sensor without one in RECALL_DAYS falls back to last_seen.
_LAST_REPORTS = """
SELECT d.id, d.kind,
       (extract(epoch FROM coalesce(t.ts, d.last_seen)) * 1000)::bigint AS at_ms, t.data
FROM devices d
LEFT JOIN LATERAL (
    SELECT ts, data FROM telemetry
    WHERE device_id = d.id AND ts >= %(since)s AND ts <= %(until)s
    ORDER BY ts DESC LIMIT 1
) t ON true
WHERE d.elder_id = %(elder)s AND d.kind = ANY(%(kinds)s)
  AND coalesce(t.ts, d.last_seen) IS NOT NULL
"""


async def load_last_reports(
    pool: AsyncConnectionPool, elder_id: str, now_ms: int
) -> list[tuple[str, str, Report]]:
    """(device id, kind, last report) of the elder's home sensors, from the store."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            _LAST_REPORTS,
            {
                "elder": elder_id,
                "kinds": sorted(EXPECTED),
                "since": ms_to_dt(now_ms - RECALL_DAYS * 86_400_000),
                "until": ms_to_dt(now_ms),
            },
        )
        rows = await cur.fetchall()
    out = []
    for row in rows:
        device_id, kind, at_ms, data = _report_row(row)
        out.append((device_id, kind, Report(at_ms, stored_state(data), "stored")))
    return out


def _report_row(row: object) -> tuple[str, str, int, Mapping[str, object]]:
    if isinstance(row, Mapping):
        row = (row["id"], row["kind"], row["at_ms"], row["data"])
    assert isinstance(row, tuple)
    data = row[3] if isinstance(row[3], Mapping) else {}
    return str(row[0]), str(row[1]), int(row[2]), data


class Inputs:
    """The periodic reads for one engine's detectors."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._settings = settings
        self._inactivity = [d for d in engine.detectors if isinstance(d, InactivityDetector)]
        self._sensors = [d for d in engine.detectors if isinstance(d, HomeSensorHealthDetector)]
        self._sweeps = settings.bus_shards > 0 and any(
            device_sweep.OFFLINE in d.timer_kinds for d in engine.detectors
        )
        self._next_sweep_ms = 0

    async def refresh(self, pool: AsyncConnectionPool, clock: Clock) -> None:
        now_ms = clock.now_ms()
        parts: list[tuple[str, Awaitable[None]]] = []
        for d in self._inactivity:
            parts += [
                ("routines", d.routines.refresh(pool, clock)),
                ("rooms", d.rooms.refresh(pool, now_ms)),
                ("home routines", d.homes.refresh(pool, d.rooms, clock)),
                ("whereabouts", self._recall_signs(pool, d, now_ms)),
            ]
        for sensors in self._sensors:
            parts.append(("sensor reports", self._recall_reports(pool, sensors, now_ms)))
        if self._sweeps:
            parts.append(("device sweep", self._sweep(pool, now_ms)))
        for name, part in parts:  # in order, each awaited: one failing leaves the rest
            try:
                await part
            except Exception:
                log.exception("periodic input failed", extra={"input": name})

    async def _recall_signs(
        self, pool: AsyncConnectionPool, detector: InactivityDetector, now_ms: int
    ) -> None:
        for elder_id, first in detector.to_recall():
            until = now_ms if first is None else first
            stored = await load_signs(
                pool, elder_id, detector.rooms, until, 0, since_ms=until - RECALL_MS
            )
            detector.recalled(elder_id, stored)

    async def _recall_reports(
        self, pool: AsyncConnectionPool, detector: HomeSensorHealthDetector, now_ms: int
    ) -> None:
        for elder_id in detector.to_recall():
            detector.recalled(elder_id, await load_last_reports(pool, elder_id, now_ms))

    async def _sweep(self, pool: AsyncConnectionPool, now_ms: int) -> None:
        """Look for silent bands (and bands back) once a minute; timers do the rest."""
        if now_ms < self._next_sweep_ms:
            return
        self._next_sweep_ms = now_ms + SWEEP_EVERY_MS
        default_s = resolve_thresholds(self._settings, {}).device_offline_s  # profiles override
        await device_sweep.sweep(pool, now_ms, default_s, self._settings.bus_shards)
