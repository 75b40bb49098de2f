-- Geofence zones (防走失) per elder: a circle (centre + radius in metres) or a polygon
-- ([[lat, lon], ...], at least 3 points). An elder at risk of wandering (care profile
-- 'cognitive') without a row here gets a default circle around home, radius from the
-- profile (geofence_home_radius_m); defining a zone enables the check for any elder.
CREATE TABLE geofence_zones (
    id          bigserial PRIMARY KEY,
    elder_id    text NOT NULL REFERENCES elders(id) ON DELETE CASCADE,
    name        text NOT NULL,
    centre_lat  double precision CHECK (centre_lat BETWEEN -90 AND 90),
    centre_lon  double precision CHECK (centre_lon BETWEEN -180 AND 180),
    radius_m    double precision CHECK (radius_m > 0),
    polygon     jsonb,
    CHECK (
        (centre_lat IS NOT NULL AND centre_lon IS NOT NULL AND radius_m IS NOT NULL
            AND polygon IS NULL)
        OR (centre_lat IS NULL AND centre_lon IS NULL AND radius_m IS NULL
            AND jsonb_typeof(polygon) = 'array' AND jsonb_array_length(polygon) >= 3)
    )
);
CREATE INDEX geofence_zones_elder ON geofence_zones (elder_id);
