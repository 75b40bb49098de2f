"""`carewatch eval export OUT.csv[.gz]`: every fall alert's wrist signal with its outcome.

The feedback loop of the wrist fall detector. Each 'fall' alert has the elder's band
signal around it in the telemetry table, as the wristband sent it: around the impact for an
alarm the accelerometer detector raised (an "accel" source in the alert), around the
alert's device time for one only a band's or radar's own fall flag raised (the band's
windows, when it sent any: these are the detector's misses, or its correct silences). The
export

1. keeps it: copies the accelerometer windows from KEEP_BEFORE_MS before to KEEP_AFTER_MS
   after into `fall_alarm_windows` (once per alert), so the signal outlives the telemetry
   retention;
2. writes every kept alert whose outcome is known in the dev-CSV layout
   (`trial,subject,label,activity,t_ms,ax_g,ay_g,az_g,fall_ms`), which
   `carewatch eval falls` reads and `--train` trains on:

   - trial: the alert id; subject: the elder id (leave-one-subject-out leaves out elders);
   - label FALL, activity `<by>_confirmed`, for an alert a responder handled as a fall
     (resolved); fall_ms is the detector's impact when it raised the alert, else empty
     (the harness then takes the recording's hardest impact);
   - label ADL, activity `<by>_false_alarm`, for one a responder marked 误报;
   - label ADL, activity `<by>_cancelled`, for one cancelled on the device ("I'm OK") or
     by the engine (walked away normally). Someone who fell and is fine also presses
     "I'm OK": drop these rows (`--no-cancelled`) if the site's elders do that often;

   where `<by>` is `alarm` when the accelerometer detector raised the alert and `flag`
   when only a device's flag did.

Alerts still pending, open or acknowledged have no outcome yet and are left for a later
export; kept windows stay, so the next export finds them.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import psycopg

from carewatch.settings import Settings
from evaluation.loaders import DEV_COLUMNS, DEV_FALL_COLUMN

KEEP_BEFORE_MS = 10_000
KEEP_AFTER_MS = 10_000

OUTCOMES = {
    "resolved": ("FALL", "confirmed"),
    "false_alarm": ("ADL", "false_alarm"),
    "cancelled": ("ADL", "cancelled"),
}

KEEP_SQL = """
INSERT INTO fall_alarm_windows (alert_id, device_id, impact_ms, by_accel, windows)
SELECT a.id, a.device, a.impact_ms, a.by_accel,
       jsonb_agg(
           jsonb_build_object(
               'ts_ms', (extract(epoch FROM t.ts) * 1000)::bigint, 'accel', t.data -> 'accel'
           ) ORDER BY t.ts, t.seq
       )
FROM (
    SELECT id,
           COALESCE(details -> 'sources' -> 'accel' ->> 'device_id', device_id) AS device,
           COALESCE(
               (details -> 'sources' -> 'accel' ->> 'impact_ms')::bigint,
               (extract(epoch FROM device_time) * 1000)::bigint
           ) AS impact_ms,
           COALESCE(details -> 'sources' ? 'accel', false) AS by_accel
    FROM alerts
    WHERE kind = 'fall'
      AND NOT EXISTS (SELECT 1 FROM fall_alarm_windows w WHERE w.alert_id = alerts.id)
) a
JOIN telemetry t
  ON t.device_id = a.device
 AND t.ts >= to_timestamp((a.impact_ms - %(before)s) / 1000.0)
 AND t.ts <= to_timestamp((a.impact_ms + %(after)s) / 1000.0)
 AND t.data ? 'accel'
WHERE a.device IS NOT NULL
GROUP BY a.id, a.device, a.impact_ms, a.by_accel
ON CONFLICT (alert_id) DO NOTHING
"""

ROWS_SQL = """
SELECT w.alert_id::text, a.elder_id, a.status, w.impact_ms, w.by_accel, w.windows
FROM fall_alarm_windows w JOIN alerts a ON a.id = w.alert_id
WHERE a.status = ANY(%(statuses)s) AND (%(since)s::timestamptz IS NULL OR a.opened_at >= %(since)s)
ORDER BY a.opened_at, w.alert_id
"""


@dataclass(frozen=True)
class ExportSummary:
    kept: int  # alerts whose windows were copied now
    exported: dict[str, int]  # activity (who raised it, outcome) -> alerts written


def keep_windows(conn: psycopg.Connection[Any]) -> int:
    """Copy the windows of alerts not kept yet; returns how many alerts were copied."""
    cur = conn.execute(KEEP_SQL, {"before": KEEP_BEFORE_MS, "after": KEEP_AFTER_MS})
    return cur.rowcount


def samples(windows: list[dict[str, Any]]) -> Iterator[tuple[float, float, float, float]]:
    """(t_ms, x, y, z) of each sample of the kept windows, overlaps dropped."""
    last = float("-inf")
    for w in windows:
        accel = w.get("accel") or {}
        hz = float(accel.get("hz") or 0)
        xs, ys, zs = accel.get("x") or [], accel.get("y") or [], accel.get("z") or []
        if hz <= 0 or not (len(xs) == len(ys) == len(zs)):
            continue  # the detector rejected such a window too
        for k, (x, y, z) in enumerate(zip(xs, ys, zs, strict=True)):
            t = float(w["ts_ms"]) + k * 1000.0 / hz
            if t > last:
                last = t
                yield t, float(x), float(y), float(z)


def export(
    conn: psycopg.Connection[Any], out: IO[str], since: datetime | None, cancelled: bool
) -> ExportSummary:
    kept = keep_windows(conn)
    statuses = [s for s in OUTCOMES if cancelled or s != "cancelled"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*DEV_COLUMNS, DEV_FALL_COLUMN])
    exported = {f"{by}_{OUTCOMES[s][1]}": 0 for by in ("alarm", "flag") for s in statuses}
    for alert_id, elder_id, status, impact_ms, by_accel, windows in conn.execute(
        ROWS_SQL, {"statuses": statuses, "since": since}
    ):
        label, outcome = OUTCOMES[status]
        activity = f"{'alarm' if by_accel else 'flag'}_{outcome}"
        fall_ms = str(impact_ms) if label == "FALL" and by_accel else ""
        for t, x, y, z in samples(windows):
            writer.writerow([alert_id, elder_id, label, activity, f"{t:.1f}", x, y, z, fall_ms])
        exported[activity] += 1
    return ExportSummary(kept, exported)


def cli_main(settings: Settings, args: argparse.Namespace) -> int:
    out: Path = args.out
    since = datetime.fromisoformat(args.since) if getattr(args, "since", None) else None
    opener = gzip.open if out.name.endswith(".gz") else open
    try:
        with (
            psycopg.connect(settings.database_url, autocommit=True) as conn,
            opener(out, "wt", encoding="utf-8", newline="") as fh,
        ):
            summary = export(conn, fh, since, not getattr(args, "no_cancelled", False))
    except (psycopg.Error, OSError, ValueError) as exc:
        print(f"carewatch eval export: {exc}", file=sys.stderr)
        return 2
    shown = ", ".join(f"{n} {k}" for k, n in summary.exported.items())
    print(f"kept the windows of {summary.kept} new alert(s); wrote {out}: {shown}")
    return 0
