"""Silence of wristbands, found from the registry instead of the hot path.

Ingest keeps `devices.last_seen` current (one UPDATE per batch). Every minute the
rules engine looks for wristbands silent longer than their profile's
`device_offline_s`, and for offline alerts whose band has been heard since, and arms
a due durable timer for each (`device-offline:{device_id}@{last_seen_ms}`,
`device-back:{alert_id}`). The timer loop then decides under the elder's lock,
exactly once, like any other timer: no telemetry sample needs a database write to
keep a heartbeat deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from carewatch import bus
from rules_engine.timeconv import ms_to_dt

OFFLINE = "device-offline"
BACK = "device-back"

_SILENT = """
SELECT d.id, d.elder_id, s.last_seen_ms, %(offline)s || ':' || d.id || '@' || s.last_seen_ms AS timer_id
FROM devices d
JOIN elders e ON e.id = d.elder_id
LEFT JOIN care_profiles cp ON cp.id = e.care_profile_id
CROSS JOIN LATERAL (
    SELECT (extract(epoch FROM d.last_seen) * 1000)::bigint AS last_seen_ms,
           CASE WHEN jsonb_typeof(cp.thresholds -> 'device_offline_s') = 'number'
                 AND (cp.thresholds ->> 'device_offline_s')::float8 >= 0
                THEN (cp.thresholds ->> 'device_offline_s')::float8
                ELSE %(default_s)s END AS offline_s
) s
WHERE d.kind = 'wristband' AND d.last_seen IS NOT NULL
  AND d.last_seen < %(now)s - make_interval(secs => s.offline_s)
  AND NOT EXISTS (
      SELECT 1 FROM rule_timers t
      WHERE t.id = %(offline)s || ':' || d.id || '@' || s.last_seen_ms
  )
ORDER BY d.last_seen
LIMIT %(limit)s
"""

_BACK = """
SELECT a.id::text AS alert_id, a.elder_id, a.device_id,
       (extract(epoch FROM d.last_seen) * 1000)::bigint AS last_seen_ms
FROM alerts a JOIN devices d ON d.id = a.device_id
WHERE a.kind = 'device_offline' AND a.status IN ('open', 'acknowledged')
  AND d.last_seen > a.device_time
  AND NOT EXISTS (SELECT 1 FROM rule_timers t WHERE t.id = %(back)s || ':' || a.id::text)
LIMIT %(limit)s
"""

_ARM = (
    "INSERT INTO rule_timers (id, shard, elder_id, kind, due_at, payload)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class Swept:
    silent: int
    back: int


async def sweep(
    pool: AsyncConnectionPool, now_ms: int, default_offline_s: float, shards: int, limit: int = 1000
) -> Swept:
    """Arm due timers for newly silent bands and for offline alerts whose band is back."""
    now = ms_to_dt(now_ms)
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            _SILENT,
            {"offline": OFFLINE, "default_s": default_offline_s, "now": now, "limit": limit},
        )
        silent = [
            (
                r["timer_id"],
                bus.shard_of(r["elder_id"], shards),
                r["elder_id"],
                OFFLINE,
                now,
                Jsonb({"device_id": r["id"], "last_seen_ms": r["last_seen_ms"]}),
            )
            for r in await cur.fetchall()
        ]
        await cur.execute(_BACK, {"back": BACK, "limit": limit})
        back = [
            (
                f"{BACK}:{r['alert_id']}",
                bus.shard_of(r["elder_id"], shards),
                r["elder_id"],
                BACK,
                now,
                Jsonb(
                    {
                        "alert_id": r["alert_id"],
                        "device_id": r["device_id"],
                        "last_seen_ms": r["last_seen_ms"],
                    }
                ),
            )
            for r in await cur.fetchall()
        ]
        if silent or back:
            await cur.executemany(_ARM, silent + back)
    return Swept(len(silent), len(back))
