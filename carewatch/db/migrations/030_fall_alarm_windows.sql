-- The wrist accelerometer signal around each fall alert, kept for retraining beyond the
-- telemetry retention (`carewatch eval export` copies it here from telemetry, then writes
-- it with the alert's outcome as a dev CSV). Alerts the accelerometer detector raised, and
-- alerts only a band's or radar's flag raised (the detector's misses, when confirmed).
CREATE TABLE fall_alarm_windows (
    alert_id   uuid PRIMARY KEY REFERENCES alerts(id) ON DELETE CASCADE,
    device_id  text NOT NULL,
    impact_ms  bigint NOT NULL,             -- the detector's impact, else the alert's device time
    by_accel   boolean NOT NULL,            -- the accelerometer detector raised it (too)
    windows    jsonb NOT NULL,              -- [{"ts_ms": .., "accel": {hz, x, y, z}}, ...]
    kept_at    timestamptz NOT NULL DEFAULT now()
);
