"""Synthetic activity for the visit-list tests: a stable elder and one whose activity
declines over three weeks, as daily figures (pure tests) or telemetry rows (server tests).

Stable: 4,000 steps, 30 motion reports and 12 water readings a day, +-10 % by weekday.
Declining: the same until three weeks before today, then falling linearly to 40 % of it
on the last day (the simulator's `decline` injection falls the same way, to 40 %).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import psycopg

from visits.decline import DayActivity

CHINA = timezone(timedelta(hours=8))
DAYS = 36
BASE = {"steps": 4000.0, "motion": 30.0, "water": 12.0}
DECLINE_DAYS = 21
FLOOR = 0.4


def level(days_ago: int, declining: bool) -> float:
    """Share of the usual activity `days_ago` days before today (1 = yesterday)."""
    wobble = 1.0 + 0.1 * ((days_ago % 7) - 3) / 3
    if not declining or days_ago > DECLINE_DAYS:
        return wobble
    progress = (DECLINE_DAYS - days_ago + 1) / DECLINE_DAYS  # 1/21 .. 1 yesterday
    return wobble * (1.0 - (1.0 - FLOOR) * progress)


def activity(
    today: date, declining: bool, skip: frozenset[int] = frozenset()
) -> dict[date, DayActivity]:
    """DAYS days before today; days_ago in `skip` have no data at all."""
    found = {}
    for ago in range(1, DAYS + 1):
        if ago in skip:
            continue
        share = level(ago, declining)
        found[today - timedelta(days=ago)] = DayActivity(
            steps=round(BASE["steps"] * share),
            motion=round(BASE["motion"] * share),
            water=round(BASE["water"] * share),
        )
    return found


def insert_telemetry(conn: psycopg.Connection, elder_id: str, today: date, declining: bool) -> None:
    """The same days as telemetry: per day one step-counter reading at 20:00 (China time),
    that many motion reports and water readings with flow, spread over 08:00-20:00."""
    rows = []
    seq = 0
    for day, figures in activity(today, declining).items():
        noon = datetime(day.year, day.month, day.day, 8, tzinfo=CHINA)
        seq += 1
        rows.append(
            (
                noon + timedelta(hours=12),
                f"W-{elder_id}",
                elder_id,
                seq,
                f'{{"steps": {int(figures.steps or 0)}}}',
            )
        )
        for n in range(int(figures.motion or 0)):
            seq += 1
            at = noon + timedelta(minutes=20 * n)
            rows.append((at, f"P-{elder_id}", elder_id, seq, '{"motion": true}'))
        for n in range(int(figures.water or 0)):
            seq += 1
            at = noon + timedelta(minutes=50 * n + 7)
            rows.append((at, f"M-{elder_id}", elder_id, seq, '{"water_flow": 3.5}'))
    with (
        conn.cursor() as cur,
        cur.copy("COPY telemetry (ts, device_id, elder_id, seq, data) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
