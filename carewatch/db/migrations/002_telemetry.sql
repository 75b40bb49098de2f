-- Telemetry store. One table name and one column set whatever the backend:
-- carewatch.db.migrate turns it into a TimescaleDB hypertable when the extension is
-- available, else into native daily range partitions (see 002 hook in migrate.py).
-- {{TELEMETRY_PARTITION_CLAUSE}} is replaced by the migrator.
CREATE TABLE telemetry (
    ts           timestamptz NOT NULL,          -- device time
    received_at  timestamptz NOT NULL DEFAULT now(),
    device_id    text NOT NULL,
    elder_id     text NOT NULL,
    seq          bigint NOT NULL,
    data         jsonb NOT NULL
) {{TELEMETRY_PARTITION_CLAUSE}};
CREATE INDEX telemetry_elder_ts ON telemetry (elder_id, ts DESC);
CREATE INDEX telemetry_device_ts ON telemetry (device_id, ts DESC);

-- Rejected input, kept for inspection (never silently dropped).
CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    device_id    text,
    reason       text NOT NULL,
    detail       text NOT NULL,
    payload      bytea NOT NULL
);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at DESC);
