"""`carewatch eval export`: fall alarms' windows, kept and written with their outcome.

Real PostgreSQL: alerts and telemetry rows as the rules engine and ingest write them.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest

from carewatch.settings import Settings
from evaluation.fall_export import cli_main, export
from evaluation.loaders import Trial, load_trials

T0 = 1_764_000_000_000
HZ = 50


def at(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def seed(conn: psycopg.Connection[object]) -> None:
    conn.execute(
        "INSERT INTO grids (id, name, district, street) VALUES ('G1', '网格一', '渝中区', '解放碑街道')"
    )
    for elder in ("E1", "E2"):
        conn.execute(
            "INSERT INTO elders (id, name, district, street, lat, lon, grid_id)"
            " VALUES (%s, '张大爷', '渝中区', '解放碑街道', 29.56, 106.57, 'G1')",
            (elder,),
        )


def band_windows(
    conn: psycopg.Connection[object], device: str, elder: str, start_ms: int, seconds: int
) -> None:
    """One 1 s accelerometer window per second, plus a heart-rate row without accel."""
    for k in range(seconds):
        x = [round(-1.0 + 0.001 * i, 4) for i in range(HZ)]
        data = {"accel": {"hz": float(HZ), "x": x, "y": [0.0] * HZ, "z": [0.5] * HZ}}
        conn.execute(
            "INSERT INTO telemetry (ts, device_id, elder_id, seq, data) VALUES (%s, %s, %s, %s, %s)",
            (at(start_ms + k * 1000), device, elder, k, json.dumps(data)),
        )
    conn.execute(
        "INSERT INTO telemetry (ts, device_id, elder_id, seq, data) VALUES (%s, %s, %s, %s, %s)",
        (at(start_ms + 500), device, elder, 10_000, json.dumps({"hr": 80})),
    )


def fall_alert(
    conn: psycopg.Connection[object],
    elder: str,
    device: str,
    at_ms: int,
    status: str,
    source: str = "accel",
) -> str:
    """A fall alert as the engine writes it: the accelerometer detector's (its impact in
    the accel source) or a device flag's (the alert's device time only)."""
    alert_id = str(uuid.uuid4())
    entry: dict[str, object] = {"device_id": device}
    if source == "accel":
        entry["impact_ms"] = at_ms
    details = {"sources": {source: entry}}
    conn.execute(
        "INSERT INTO alerts (id, elder_id, device_id, kind, severity, status, source_event_id,"
        " device_time, rule, details) VALUES (%s, %s, %s, 'fall', 'critical', %s, %s, %s,"
        " %s, %s)",
        (
            alert_id,
            elder,
            device,
            status,
            f"{device}:{at_ms}",
            at(at_ms + 3_000 if source == "accel" else at_ms),
            "fall.accel" if source == "accel" else "fall.device_flag",
            json.dumps(details),
        ),
    )
    return alert_id


def test_export_keeps_the_windows_and_writes_them_with_their_outcome(
    db_dsn: str, tmp_path: Path
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        seed(conn)
        band_windows(conn, "W1", "E1", T0, 40)
        band_windows(conn, "W2", "E2", T0, 40)
        confirmed = fall_alert(conn, "E1", "W1", T0 + 20_000, "resolved")
        wrong = fall_alert(conn, "E2", "W2", T0 + 15_000, "false_alarm")
        fall_alert(conn, "E1", "W1", T0 + 35_000, "pending")  # no outcome yet
        # A fall only the band flagged, the detector silent: its miss, kept the same way.
        missed = fall_alert(conn, "E2", "W2", T0 + 30_000, "resolved", "wristband_flag")
        # A radar's flag: no accelerometer there, nothing to keep.
        fall_alert(conn, "E1", "R1", T0 + 5_000, "false_alarm", "radar_flag")

        first = io.StringIO()
        summary = export(conn, first, since=None, cancelled=True)
        assert summary.kept == 4  # the pending one is kept too, for a later export
        assert {k: n for k, n in summary.exported.items() if n} == {
            "alarm_confirmed": 1,
            "alarm_false_alarm": 1,
            "flag_confirmed": 1,
        }
        # Telemetry retention removes the raw rows: the kept windows remain.
        conn.execute("DELETE FROM telemetry")
        again = io.StringIO()
        assert export(conn, again, since=None, cancelled=True).kept == 0
        assert again.getvalue() == first.getvalue()

    path = tmp_path / "alarms.csv"
    path.write_text(first.getvalue())
    trials = {t.trial_id: t for t in load_trials(path) if isinstance(t, Trial)}
    assert set(trials) == {confirmed, wrong, missed}
    fall, adl, miss = trials[confirmed], trials[wrong], trials[missed]
    assert (fall.is_fall, fall.subject, fall.activity) == (True, "E1", "alarm_confirmed")
    assert fall.fall_ms == T0 + 20_000
    assert (adl.is_fall, adl.subject, adl.fall_ms) == (False, "E2", None)
    # the miss: a fall without the detector's impact; the harness takes its hardest hit
    assert (miss.is_fall, miss.activity, miss.fall_ms) == (True, "flag_confirmed", None)
    assert miss.start_ms == T0 + 20_000
    # 10 s before to 10 s after the impact, every second's window, at the band's rate
    assert fall.hz == HZ
    assert fall.start_ms == T0 + 10_000
    assert len(fall.xyz) == 21 * HZ
    np.testing.assert_allclose(fall.xyz[:HZ, 0], [-1.0 + 0.001 * i for i in range(HZ)])
    np.testing.assert_allclose(fall.xyz[:, 2], 0.5)


def test_cli_writes_gzip_and_can_leave_out_cancelled_alarms(
    db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        seed(conn)
        band_windows(conn, "W1", "E1", T0, 30)
        fall_alert(conn, "E1", "W1", T0 + 12_000, "cancelled")
    settings = Settings(_env_file=None, database_url=db_dsn)
    out = tmp_path / "alarms.csv.gz"
    args = argparse.Namespace(out=out, since=None, no_cancelled=True)
    assert cli_main(settings, args) == 0
    assert "0 alarm_confirmed, 0 alarm_false_alarm, 0 flag_confirmed" in capsys.readouterr().out
    with gzip.open(out, "rt") as fh:
        assert fh.read().splitlines() == [
            "trial,subject,label,activity,t_ms,ax_g,ay_g,az_g,fall_ms"
        ]
    args = argparse.Namespace(out=out, since="2020-01-01", no_cancelled=False)
    assert cli_main(settings, args) == 0
    [cancelled] = [t for t in load_trials(out) if isinstance(t, Trial)]
    assert (cancelled.is_fall, cancelled.activity) == (False, "alarm_cancelled")
