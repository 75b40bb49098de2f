-- The read-only role Grafana's PostgreSQL datasource logs in with. Run after every
-- `carewatch db migrate` (idempotent), as the owner of the tables, with the password in
-- the environment (not on the command line):
--   GRAFANA_PG_PASSWORD=... psql "$DATABASE_URL" -v reader=grafana_reader -f grafana-reader.sql
-- It may read exactly what the dashboards show: no phone numbers, addresses, contact
-- details or notification contents (column grants), and no telemetry.
\set ON_ERROR_STOP on
\getenv pw GRAFANA_PG_PASSWORD
\if :{?pw}
\else
  DO $$ BEGIN RAISE EXCEPTION 'GRAFANA_PG_PASSWORD is not set'; END $$;
\endif
SELECT format('CREATE ROLE %I LOGIN', :'reader')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'reader') \gexec
ALTER ROLE :"reader" LOGIN PASSWORD :'pw';
ALTER ROLE :"reader" SET statement_timeout = '30s';
ALTER ROLE :"reader" SET default_transaction_read_only = on;
GRANT USAGE ON SCHEMA public TO :"reader";
GRANT SELECT ON grids, stations, devices TO :"reader";
GRANT SELECT (id, elder_id, kind, severity, status, opened_at, confirmed_at, acknowledged_at,
              closed_at) ON alerts TO :"reader";
GRANT SELECT (id, name, district, street, lat, lon, grid_id) ON elders TO :"reader";
GRANT SELECT (alert_id, step, purpose, channel, recipient_kind, status, created_at)
    ON notifications TO :"reader";
