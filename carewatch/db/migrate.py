"""Apply the project's SQL migrations in order, once each, inside one transaction each.

The telemetry table is a TimescaleDB hypertable when the extension can be created and
a natively range-partitioned table otherwise. Both have the same name and columns, so
everything above this module uses one code path.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Literal

import psycopg

log = logging.getLogger(__name__)

TelemetryBackend = Literal["timescaledb", "native"]
_PLACEHOLDER = "{{TELEMETRY_PARTITION_CLAUSE}}"

NATIVE_PARTITION_FUNCTION = """
CREATE OR REPLACE FUNCTION telemetry_ensure_partitions(days_back int, days_ahead int)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    d date;
    created int := 0;
    part text;
BEGIN
    FOR d IN SELECT generate_series(current_date - days_back, current_date + days_ahead, '1 day')::date LOOP
        part := 'telemetry_' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF telemetry FOR VALUES FROM (%L) TO (%L)',
                               part, d::timestamptz, (d + 1)::timestamptz);
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                -- rows for that day already sit in the default partition: keep them there
                RAISE NOTICE 'partition % skipped: default partition holds its rows', part;
            END;
        END IF;
    END LOOP;
    RETURN created;
END $$;
"""


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("carewatch.db") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def timescaledb_available(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def telemetry_backend(conn: psycopg.Connection) -> TelemetryBackend:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return "timescaledb" if row else "native"


def _apply_telemetry(conn: psycopg.Connection, sql: str) -> None:
    backend: TelemetryBackend = "native"
    if timescaledb_available(conn):
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            backend = "timescaledb"
        except psycopg.Error as exc:  # e.g. not in shared_preload_libraries
            log.warning("timescaledb present but unusable, using native partitions: %s", exc)
    if backend == "timescaledb":
        conn.execute(sql.replace(_PLACEHOLDER, ""))
        conn.execute(
            "SELECT create_hypertable('telemetry', 'ts', chunk_time_interval => interval '1 day')"
        )
        conn.execute(
            "ALTER TABLE telemetry SET (timescaledb.compress, timescaledb.compress_segmentby = 'device_id')"
        )
        conn.execute("SELECT add_compression_policy('telemetry', interval '7 days')")
        conn.execute("SELECT add_retention_policy('telemetry', interval '400 days')")
    else:
        conn.execute(sql.replace(_PLACEHOLDER, "PARTITION BY RANGE (ts)"))
        conn.execute("CREATE TABLE telemetry_default PARTITION OF telemetry DEFAULT")
        conn.execute(NATIVE_PARTITION_FUNCTION)
        conn.execute("SELECT telemetry_ensure_partitions(7, 7)")
    log.info("telemetry backend: %s", backend)


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the names applied."""
    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # one migrator at a time, even if several workers start together
        conn.execute("SELECT pg_advisory_lock(74201)")
        try:
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in _migrations():
                if version in done:
                    continue
                with conn.transaction():
                    if _PLACEHOLDER in sql:
                        _apply_telemetry(conn, sql)
                    else:
                        conn.execute(sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (version, name),
                    )
                applied.append(name)
                log.info("migration applied: %s", name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(74201)")
    return applied


def ensure_database(dsn: str) -> bool:
    """Create the database named in `dsn` if it does not exist. True when created."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    name = str(info.get("dbname") or "")
    if not name:
        return False
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return True
