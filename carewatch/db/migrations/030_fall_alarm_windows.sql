-- The wrist accelerometer signal around each fall alarm raised by the accelerometer
-- detector, kept for retraining beyond the telemetry retention (`carewatch eval export`
-- copies it here from telemetry, then writes it with the alarm's outcome as a dev CSV).
CREATE TABLE fall_alarm_windows (
    alert_id   uuid PRIMARY KEY REFERENCES alerts(id) ON DELETE CASCADE,
    device_id  text NOT NULL,
    impact_ms  bigint NOT NULL,             -- device time of the alarm's impact
    windows    jsonb NOT NULL,              -- [{"ts_ms": .., "accel": {hz, x, y, z}}, ...]
    kept_at    timestamptz NOT NULL DEFAULT now()
);
