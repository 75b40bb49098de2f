-- Geofence zones get a stable external id, so the ledger import (`carewatch registry
-- import zones.csv`, registry/) updates and removes a zone instead of adding a copy of
-- it on every import. The id is chosen by the administrator in the zones file.
-- Zones inserted with SQL without one (the rows already here, and any added by hand
-- later) are given 'sql-<n>' from a sequence of their own: every zone stays nameable
-- in a zones file. The ledger refuses new ids with that prefix, so the two never meet.
ALTER TABLE geofence_zones ADD COLUMN zone_id text;
UPDATE geofence_zones SET zone_id = 'sql-' || id;
CREATE SEQUENCE geofence_zones_sql_zone_id OWNED BY geofence_zones.zone_id;
SELECT setval('geofence_zones_sql_zone_id', (SELECT coalesce(max(id), 0) + 1 FROM geofence_zones), false);
ALTER TABLE geofence_zones
    ALTER COLUMN zone_id SET DEFAULT ('sql-' || nextval('geofence_zones_sql_zone_id')),
    ALTER COLUMN zone_id SET NOT NULL,
    ADD CONSTRAINT geofence_zones_zone_id_key UNIQUE (zone_id);
