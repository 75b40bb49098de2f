-- Ingest updates last_seen (and last_seq, battery, online) of every device it hears from,
-- one row per device per batch: at a minute's telemetry per wristband that is every row
-- of the table once a minute. The index on last_seen (010) made each of those updates
-- write all three indexes; without an index on the changed columns, and with room left
-- on each page, PostgreSQL updates the row in place (a HOT update) and no index at all.
-- The once-a-minute silence sweep reads the table instead: its threshold depends on each
-- elder's care profile, so the index could not bound that scan anyway.
-- (bench.ingest_throughput: the drain's device updates were ~1/4 of its wall time.)
DROP INDEX IF EXISTS devices_wristband_last_seen;
-- fillfactor applies to pages written from now on (an existing table gets it as rows
-- move, or at once with VACUUM FULL devices in a quiet hour).
ALTER TABLE devices SET (fillfactor = 50);
